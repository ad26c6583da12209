"""Parsing parameters the way ArcGIS clients encode them."""

from __future__ import annotations

import pytest

from geotrain.errors import ParameterError
from geotrain.task.params import parse

BASE = {"in_folder": "/fileShares/a/b", "output_name": '{"name": "m"}', "model_type": "UNET"}


def test_empty_strings_take_the_documented_defaults() -> None:
    p = parse(
        {
            **BASE,
            **{k: "" for k in ("batch_size", "max_epochs", "learning_rate", "validation_percent", "stop_training")},
        }
    )
    assert (p.batch_size, p.max_epochs, p.learning_rate, p.validation_percent, p.stop_training) == (
        2,
        20,
        None,
        10.0,
        True,
    )
    assert p.freeze_model is True and p.overwrite_model is False and p.backbone == "RESNET34"
    assert p.data_augmentation == "DEFAULT" and p.monitor == "VALID_LOSS" and p.weight_init_scheme == "RANDOM"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("STOP_TRAINING", True),
        ("CONTINUE_TRAINING", False),
    ],
)
def test_booleans_in_any_case_and_pro_keywords(text: str, value: bool) -> None:
    assert parse({**BASE, "stop_training": text}).stop_training is value


def test_arguments_as_json_strings_of_python_literals() -> None:
    p = parse(
        {**BASE, "arguments": '{"class_balancing": "True", "ignore_classes": "[3, 7]", "dice_loss_fraction": "0.3"}'}
    )
    assert p.arguments == {"class_balancing": True, "ignore_classes": [3, 7], "dice_loss_fraction": 0.3}


def test_arguments_as_pro_value_table() -> None:
    p = parse({**BASE, "arguments": "class_balancing 'True';dice_loss_average micro;chip_size 16"})
    assert p.arguments == {"class_balancing": True, "dice_loss_average": "micro", "chip_size": 16}
    assert p.chip_size == 16  # Pro passes chip_size as an argument


def test_monitor_argument_maps_to_the_keyword() -> None:
    assert parse({**BASE, "arguments": '{"monitor": "valid_miou"}'}).monitor == "MIOU"


@pytest.mark.parametrize(
    "folder", ["/fileShares/a/b", '{"uri": "/fileShares/a/b"}', "/fileShares/a/b, /fileShares/a/c"]
)
def test_in_folder_forms(folder: str) -> None:
    assert parse({**BASE, "in_folder": folder}).in_folder[0] == "/fileShares/a/b"


@pytest.mark.parametrize(
    ("text", "name", "uri"),
    [
        ('{"name": "bldg"}', "bldg", None),
        ('{"name": "bldg", "folderId": "abc"}', "bldg", None),
        ('{"serviceProperties": {"name": "svc"}, "itemProperties": {"itemId": "1"}}', "svc", None),
        ('{"uri": "/fileShares/s/models"}', None, "/fileShares/s/models"),
        ("/fileShares/s/models/x", None, "/fileShares/s/models/x"),
        ("plain_name", "plain_name", None),
    ],
)
def test_output_name_forms(text: str, name: str | None, uri: str | None) -> None:
    out = parse({**BASE, "output_name": text}).output_name
    assert (out.name, out.uri) == (name, uri)


def test_learning_rate_zero_means_find_it() -> None:
    assert parse({**BASE, "learning_rate": "0"}).learning_rate is None
    assert parse({**BASE, "learning_rate": "0.001"}).learning_rate == 0.001


def test_model_type_keyword_is_case_insensitive() -> None:
    assert parse({**BASE, "model_type": "unet"}).model_type == "UNET"


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(ParameterError) as caught:
        parse({**BASE, "batch_size": "x", "max_epochs": "y"})
    details = " ".join(caught.value.details)
    assert "'batch_size'" in details and "'max_epochs'" in details
