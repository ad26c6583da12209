"""Reading chips with rasterio: every format an export writes (GeoTIFF, MRF, PNG, JPEG)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

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
