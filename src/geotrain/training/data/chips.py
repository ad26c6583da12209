"""Reading chips with rasterio: every format an export writes (GeoTIFF, MRF, PNG, JPEG)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

# Chips exported in pixel space, or PNG/JPEG without world files, carry no georeference: that is fine here.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

_env_pid: int | None = None


def _gdal_env() -> None:
    """One GDAL environment per process for every chip read. GDAL would otherwise list the chip's folder
    on each open to find sidecars (.aux.xml, world files, overviews) that training does not need: with
    thousands of chips in images/ that listing costs more than decoding the chip."""
    global _env_pid
    if _env_pid != os.getpid():
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR").__enter__()
        _env_pid = os.getpid()


class ChipReadError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path.name}: {reason}")


@contextmanager
def _opened(path: Path) -> Iterator[DatasetReader]:
    """A chip opened in the process's GDAL environment; any failure becomes a ChipReadError naming it."""
    _gdal_env()
    try:
        with rasterio.open(path) as src:
            yield src
    except (RasterioError, OSError, ValueError) as exc:
        raise ChipReadError(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def read_chip(path: Path) -> np.ndarray:
    """All bands as (bands, rows, cols), in the file's own data type."""
    with _opened(path) as src:
        data: np.ndarray = src.read()
    return data


def read_label(path: Path) -> np.ndarray:
    """The first band of a class-value raster as (rows, cols)."""
    with _opened(path) as src:
        band: np.ndarray = src.read(1)
    return band


def read_crop(
    image_path: Path, label_path: Path, size: int, place: Callable[[int, int], tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window of a chip and of its label, at the offset ``place(rows, cols)`` picks.

    Decoding only the window is what lets the training pipeline keep up with a bare read loop. Windows
    past the edge of a small chip are filled with 0 (NoData)."""
    with _opened(image_path) as src:
        top, left = place(src.height, src.width)
        image = _window(src, top, left, size, None)
    with _opened(label_path) as src:
        label = _window(src, top, left, size, 1)
    return image, label


def _window(src: DatasetReader, top: int, left: int, size: int, band: int | None) -> np.ndarray:
    inside = top + size <= src.height and left + size <= src.width
    if src.driver in ("JPEG", "PNG"):
        # these decode the whole image whatever window is asked for: read it all, cut in memory
        data: np.ndarray = src.read(band)
        if not inside:
            rows, cols = data.shape[-2:]
            pad = [(0, 0)] * (data.ndim - 2) + [(0, max(0, top + size - rows)), (0, max(0, left + size - cols))]
            data = np.pad(data, pad)
        return data[..., top : top + size, left : left + size]
    window: np.ndarray = src.read(band, window=Window(left, top, size, size), boundless=not inside, fill_value=0)
    return window


def select_bands(image: np.ndarray, bands: list[int] | None, path: Path) -> np.ndarray:
    """The bands the export's ExtractBands names, in that order."""
    if not bands:
        return image
    if max(bands) >= image.shape[0]:
        raise ChipReadError(path, f"ExtractBands names band {max(bands)}, but the chip has {image.shape[0]} bands")
    return image[bands]
