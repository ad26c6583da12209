"""One pass over every chip of an export: unreadable files found, band statistics gathered, samples
kept in memory when they fit. Every format's reader runs its own ``load`` through this."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar

import numpy as np

from geotrain.training.data.chips import ChipReadError
from geotrain.training.data.export import ChipItem, ExportInfo, data_kind

T = TypeVar("T")

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

    @cached_property
    def _gain_offset(self) -> tuple[np.ndarray, np.ndarray]:
        # one multiply-add per pixel: x * scale/std - mean/std
        gain = (self.scale / self.std).astype(np.float32)[:, None, None]
        return gain, (-self.mean / self.std).astype(np.float32)[:, None, None]

    def apply(self, image: np.ndarray) -> np.ndarray:
        gain, offset = self._gain_offset
        # order="C": flipped or turned views are copied once, here, into a tensor-ready array
        out: np.ndarray = image.astype(np.float32, order="C")
        out *= gain
        out += offset
        return out

    def revert(self, normalized: np.ndarray) -> np.ndarray:
        """Pixel values back from normalized ones (what `apply` undone gives: image values, as float32)."""
        std = (self.std / self.scale).astype(np.float32)[:, None, None]
        mean = (self.mean / self.scale).astype(np.float32)[:, None, None]
        values: np.ndarray = normalized.astype(np.float32) * std + mean
        return values


@dataclass
class Scan(Generic[T]):
    items: list[ChipItem]  # the readable ones
    bad: list[ChipReadError]
    samples: list[tuple[np.ndarray, T]] | None  # in memory when they fit, else None (read again per step)
    dtype: np.dtype
    num_bands: int
    normalization: Normalization
    load: Callable[[ChipItem], tuple[np.ndarray, T]]
    bands: list[int] | None = None  # ExtractBands, applied by `load`

    def sample(self, index: int) -> tuple[np.ndarray, T]:
        if self.samples is not None:
            return self.samples[index]
        return self.load(self.items[index])


def memory_budget() -> int:
    """A quarter of the memory free now: what one training process may hold of chips."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.25)
    except (ValueError, OSError):
        return 1 << 30


def scan(
    export: ExportInfo,
    load: Callable[[ChipItem], tuple[np.ndarray, T]],
    on_progress: Callable[[int, int], None] | None = None,
    observe: Callable[[np.ndarray, T], None] | None = None,
    budget: int | None = None,
) -> Scan[T]:
    budget = memory_budget() if budget is None else budget
    samples: list[tuple[np.ndarray, T]] | None = []
    good: list[ChipItem] = []
    bad: list[ChipReadError] = []
    used = 0
    stats = BandStats()
    for n, item in enumerate(export.items):
        if on_progress is not None:
            on_progress(n + 1, len(export.items))
        try:
            image, target = load(item)
        except ChipReadError as exc:
            bad.append(exc)
            continue
        if stats.bands and image.shape[0] != stats.bands:
            bad.append(ChipReadError(item.image, f"it has {image.shape[0]} bands, other chips {stats.bands}"))
            continue
        good.append(item)
        stats.add(image)
        if observe is not None:
            observe(image, target)
        if samples is not None:
            used += image.nbytes + _nbytes(target)
            if used > budget:
                samples = None  # too big to hold: the data set reads from disk instead
            else:
                samples.append((image, target))
    if not good:
        return Scan([], bad, None, np.dtype("uint8"), export.num_bands or 0, _identity(1), load)
    norm = stats.normalization(export)
    assert stats.dtype is not None
    return Scan(good, bad, samples, stats.dtype, stats.bands, norm, load, export.extract_bands)


def _nbytes(target: object) -> int:
    if isinstance(target, np.ndarray):
        return int(target.nbytes)
    if isinstance(target, dict | tuple | list):
        values = target.values() if isinstance(target, dict) else target
        return sum(_nbytes(v) for v in values)
    return 64


class BandStats:
    """Per-band count, sums, squares, minimum and maximum of the images added."""

    def __init__(self) -> None:
        self.bands = 0
        self.count = 0
        self.dtype: np.dtype | None = None
        self.sums = self.squares = self.mins = self.maxs = np.zeros(0)

    def add(self, image: np.ndarray) -> None:
        flat = image.reshape(image.shape[0], -1).astype(np.float64)
        if self.count == 0:
            self.bands, self.dtype = image.shape[0], image.dtype
            self.sums, self.squares = np.zeros(self.bands), np.zeros(self.bands)
            self.mins, self.maxs = flat.min(axis=1), flat.max(axis=1)
        self.sums += flat.sum(axis=1)
        self.squares += (flat**2).sum(axis=1)
        self.mins, self.maxs = np.minimum(self.mins, flat.min(axis=1)), np.maximum(self.maxs, flat.max(axis=1))
        self.count += flat.shape[1]

    def normalization(self, export: ExportInfo) -> Normalization:
        mean = self.sums / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        # two dates of 8-bit RGB stacked (change detection) are RGB twice
        paired = self.bands == 6 and data_kind(export) == "ChangeDetection"
        if (self.bands == 3 or paired) and self.dtype == np.uint8:
            dates = self.bands // 3
            # 8-bit RGB: ImageNet statistics, as arcgis.learn does, so pretrained backbones see what they know
            return Normalization(
                1 / 255, np.array(IMAGENET_MEAN * dates, np.float32), np.array(IMAGENET_STD * dates, np.float32),
                True, self.mins.tolist(), self.maxs.tolist(),
            )  # fmt: skip
        stats = export.band_stats
        if stats is not None and len(stats.mean) == self.bands and all(s > 0 for s in stats.std):
            # the export's own statistics cover every chip it wrote, not only the ones present
            mean, std = np.array(stats.mean), np.array(stats.std)
        return Normalization(
            1.0, mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32), False,
            self.mins.tolist(), self.maxs.tolist(),
        )  # fmt: skip

    def plain(self) -> Normalization:
        """The bands' own mean and deviation, whatever the data type (a translation's target)."""
        mean = self.sums / max(self.count, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.count, 1) - mean**2, 0.0))
        return Normalization(
            1.0, mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32), False,
            self.mins.tolist(), self.maxs.tolist(),
        )  # fmt: skip


def _identity(bands: int) -> Normalization:
    return Normalization(
        1.0, np.zeros(bands, np.float32), np.ones(bands, np.float32), False, [0.0] * bands, [1.0] * bands
    )


def split(n: int, validation_percent: float, seed: int = 42) -> tuple[list[int], list[int]]:
    """A seeded split: the same chips validate on every run with the same data."""
    if n < 2:
        raise ValueError(f"at least 2 usable chips are needed to train and validate; found {n}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_valid = min(n - 1, max(1, round(n * validation_percent / 100)))
    return sorted(order[n_valid:]), sorted(order[:n_valid])


# More unreadable chips than this share means a damaged export: the job fails rather than train on the rest.
MAX_BAD_FRACTION = 0.1


def bad_chip_verdict(result: Scan[T]) -> tuple[bool, str] | None:
    """(fatal, message) when files could not be read; None when all were fine."""
    if not result.bad:
        return None
    shown = ", ".join(str(e) for e in result.bad[:5])
    more = f" and {len(result.bad) - 5} more" if len(result.bad) > 5 else ""
    total = len(result.bad) + len(result.items)
    text = f"{len(result.bad)} of {total} chip or label file(s) cannot be read: {shown}{more}."
    fatal = not result.items or len(result.bad) > MAX_BAD_FRACTION * total
    if fatal:
        return True, f"{text} Re-export them or remove their lines from map.txt."
    return False, f"{text} They were skipped."
