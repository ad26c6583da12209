"""The augmentation_parameters grammar, and what CUSTOM transforms do to a sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geotrain.task.augmentation import Augmentation, parse
from geotrain.training.data.augment import SegmentationAugmenter


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
    augment = SegmentationAugmenter(
        [Augmentation("rotate", 1.0, 20.0, 40.0), Augmentation("zoom", 1.0, 1.2, 1.3)], [0, 0], [511, 511]
    )
    out_image, out_label = augment(image, label)
    assert out_image.shape == image.shape and out_image.dtype == np.float32 and out_label.shape == label.shape
    assert set(np.unique(out_label).tolist()) <= {0, 1, 2} and not np.array_equal(out_label, label)


def test_flip_with_probability_one_mirrors_both() -> None:
    image, label = _sample()
    out_image, out_label = SegmentationAugmenter([Augmentation("flip_lr", 1.0)], [0, 0], [511, 511])(image, label)
    assert np.array_equal(out_label, label[:, ::-1]) and np.array_equal(out_image, image[:, :, ::-1].astype(np.float32))


def test_probability_zero_changes_nothing() -> None:
    image, label = _sample()
    augs = [Augmentation("rotate", 0.0, -30, 30), Augmentation("brightness", 0.0, 0.9, 1.0)]
    out_image, out_label = SegmentationAugmenter(augs, [0, 0], [511, 511])(image, label)
    assert np.array_equal(out_label, label) and np.array_equal(out_image, image.astype(np.float32))


def test_brightness_and_contrast_work_in_band_units() -> None:
    image, label = _sample()
    bright, _ = SegmentationAugmenter([Augmentation("brightness", 1.0, 1.0, 1.0)], [0, 0], [100, 100])(image, label)
    assert np.allclose(bright - image, 50.0)
    flat, _ = SegmentationAugmenter([Augmentation("contrast", 1.0, 0.0, 0.0)], [0, 0], [100, 100])(image, label)
    assert np.allclose(flat.std(axis=(1, 2)), 0.0)


def test_crop_position_follows_row_and_col_ranges() -> None:
    augment = SegmentationAugmenter(
        [Augmentation("crop", 1.0, size=8, row_pct=(1.0, 1.0), col_pct=(0.0, 0.0))], [0], [1]
    )
    assert augment.crop_offset(32, 32, 8) == (24, 0)
