"""Reading chips with rasterio: every format an export writes (GeoTIFF, MRF, PNG, JPEG)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

# Chips exported in pixel space, or PNG/JPEG without world files, carry no georeference: that is fine here.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


class ChipReadError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path.name}: {reason}")


def read_chip(path: Path) -> np.ndarray:
    """All bands as (bands, rows, cols), in the file's own data type."""
    try:
        with rasterio.open(path) as src:
            data: np.ndarray = src.read()
            return data
    except (RasterioError, OSError, ValueError) as exc:
        raise ChipReadError(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def read_label(path: Path) -> np.ndarray:
    """The first band of a class-value raster as (rows, cols)."""
    try:
        with rasterio.open(path) as src:
            band: np.ndarray = src.read(1)
            return band
    except (RasterioError, OSError, ValueError) as exc:
        raise ChipReadError(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def read_crop(
    image_path: Path, label_path: Path, size: int, place: Callable[[int, int], tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window of a chip and of its label, at the offset ``place(rows, cols)`` picks.

    Decoding only the window is what lets the training pipeline keep up with a bare read loop. Windows
    past the edge of a small chip are filled with 0 (NoData)."""
    try:
        with rasterio.open(image_path) as src:
            top, left = place(src.height, src.width)
            window = Window(left, top, size, size)
            inside = top + size <= src.height and left + size <= src.width
            image: np.ndarray = src.read(window=window, boundless=not inside, fill_value=0)
    except (RasterioError, OSError, ValueError) as exc:
        raise ChipReadError(image_path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    try:
        with rasterio.open(label_path) as src:
            label: np.ndarray = src.read(1, window=window, boundless=not inside, fill_value=0)
    except (RasterioError, OSError, ValueError) as exc:
        raise ChipReadError(label_path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return image, label


def select_bands(image: np.ndarray, bands: list[int] | None, path: Path) -> np.ndarray:
    """The bands the export's ExtractBands names, in that order."""
    if not bands:
        return image
    if max(bands) >= image.shape[0]:
        raise ChipReadError(path, f"ExtractBands names band {max(bands)}, but the chip has {image.shape[0]} bands")
    return image[bands]
