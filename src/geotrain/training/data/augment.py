"""CUSTOM and FILE augmentation applied to samples: geometry moves the image and its target together
(a label raster, boxes, or nothing for a chip-level class); brightness and contrast touch the image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode

from geotrain.task.augmentation import Augmentation

Target: TypeAlias = tv_tensors.Mask | tv_tensors.BoundingBoxes | None


def _chance(p: float) -> bool:
    return p >= 1 or (p > 0 and float(torch.rand(())) < p)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def crop_origin(rows: int, cols: int, size: int, random: bool) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop: anywhere when ``random`` (training), else the centre."""
    if random:
        return int(torch.randint(0, max(rows - size, 0) + 1, ())), int(torch.randint(0, max(cols - size, 0) + 1, ()))
    return max(rows - size, 0) // 2, max(cols - size, 0) // 2


def _transpose(x: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    x = x.transpose(-1, -2)
    if isinstance(target, tv_tensors.BoundingBoxes):
        target = tv_tensors.wrap(target[:, [1, 0, 3, 2]], like=target)
    elif target is not None:
        target = tv_tensors.wrap(target.transpose(-1, -2), like=target)
    return x, target


def _flip(x: torch.Tensor, target: Target, vertical: bool) -> tuple[torch.Tensor, Target]:
    flip = TF.vertical_flip if vertical else TF.horizontal_flip
    return flip(x), (flip(target) if target is not None else None)


class Augmenter:
    """The transforms a request named, each with its probability: crop position, flips, dihedral turns,
    rotation and zoom on image and target alike (nearest neighbour for a label raster, the enclosing box
    for boxes), then brightness and contrast on the image, in the band's own units (``band_min``..``band_max``)."""

    def __init__(self, augmentations: Sequence[Augmentation], band_min: list[float], band_max: list[float]) -> None:
        self.by_name = {a.name: a for a in augmentations}
        self.band_span = (np.array(band_max, np.float32) - np.array(band_min, np.float32))[:, None, None]

    def crop_offset(self, rows: int, cols: int, size: int) -> tuple[int, int] | None:
        crop = self.by_name.get("crop")
        if crop is None or not _chance(crop.p):
            return None
        top = round(_uniform(*crop.row_pct) * max(rows - size, 0))
        left = round(_uniform(*crop.col_pct) * max(cols - size, 0))
        return top, left

    def pixels(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An image and its label raster (rows x cols), or its instance masks (instances x rows x cols)."""
        stacked = label[None] if label.ndim == 2 else label
        if stacked.shape[0] == 0:  # no instance on this chip: the image alone
            return self.image(image), label
        out, moved = self._apply(image, tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(stacked))))
        assert moved is not None
        return out, moved.numpy().reshape(label.shape)

    def boxes(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An image and its boxes (n x 4, xmin ymin xmax ymax in pixels), clipped to the chip; the caller
        drops boxes that shrank to nothing."""
        wrapped = tv_tensors.BoundingBoxes(
            torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            format=tv_tensors.BoundingBoxFormat.XYXY,
            canvas_size=(image.shape[1], image.shape[2]),
        )
        out, moved = self._apply(image, wrapped)
        assert isinstance(moved, tv_tensors.BoundingBoxes)
        return out, TF.clamp_bounding_boxes(moved).numpy()

    def image(self, image: np.ndarray) -> np.ndarray:
        """An image whose class does not move with it."""
        return self._apply(image, None)[0]

    def _apply(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        a = self.by_name
        if "flip_lr" in a and _chance(a["flip_lr"].p):
            x, target = _flip(x, target, vertical=False)
        if "dihedral_affine" in a and _chance(a["dihedral_affine"].p):
            # the eight symmetries of a square: transpose or not, then flip either axis or not
            draw = [bool(v) for v in torch.randint(0, 2, (3,))]
            if draw[0] and x.shape[-1] == x.shape[-2]:
                x, target = _transpose(x, target)
            if draw[1]:
                x, target = _flip(x, target, vertical=False)
            if draw[2]:
                x, target = _flip(x, target, vertical=True)
        angle = _uniform(a["rotate"].low, a["rotate"].high) if "rotate" in a and _chance(a["rotate"].p) else 0.0
        scale = _uniform(a["zoom"].low, a["zoom"].high) if "zoom" in a and _chance(a["zoom"].p) else 1.0
        if angle or scale != 1.0:
            geometry = {"angle": angle, "translate": [0, 0], "scale": scale, "shear": [0.0, 0.0]}
            x = TF.affine(x, **geometry, interpolation=InterpolationMode.BILINEAR)
            if target is not None:
                target = TF.affine(target, **geometry, interpolation=InterpolationMode.NEAREST)
        out = x.numpy()
        if "brightness" in a and _chance(a["brightness"].p):
            out = out + (_uniform(a["brightness"].low, a["brightness"].high) - 0.5) * self.band_span
        if "contrast" in a and _chance(a["contrast"].p):
            mean = out.mean(axis=(1, 2), keepdims=True)
            out = mean + (out - mean) * _uniform(a["contrast"].low, a["contrast"].high)
        return out, target
