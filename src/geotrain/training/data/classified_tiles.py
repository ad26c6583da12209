"""Classified_Tiles: image chips with single-band class-value label rasters, as segmentation samples."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from geotrain.training.data.chips import ChipReadError, read_chip, read_label
from geotrain.training.data.export import ChipItem, ExportInfo

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Normalization:
    """Per-band statistics; images become (x * scale - mean) / std."""

    scale: float
    mean: np.ndarray
    std: np.ndarray
    imagenet: bool
    band_min: list[float]
    band_max: list[float]

    def apply(self, image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32) * self.scale
        out: np.ndarray = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return out


@dataclass
class ScanResult:
    """What one pass over every chip found: readable samples, unreadable files, statistics."""

    items: list[ChipItem]
    bad: list[ChipReadError]
    images: list[np.ndarray] | None  # the chips in memory, when they fit
    labels: list[np.ndarray] | None
    dtype: np.dtype
    num_bands: int
    normalization: Normalization
    class_pixels: np.ndarray  # pixels per class index (0 = NoData)
    undeclared: set[int] = field(default_factory=set)  # label values that are not classes of the export


class ClassMap:
    """Class values of the export -> contiguous indices; index 0 is NoData/background (value 0)."""

    def __init__(self, values: Sequence[int]) -> None:
        self.values = [v for v in sorted(set(values)) if v != 0]
        size = max([0, *self.values]) + 1
        self.lut = np.zeros(max(size, 1), dtype=np.int64)
        for index, value in enumerate(self.values, start=1):
            self.lut[value] = index

    @property
    def num_classes(self) -> int:
        return len(self.values) + 1

    def encode(self, label: np.ndarray) -> np.ndarray:
        label = label.astype(np.int64, copy=False)
        inside = (label >= 0) & (label < len(self.lut))
        return np.where(inside, self.lut[np.clip(label, 0, len(self.lut) - 1)], 0)


def _memory_budget() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.25)
    except (ValueError, OSError):
        return 1 << 30


def scan(export: ExportInfo, class_map: ClassMap, on_progress: Callable[[int, int], None] | None = None) -> ScanResult:
    """Read every chip and label once: find unreadable files, gather statistics, keep them if they fit."""
    budget = _memory_budget()
    images: list[np.ndarray] | None = []
    labels: list[np.ndarray] | None = []
    good: list[ChipItem] = []
    bad: list[ChipReadError] = []
    used = 0
    sums: np.ndarray | None = None
    squares: np.ndarray | None = None
    mins: np.ndarray | None = None
    maxs: np.ndarray | None = None
    count = 0
    dtype: np.dtype | None = None
    pixels = np.zeros(class_map.num_classes, dtype=np.int64)
    undeclared: set[int] = set()
    declared = {0, *class_map.values}
    for n, item in enumerate(export.items):
        if on_progress is not None:
            on_progress(n + 1, len(export.items))
        try:
            image = read_chip(item.image)
            if item.label is None:
                raise ChipReadError(item.image, "it has no label raster")
            label = read_label(item.label)
        except ChipReadError as exc:
            bad.append(exc)
            continue
        if label.shape != image.shape[1:]:
            bad.append(ChipReadError(item.label, f"label size {label.shape} differs from chip size {image.shape[1:]}"))
            continue
        if sums is not None and image.shape[0] != len(sums):
            bad.append(ChipReadError(item.image, f"it has {image.shape[0]} bands, other chips {len(sums)}"))
            continue
        good.append(item)
        dtype = dtype or image.dtype
        flat = image.reshape(image.shape[0], -1).astype(np.float64)
        if sums is None:
            sums, squares = np.zeros(len(flat)), np.zeros(len(flat))
            mins, maxs = flat.min(axis=1), flat.max(axis=1)
        assert squares is not None and mins is not None and maxs is not None
        sums += flat.sum(axis=1)
        squares += (flat**2).sum(axis=1)
        mins, maxs = np.minimum(mins, flat.min(axis=1)), np.maximum(maxs, flat.max(axis=1))
        count += flat.shape[1]
        undeclared.update(int(v) for v in np.unique(label) if int(v) not in declared)
        encoded = class_map.encode(label)
        pixels += np.bincount(encoded.ravel(), minlength=class_map.num_classes)
        if images is not None and labels is not None:
            used += image.nbytes + encoded.nbytes
            if used > budget:
                images = labels = None  # too big to hold: the data set reads from disk instead
            else:
                images.append(image)
                labels.append(encoded.astype(np.uint8 if class_map.num_classes < 256 else np.int64))
    if not good or sums is None or squares is None or mins is None or maxs is None or dtype is None:
        return ScanResult([], bad, None, None, np.dtype("uint8"), export.num_bands or 0, _identity(1), pixels)
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    norm = _normalization(export, dtype, mean, std, mins, maxs)
    return ScanResult(good, bad, images, labels, dtype, len(sums), norm, pixels, undeclared)


def _identity(bands: int) -> Normalization:
    return Normalization(
        1.0, np.zeros(bands, np.float32), np.ones(bands, np.float32), False, [0.0] * bands, [1.0] * bands
    )


def _normalization(
    export: ExportInfo, dtype: np.dtype, mean: np.ndarray, std: np.ndarray, mins: np.ndarray, maxs: np.ndarray
) -> Normalization:
    bands = len(mean)
    if bands == 3 and dtype == np.uint8:
        # 8-bit RGB: ImageNet statistics, as arcgis.learn does, so pretrained backbones see what they know
        return Normalization(
            1 / 255, np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32), True,
            mins.tolist(), maxs.tolist(),
        )  # fmt: skip
    stats = export.band_stats
    if stats is not None and len(stats.mean) == bands and all(s > 0 for s in stats.std):
        mean, std = np.array(stats.mean), np.array(stats.std)
    return Normalization(
        1.0, mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32), False, mins.tolist(), maxs.tolist()
    )


class SegmentationChips(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples for training (random crop, flips and quarter turns) or validation (centre crop)."""

    def __init__(
        self,
        scanned: ScanResult,
        indices: Sequence[int],
        class_map: ClassMap,
        chip_size: int,
        train: bool,
        augment: bool,
        seed: int = 42,
    ) -> None:
        self.scanned = scanned
        self.indices = list(indices)
        self.class_map = class_map
        self.chip_size = chip_size
        self.train = train
        self.augment = augment and train
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.indices[i]
        if self.scanned.images is not None and self.scanned.labels is not None:
            return self.scanned.images[index], self.scanned.labels[index]
        item = self.scanned.items[index]
        assert item.label is not None
        return read_chip(item.image), self.class_map.encode(read_label(item.label))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.raw(i)
        image, label = self._crop(image, label)
        if self.augment:
            if self.rng.random() < 0.5:
                image, label = image[:, :, ::-1], label[:, ::-1]
            if self.rng.random() < 0.5:
                image, label = image[:, ::-1, :], label[::-1, :]
            turns = int(self.rng.integers(0, 4))
            if turns and image.shape[1] == image.shape[2]:
                image, label = np.rot90(image, turns, axes=(1, 2)), np.rot90(label, turns)
        x = self.scanned.normalization.apply(np.ascontiguousarray(image))
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

    def _crop(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.chip_size
        rows, cols = label.shape
        if rows < size or cols < size:
            pad = ((0, max(0, size - rows)), (0, max(0, size - cols)))
            image = np.pad(image, ((0, 0), *pad))
            label = np.pad(label, pad)
            rows, cols = label.shape
        if self.train and self.augment:
            top = int(self.rng.integers(0, rows - size + 1))
            left = int(self.rng.integers(0, cols - size + 1))
        else:
            top, left = (rows - size) // 2, (cols - size) // 2
        return image[:, top : top + size, left : left + size], label[top : top + size, left : left + size]


def split(n: int, validation_percent: float, seed: int = 42) -> tuple[list[int], list[int]]:
    """A seeded split: the same chips validate on every run with the same data."""
    if n < 2:
        raise ValueError(f"at least 2 usable chips are needed to train and validate; found {n}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_valid = min(n - 1, max(1, round(n * validation_percent / 100)))
    return sorted(order[n_valid:]), sorted(order[:n_valid])
