"""MMSEGMENTATION trains through OpenMMLab's mmsegmentation where the host has it (the 'openmmlab' extra and mmcv
built with its operators); elsewhere it is refused at submit saying what is missing and how to get it. CI has no
OpenMMLab, so the training tests run only on a host that has it (README's OpenMMLab section builds one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from geotrain.errors import ParameterError
from geotrain.task import catalog
from geotrain.task.params import parse
from tests.conftest import in_share_json
from tests.exports import ExportSpec, write_classified_tiles
from tests.integration.test_train_shapes import _train

MISSING = catalog.openmmlab_missing("mmseg")
FORM = {"in_folder": "/fileShares/c/mm", "output_name": in_share_json("mm"), "model_type": "MMSEGMENTATION"}


@pytest.mark.skipif(MISSING is None, reason="this host has OpenMMLab: MMSEGMENTATION trains here")
def test_without_openmmlab_mmsegmentation_is_refused_naming_what_is_missing_and_the_extra() -> None:
    with pytest.raises(ParameterError) as caught:
        parse(FORM)
    text = " ".join(caught.value.details)
    assert caught.value.param == "model_type" and str(MISSING) in text
    assert "'openmmlab' extra" in text and "C++20" in text and "UNET" in text


@pytest.mark.skipif(MISSING is not None, reason=f"OpenMMLab is not installed here: {MISSING}")
@pytest.mark.parametrize(
    ("model", "backbone"),
    [("deeplabv3", "RESNET18"), ("pspnet", "RESNET34"), ("upernet", "RESNET18"), ("deeplabv3plus", "RESNET18")],
)
def test_mmsegmentation_trains_an_openmmlab_model_and_its_package_rebuilds_it(
    tmp_path: Path, model: str, backbone: str
) -> None:
    write_classified_tiles(tmp_path / "chips" / "mm", ExportSpec(chips=6, size=64, bands=4, values=(1, 3)))
    emd, messages = _train(
        tmp_path,
        {**FORM, "backbone_model": backbone, "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "arguments": json.dumps({"model": model})},
        check_packages=True,
    )  # fmt: skip
    params = emd["ModelParameters"]
    assert params["model"] == model and params["mmseg_model"]["backbone"]["depth"] == int(backbone[6:])
    assert params["mmseg_model"]["backbone"]["in_channels"] == 4 and emd["ExtractBands"] == [0, 1, 2, 3]
    assert any(m.startswith(f"mmsegmentation's {model} on {backbone.lower()}") for m in messages)
    assert any(m.startswith("Checked the package") for m in messages)


@pytest.mark.skipif(MISSING is not None, reason=f"OpenMMLab is not installed here: {MISSING}")
def test_an_mmsegmentation_model_name_it_does_not_ship_is_refused_listing_those_it_does() -> None:
    with pytest.raises(ParameterError) as caught:
        parse({**FORM, "arguments": '{"model": "nosuchnet"}'})
    assert "deeplabv3" in " ".join(caught.value.details) and caught.value.param == "arguments"


DET_MISSING = catalog.openmmlab_missing("mmdet")
DET_FORM = {"in_folder": "/fileShares/c/voc", "output_name": in_share_json("mmdet"), "model_type": "MMDETECTION"}


@pytest.mark.skipif(DET_MISSING is None, reason="this host has OpenMMLab: MMDETECTION trains here")
def test_without_openmmlab_mmdetection_is_refused_naming_what_is_missing_and_the_extra() -> None:
    with pytest.raises(ParameterError) as caught:
        parse(DET_FORM)
    text = " ".join(caught.value.details)
    assert caught.value.param == "model_type" and str(DET_MISSING) in text and "mmdet 3.3.0" in text
    assert "'openmmlab' extra" in text and "C++20" in text and "FASTERRCNN" in text


@pytest.mark.skipif(DET_MISSING is not None, reason=f"OpenMMLab is not installed here: {DET_MISSING}")
@pytest.mark.parametrize(
    ("model", "backbone"), [("cascade_rcnn", "RESNET18"), ("atss", "RESNET34"), ("fcos", "RESNET18")]
)
def test_mmdetection_trains_an_openmmlab_detector_and_its_package_rebuilds_it(
    tmp_path: Path, model: str, backbone: str
) -> None:
    from tests import formats

    formats.pascal_voc(tmp_path / "chips" / "voc", chips=6, size=48)
    emd, messages = _train(
        tmp_path,
        {**DET_FORM, "backbone_model": backbone, "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "monitor": "AVERAGE_PRECISION", "validation_percent": "34", "arguments": json.dumps({"model": model})},
        check_packages=True,
    )  # fmt: skip
    params = emd["ModelParameters"]
    assert (emd["ModelType"], emd["ModelName"], params["model"]) == ("ObjectDetection", "MMDetection", model)
    config = params["mmdet_model"]
    assert config["backbone"]["depth"] == int(backbone[6:]) and config["backbone"]["in_channels"] == 3
    assert emd["InferenceFunction"] == "GeotrainObjectDetector.py" and set(emd["average_precision_score"]) == {
        "Palm", "Pine", "Oak"
    }  # fmt: skip
    assert any(m.startswith(f"mmdet's {model} on {backbone.lower()}") for m in messages)
    assert any(m.startswith("Epoch 1/1: train_loss") and "average_precision" in m for m in messages)
    assert any(m.startswith("Checked the package") for m in messages)


@pytest.mark.skipif(DET_MISSING is not None, reason=f"OpenMMLab is not installed here: {DET_MISSING}")
@pytest.mark.parametrize("model", ["nosuchnet", "/fileShares/c/voc/evil_config.py", "hrnet"])
def test_an_mmdetection_model_geotrain_does_not_offer_or_a_config_path_is_refused_listing_the_names(
    model: str,
) -> None:
    with pytest.raises(ParameterError) as caught:
        parse({**DET_FORM, "arguments": json.dumps({"model": model})})
    text = " ".join(caught.value.details)
    assert caught.value.param == "arguments" and "cascade_rcnn" in text and "atss" in text


@pytest.mark.skipif(DET_MISSING is not None, reason=f"OpenMMLab is not installed here: {DET_MISSING}")
def test_fine_tuning_an_mmdetection_package_keeps_its_model_and_refuses_another(tmp_path: Path) -> None:
    from tests import formats

    formats.pascal_voc(tmp_path / "chips" / "voc", chips=6, size=48)
    form = {**DET_FORM, "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2"}
    _train(tmp_path, {**form, "arguments": json.dumps({"model": "fsaf"})})
    package = "/fileShares/geotrain/models/mmdet/mmdet.dlpk"
    tuned = {**form, "backbone_model": "", "output_name": in_share_json("tuned"),
             "pretrained_model": json.dumps({"uri": package})}  # fmt: skip
    emd, messages = _train(tmp_path, tuned)  # neither model nor backbone given: the package's
    assert emd["ModelParameters"]["model"] == "fsaf" and emd["ModelParameters"]["backbone"] == "resnet18"
    (loaded,) = [m for m in messages if m.startswith(f"Fine-tuning from '{package}'")]
    match = re.search(r"(\d+) of (\d+) weight tensors loaded\.$", loaded)
    assert match is not None and match.group(1) == match.group(2), loaded
    with pytest.raises(ParameterError) as caught:
        _train(tmp_path, {**tuned, "arguments": json.dumps({"model": "atss"})})
    assert caught.value.param == "arguments" and "'fsaf'" in " ".join(caught.value.details)
