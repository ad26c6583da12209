"""The augmentation_parameters grammar, transforms.json, and what CUSTOM or FILE transforms do to a sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geotrain.task.augmentation import Augmentation, parse, parse_transforms, read_transforms
from geotrain.training.data.augment import Augmenter


def test_documented_defaults_parse() -> None:
    augs = parse([["rotate", "30.0;0.5"], ["brightness", "(0.4,0.6);1.0"], ["contrast", "(0.75,1.5);1.0"],
                  ["zoom", "(1.0,1.2);1.0"], ["crop", "224;1.0;(0,1);(0,1)"]])  # fmt: skip
    by = {a.name: a for a in augs}
    assert (by["rotate"].low, by["rotate"].high, by["rotate"].p) == (-30.0, 30.0, 0.5)
    assert (by["brightness"].low, by["brightness"].high) == (0.4, 0.6)
    assert by["crop"].size == 224 and by["crop"].row_pct == (0.0, 1.0)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [([["spin", "1;1"]], "unknown transform"), ([["rotate", "30"]], "takes degrees;p"),
     ([["rotate", "30;2"]], "p must be"), ([["zoom", "(0,2);1"]], "above 0"),
     ([["crop", "7;1;(0,1);(0,1)"]], "at least 8"),
     ([["crop", "64;1;(0,2);(0,1)"]], "from 0 to 1"), (["rotate"], "[transform, settings]")],
)  # fmt: skip
def test_grammar_errors_say_what_is_wrong(pairs: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(pairs)


def _sample() -> tuple[np.ndarray, np.ndarray]:
    image = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    label = np.zeros((16, 16), np.uint8)
    label[2:8, 3:12] = 2
    label[10:14, 1:5] = 1
    return image, label


def test_geometry_moves_image_and_label_together_and_keeps_class_indices() -> None:
    torch.manual_seed(0)
    image, label = _sample()
    augment = Augmenter(
        [Augmentation("rotate", 1.0, 20.0, 40.0), Augmentation("zoom", 1.0, 1.2, 1.3)], [0, 0], [511, 511]
    )
    out_image, out_label = augment.pixels(image, label)
    assert out_image.shape == image.shape and out_image.dtype == np.float32 and out_label.shape == label.shape
    assert set(np.unique(out_label).tolist()) <= {0, 1, 2} and not np.array_equal(out_label, label)


def test_flip_with_probability_one_mirrors_both() -> None:
    image, label = _sample()
    out_image, out_label = Augmenter([Augmentation("flip_lr", 1.0)], [0, 0], [511, 511]).pixels(image, label)
    assert np.array_equal(out_label, label[:, ::-1]) and np.array_equal(out_image, image[:, :, ::-1].astype(np.float32))


def test_probability_zero_changes_nothing() -> None:
    image, label = _sample()
    augs = [Augmentation("rotate", 0.0, -30, 30), Augmentation("brightness", 0.0, 0.9, 1.0)]
    out_image, out_label = Augmenter(augs, [0, 0], [511, 511]).pixels(image, label)
    assert np.array_equal(out_label, label) and np.array_equal(out_image, image.astype(np.float32))


def test_brightness_and_contrast_work_in_band_units() -> None:
    image, label = _sample()
    bright, _ = Augmenter([Augmentation("brightness", 1.0, 1.0, 1.0)], [0, 0], [100, 100]).pixels(image, label)
    assert np.allclose(bright - image, 50.0)
    flat, _ = Augmenter([Augmentation("contrast", 1.0, 0.0, 0.0)], [0, 0], [100, 100]).pixels(image, label)
    assert np.allclose(flat.std(axis=(1, 2)), 0.0)


def test_crop_position_follows_row_and_col_ranges() -> None:
    augment = Augmenter([Augmentation("crop", 1.0, size=8, row_pct=(1.0, 1.0), col_pct=(0.0, 0.0))], [0], [1])
    assert augment.crop_offset(32, 32, 8) == (24, 0)


# the example Pro's documentation gives for transforms.json: ranges as "a, b" strings, p optional
PRO_EXAMPLE = {
    "Training": {
        "rotate": {"degrees": 30, "p": 0.5},
        "crop": {"size": 224, "p": 1, "row_pct": "0, 1", "col_pct": "0, 1"},
        "brightness": {"change": "0.4, 0.6"},
        "contrast": {"scale": "1.0, 1.5"},
        "zoom": {"scale": "1, 1.2"},
    },
    "Validation": {"crop": {"size": 224, "p": 1.0, "row_pct": 0.5, "col_pct": 0.5}},
}


def test_transforms_json_sections_become_training_and_validation_transforms() -> None:
    plan = parse_transforms(PRO_EXAMPLE)
    training = {a.name: a for a in plan.training}
    assert set(training) == {"rotate", "crop", "brightness", "contrast", "zoom"}
    assert (training["rotate"].low, training["rotate"].high, training["rotate"].p) == (-30.0, 30.0, 0.5)
    assert (training["brightness"].low, training["brightness"].high, training["brightness"].p) == (0.4, 0.6, 1.0)
    assert training["crop"].row_pct == (0.0, 1.0) and plan.crop_size == 224
    (valid,) = plan.validation
    assert valid.name == "crop" and valid.row_pct == (0.5, 0.5) and valid.col_pct == (0.5, 0.5)
    assert plan.source == "transforms.json"


def test_transforms_json_takes_lists_as_ranges_and_any_section_case() -> None:
    plan = parse_transforms({"training": {"zoom": {"scale": [1.1, 1.3], "p": 0.25}, "flip_lr": {}}})
    zoom, flip = plan.training
    assert (zoom.low, zoom.high, zoom.p) == (1.1, 1.3, 0.25) and (flip.name, flip.p) == ("flip_lr", 1.0)
    assert plan.validation == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "JSON object"),
        ({"Testing": {}}, "unknown section 'Testing'"),
        ({"Training": {"warp": {"magnitude": 0.2}}}, "Training: unknown transform 'warp'"),
        ({"Training": {"rotate": {"degrees": 30, "angle": 2}}}, "rotate has no argument angle; it takes degrees, p"),
        ({"Training": {"rotate": {"p": 0.5}}}, "rotate needs degrees"),
        ({"Training": {"rotate": {"degrees": True}}}, "must be a number"),
        ({"Training": {"zoom": {"scale": [1, 2, 3]}}}, "two numbers"),
        ({"Validation": {"rotate": {"degrees": 10, "p": 3}}}, "Validation: rotate: p must be"),
        (
            {"Training": {"crop": {"size": 64}}, "Validation": {"crop": {"size": 48}}},
            "crop sizes 48, 64 differ",
        ),
    ],
)
def test_transforms_json_errors_say_what_to_fix(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_transforms(document)


def test_transforms_json_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "transforms.json"
    path.write_text('{\n  "Training": {,}\n}')
    with pytest.raises(ValueError, match=r"not valid JSON .* line 2"):
        read_transforms(path)


def _box_sample() -> tuple[np.ndarray, np.ndarray]:
    """A bright rectangle on a dark square chip, and the box around it."""
    image = np.zeros((1, 32, 32), np.float32)
    image[0, 4:12, 6:26] = 100.0
    return image, np.array([[6.0, 4.0, 26.0, 12.0]], np.float32)


def _bright_box(image: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(image[0] > 50)
    return [float(cols.min()), float(rows.min()), float(cols.max()) + 1, float(rows.max()) + 1]


@pytest.mark.parametrize("name", ["flip_lr", "dihedral_affine"])
def test_flips_and_turns_move_boxes_with_the_image_exactly(name: str) -> None:
    torch.manual_seed(3)
    augment = Augmenter([Augmentation(name, 1.0)], [0], [100])
    for _ in range(12):  # dihedral draws one of eight symmetries each time
        image, boxes = augment.boxes(*_box_sample())
        assert boxes.tolist() == [_bright_box(image)]


def test_rotation_and_zoom_keep_the_object_inside_its_box() -> None:
    torch.manual_seed(0)
    augment = Augmenter([Augmentation("rotate", 1.0, 20.0, 20.0), Augmentation("zoom", 1.0, 1.2, 1.2)], [0], [100])
    image, boxes = augment.boxes(*_box_sample())
    x0, y0, x1, y1 = boxes[0]
    bx0, by0, bx1, by1 = _bright_box(image)
    assert x0 <= bx0 + 1 and y0 <= by0 + 1 and x1 >= bx1 - 1 and y1 >= by1 - 1  # encloses, give or take a pixel
    assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32  # clipped to the chip


def test_chip_level_transforms_change_only_the_image() -> None:
    image, _ = _box_sample()
    flipped = Augmenter([Augmentation("flip_lr", 1.0)], [0], [100]).image(image)
    assert np.array_equal(flipped, image[:, :, ::-1])
