"""The Python raster function of geotrain's panoptic segmentation packages (MAXDEEPLAB).

The pixel classifier's function (shipped beside it) with two output bands: each pixel's class value (0 where
no segment claims it) and its segment's number (0 for stuff and unclaimed pixels; each instance its own
number within the block). Needs torch, torchvision, numpy and the files shipped beside it; never geotrain.
"""

from __future__ import annotations

import os
import runpy
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
runtime = SimpleNamespace(**runpy.run_path(os.path.join(HERE, "geotrain_runtime.py")))
PixelClassifier = runtime.load_sibling(HERE, "GeotrainPixelClassifier.py").GeotrainPixelClassifier


class GeotrainPanopticSegmenter(PixelClassifier):  # type: ignore[misc,valid-type]  # a class loaded by path
    def __init__(self) -> None:
        super().__init__()
        self.name = "Geotrain Panoptic Segmenter"
        self.description = "Segments classes and their instances with a network trained by geotrain."

    def updateRasterInfo(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = super().updateRasterInfo(**kwargs)
        kwargs["output_info"]["bandCount"] = 2  # class value, segment number
        return kwargs

    def segment(self, pixels: np.ndarray) -> np.ndarray:
        """Bands x rows x cols of raw pixels -> 2 x rows x cols: class values, segment numbers."""
        x = self.normalize(pixels, self.device)[None]
        with torch.no_grad():
            maps = self.network(x)[0].cpu().numpy()
        return np.stack([self.values[maps[0]], maps[1]])

    def updatePixels(self, tlc: Any, shape: Any, props: dict[str, Any], **pixelBlocks: Any) -> dict[str, Any]:
        out = self.segment(np.asarray(pixelBlocks["raster_pixels"]))
        mask = pixelBlocks.get("raster_mask")
        if mask is not None:
            seen = np.asarray(np.asarray(mask).any(axis=0, keepdims=True), dtype=bool)
            out = np.where(seen, out, 0)
        pixelBlocks["output_pixels"] = out.astype(props["pixelType"], copy=False)
        return pixelBlocks
