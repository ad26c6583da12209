"""Classified_Tiles: image chips with single-band class-value label rasters, as segmentation samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from geotrain.training.data.augment import Augmenter, crop_origin
from geotrain.training.data.chips import ChipReadError, read_chip, read_crop, read_label, select_bands
from geotrain.training.data.export import ChipItem, ExportInfo
from geotrain.training.data.readers import second_image
from geotrain.training.data.scan import Scan, scan


class ClassMap:
    """Class values of the export -> contiguous indices; index 0 is NoData/background (value 0)."""

    def __init__(self, values: Sequence[int]) -> None:
        self.values = [v for v in sorted(set(values)) if v != 0]
        # at least 256 entries, so any 8-bit label is looked up without a range check
        size = max(256, max([0, *self.values]) + 1)
        self.lut = np.zeros(size, dtype=np.uint8 if self.num_classes < 256 else np.int64)
        for index, value in enumerate(self.values, start=1):
            self.lut[value] = index

    @property
    def num_classes(self) -> int:
        return len(self.values) + 1

    def encode(self, label: np.ndarray) -> np.ndarray:
        lut = self.lut
        if label.dtype == np.uint8 or (label.dtype.kind == "u" and label.size and int(label.max()) < len(lut)):
            fast: np.ndarray = lut[label]  # the common case: one table look-up
            return fast
        wide = label.astype(np.int64, copy=False)
        inside = (wide >= 0) & (wide < len(lut))
        encoded: np.ndarray = np.where(inside, lut[np.clip(wide, 0, len(lut) - 1)], 0).astype(lut.dtype)
        return encoded


@dataclass
class PixelCounts:
    """Pixels per class index (0 = NoData), and label values that are not classes of the export."""

    per_class: np.ndarray
    undeclared: set[int] = field(default_factory=set)


def loader(
    class_map: ClassMap, counts: PixelCounts | None = None, bands: list[int] | None = None, paired: bool = False
) -> Callable[[ChipItem], tuple[np.ndarray, np.ndarray]]:
    """Reads a chip and its label; with ``counts`` (the scan) it also notes undeclared label values.
    ``paired``: the chip's later image (images2/) follows its bands, as change detection takes them."""
    declared = {0, *class_map.values}

    def load(item: ChipItem) -> tuple[np.ndarray, np.ndarray]:
        image = select_bands(read_chip(item.image), bands, item.image)
        if paired:
            after = select_bands(second_image(item, image), bands, item.image2 or item.image)
            image = np.concatenate([image, after], axis=0)
        if item.label is None:
            raise ChipReadError(item.image, "it has no label raster")
        label = read_label(item.label)
        if label.shape != image.shape[1:]:
            raise ChipReadError(item.label, f"label size {label.shape} differs from chip size {image.shape[1:]}")
        if counts is not None:
            counts.undeclared.update(int(v) for v in np.unique(label) if int(v) not in declared)
        return image, class_map.encode(label)

    return load


def scan_segmentation(
    export: ExportInfo,
    class_map: ClassMap,
    on_progress: Callable[[int, int], None] | None = None,
    paired: bool = False,
) -> tuple[Scan[np.ndarray], PixelCounts]:
    counts = PixelCounts(np.zeros(class_map.num_classes, dtype=np.int64))

    def observe(_image: np.ndarray, label: np.ndarray) -> None:
        counts.per_class += np.bincount(label.ravel(), minlength=class_map.num_classes)

    result = scan(export, loader(class_map, counts, export.extract_bands, paired), on_progress, observe)
    # training reads (when chips are not held in memory) skip the checks
    result.load = loader(class_map, bands=export.extract_bands, paired=paired)
    return result, counts


class SegmentationChips(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples for training (random crop, flips and quarter turns) or validation (centre crop)."""

    def __init__(
        self,
        scanned: Scan[np.ndarray],
        indices: Sequence[int],
        chip_size: int,
        train: bool,
        augment: bool,
        class_map: ClassMap | None = None,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.scanned = scanned
        # CUSTOM or FILE augmentation replaces the default flips and turns
        self.augmenter = augmenter
        # with the class map, chips that are not held in memory are read as just the window trained on
        self.class_map = class_map
        self.indices = list(indices)
        self.chip_size = chip_size
        self.train = train
        self.augment = augment and train

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.scanned.sample(self.indices[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scanned.samples is None and self.class_map is not None:
            item = self.scanned.items[self.indices[i]]
            assert item.label is not None  # the scan kept only chips with labels
            image, label = read_crop(item.image, item.label, self.chip_size, self._offset)
            image = select_bands(image, self.scanned.bands, item.image)
            label = self.class_map.encode(label)
        else:
            image, label = self.crop(*self.raw(i))
        if self.augmenter is not None:
            image, label = self.augmenter.pixels(image, label)
        elif self.augment:
            # torch's generator: seeded by Lightning, and differently in every DataLoader worker
            flip_x, flip_y, turns = (int(v) for v in torch.randint(0, 4, (3,)))
            if flip_x % 2:
                image, label = image[:, :, ::-1], label[:, ::-1]
            if flip_y % 2:
                image, label = image[:, ::-1, :], label[::-1, :]
            if turns and image.shape[1] == image.shape[2]:
                image, label = np.rot90(image, turns, axes=(1, 2)), np.rot90(label, turns)
        x = self.scanned.normalization.apply(image)
        # labels travel as their small integer type; the model widens them on its device
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(label))

    def crop(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.chip_size
        rows, cols = label.shape
        if rows < size or cols < size:
            pad = ((0, max(0, size - rows)), (0, max(0, size - cols)))
            image = np.pad(image, ((0, 0), *pad))
            label = np.pad(label, pad)
            rows, cols = label.shape
        top, left = self._offset(rows, cols)
        return image[:, top : top + size, left : left + size], label[top : top + size, left : left + size]

    def _offset(self, rows: int, cols: int) -> tuple[int, int]:
        """Where the crop starts: random when training with augmentation, else the centre."""
        size = self.chip_size
        if rows <= size and cols <= size:
            return 0, 0
        if self.augmenter is not None:
            placed = self.augmenter.crop_offset(rows, cols, size)
            return placed if placed is not None else crop_origin(rows, cols, size, random=False)
        return crop_origin(rows, cols, size, random=self.augment)
