"""CUSTOM augmentation (``augmentation_parameters``) applied to segmentation samples."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from geotrain.task.augmentation import Augmentation


def _chance(p: float) -> bool:
    return p >= 1 or (p > 0 and float(torch.rand(())) < p)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def crop_origin(rows: int, cols: int, size: int, random: bool) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop: anywhere when ``random`` (training), else the centre."""
    if random:
        return int(torch.randint(0, max(rows - size, 0) + 1, ())), int(torch.randint(0, max(cols - size, 0) + 1, ()))
    return max(rows - size, 0) // 2, max(cols - size, 0) // 2


class SegmentationAugmenter:
    """The transforms a request named, each with its probability: crop position, flips, dihedral turns,
    rotation and zoom on image and label alike (nearest neighbour for the label), then brightness and
    contrast on the image, in the band's own units (``band_min``..``band_max``)."""

    def __init__(self, augmentations: list[Augmentation], band_min: list[float], band_max: list[float]) -> None:
        self.by_name = {a.name: a for a in augmentations}
        self.band_span = (np.array(band_max, np.float32) - np.array(band_min, np.float32))[:, None, None]

    def crop_offset(self, rows: int, cols: int, size: int) -> tuple[int, int] | None:
        crop = self.by_name.get("crop")
        if crop is None or not _chance(crop.p):
            return None
        top = round(_uniform(*crop.row_pct) * max(rows - size, 0))
        left = round(_uniform(*crop.col_pct) * max(cols - size, 0))
        return top, left

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(label))[None]
        a = self.by_name
        if "flip_lr" in a and _chance(a["flip_lr"].p):
            x, y = x.flip(-1), y.flip(-1)
        if "dihedral_affine" in a and _chance(a["dihedral_affine"].p):
            k, flip = int(torch.randint(0, 4, ())), bool(torch.randint(0, 2, ()))
            if flip:
                x, y = x.flip(-1), y.flip(-1)
            if x.shape[-1] == x.shape[-2]:
                x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        angle = _uniform(a["rotate"].low, a["rotate"].high) if "rotate" in a and _chance(a["rotate"].p) else 0.0
        scale = _uniform(a["zoom"].low, a["zoom"].high) if "zoom" in a and _chance(a["zoom"].p) else 1.0
        if angle or scale != 1.0:
            geometry = {"angle": angle, "translate": [0, 0], "scale": scale, "shear": [0.0, 0.0]}
            x = TF.affine(x, **geometry, interpolation=InterpolationMode.BILINEAR)
            y = TF.affine(y, **geometry, interpolation=InterpolationMode.NEAREST)
        out = x.numpy()
        if "brightness" in a and _chance(a["brightness"].p):
            out = out + (_uniform(a["brightness"].low, a["brightness"].high) - 0.5) * self.band_span
        if "contrast" in a and _chance(a["contrast"].p):
            mean = out.mean(axis=(1, 2), keepdims=True)
            out = mean + (out - mean) * _uniform(a["contrast"].low, a["contrast"].high)
        return out, y[0].numpy()
