"""The Python raster function of geotrain's image translation packages (SUPERRESOLUTION, PIX2PIX).

ArcGIS (Classify Pixels Using Deep Learning with such a model) loads it from the package, as the EMD's
InferenceFunction names it, and drives it through the raster-function interface: each block of the input
raster comes back translated, as many bands as the model's target has, in 32-bit floats. A super-resolution
model sharpens a raster resampled to the finer cell size it is to have. It needs torch, torchvision and
numpy, and the network file shipped beside it; never geotrain.
"""

from __future__ import annotations

import os
import runpy
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

# the shared helpers, by path: another package's copy (of another geotrain version) may be loaded too
runtime = SimpleNamespace(
    **runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "geotrain_runtime.py"))
)


class GeotrainImageTranslator:
    def __init__(self) -> None:
        self.name = "Geotrain Image Translator"
        self.description = "Translates imagery with a network trained by geotrain."
        self.emd: dict[str, Any] = {}

    def initialize(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            return
        self.emd, folder = runtime.read_emd(str(kwargs["model"]))
        self.device = runtime.pick_device(kwargs.get("device"))
        self.networks = runtime.load_sibling(os.path.dirname(os.path.abspath(__file__)), "geotrain_networks.py")
        self.network = self.networks.translator(self.emd)
        self.network.load_state_dict(runtime.load_state(self.emd, folder), strict=True)
        self.network.to(self.device).eval()
        self.normalize = runtime.Normalizer(self.emd)
        # the network gives the target's bands normalized: back to their values
        target = self.emd["TargetNormalizationStats"]
        self.mean = np.asarray(target["band_mean_values"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(target["band_std_values"], dtype=np.float32)[:, None, None]

    def getParameterInfo(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "raster",
                "dataType": "raster",
                "required": True,
                "displayName": "Raster",
                "description": "Input raster",
            },
            {
                "name": "model",
                "dataType": "string",
                "required": True,
                "displayName": "Input Model Definition (EMD) File",
                "description": "Input model definition (EMD) JSON file",
            },
            {
                "name": "padding",
                "dataType": "numeric",
                "value": runtime.padding(self.emd),
                "required": False,
                "displayName": "Padding",
                "description": "Pixels of each side of a tile that are translated but not kept.",
            },
        ]

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:
        height, width = int(self.emd["ImageHeight"]), int(self.emd["ImageWidth"])
        padding = int(runtime.scalar(scalars, "padding", runtime.padding(self.emd)))
        return {
            "extractBands": tuple(int(b) for b in self.emd["ExtractBands"]),
            "padding": padding,
            "tx": width - 2 * padding,
            "ty": height - 2 * padding,
            "inheritProperties": 4 | 8,  # NoData and dimensions from the input; bands and pixel type are ours
            "inputMask": True,
        }

    def updateRasterInfo(self, **kwargs: Any) -> dict[str, Any]:
        info = kwargs["output_info"]
        info["bandCount"] = int(self.emd["ModelParameters"]["out_channels"])
        info["pixelType"] = "f4"
        info["statistics"] = ()
        return kwargs

    def translate(self, pixels: np.ndarray) -> np.ndarray:
        """Bands x rows x cols of raw pixels -> the target's bands x rows x cols, in its values."""
        x = self.normalize(pixels, self.device)[None]
        rows, cols = x.shape[-2:]
        padded, _, _ = self.networks.pad_to_stride(x)  # as in training
        with torch.no_grad():
            out = self.network(padded)[0, :, :rows, :cols].float().cpu().numpy()
        translated: np.ndarray = out * self.std + self.mean
        return translated

    def updatePixels(self, tlc: Any, shape: Any, props: dict[str, Any], **pixelBlocks: Any) -> dict[str, Any]:
        pixels = np.asarray(pixelBlocks["raster_pixels"])
        pixelBlocks["output_pixels"] = self.translate(pixels).astype(props["pixelType"], copy=False)
        return pixelBlocks
