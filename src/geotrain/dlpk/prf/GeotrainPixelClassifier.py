"""The Python raster function of geotrain's pixel classification packages (UNET, PSPNET, DEEPLAB, CHANGEDETECTOR,
HED_EDGEDETECTOR, BDCN_EDGEDETECTOR).

ArcGIS (Classify Pixels Using Deep Learning) loads it from the package, as the EMD's InferenceFunction
names it, and drives it through the raster-function interface. It needs torch, torchvision and numpy,
and the network file shipped beside it; never geotrain.
"""

from __future__ import annotations

import json
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


class GeotrainPixelClassifier:
    def __init__(self) -> None:
        self.name = "Geotrain Pixel Classifier"
        self.description = "Classifies pixels with a network trained by geotrain."
        self.emd: dict[str, Any] = {}

    def initialize(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            return
        self.emd, folder = runtime.read_emd(str(kwargs["model"]))
        self.device = runtime.pick_device(kwargs.get("device"))
        self.networks = runtime.load_sibling(os.path.dirname(os.path.abspath(__file__)), "geotrain_networks.py")
        self.network = self.networks.pixel_classifier(self.emd)
        self.network.load_state_dict(runtime.load_state(self.emd, folder), strict=True)
        self.network.to(self.device).eval()
        self.normalize = runtime.Normalizer(self.emd)
        # class index -> the class's value; index 0 is NoData
        self.values = np.asarray([0] + [int(c["Value"]) for c in self.emd["Classes"]], dtype=np.int32)
        self.batch_size = 4

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
                "description": "Pixels of each side of a tile that are predicted but not kept.",
            },
            {
                "name": "batch_size",
                "dataType": "numeric",
                "value": 4,
                "required": False,
                "displayName": "Batch Size",
                "description": "Tiles predicted together.",
            },
        ]

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:
        height, width = int(self.emd["ImageHeight"]), int(self.emd["ImageWidth"])
        padding = int(runtime.scalar(scalars, "padding", runtime.padding(self.emd)))
        self.batch_size = int(runtime.scalar(scalars, "batch_size", 4))
        return {
            "extractBands": tuple(int(b) for b in self.emd["ExtractBands"]),
            "padding": padding,
            "tx": width - 2 * padding,
            "ty": height - 2 * padding,
            "inheritProperties": 2 | 4 | 8,  # pixel type, NoData, dimensions come from the input
            "inputMask": True,
        }

    def updateRasterInfo(self, **kwargs: Any) -> dict[str, Any]:
        info = kwargs["output_info"]
        info["bandCount"] = 1
        info["pixelType"] = "i4"
        info["statistics"] = ()
        features = [
            {
                "attributes": {
                    "OID": i + 1,
                    "Value": int(c["Value"]),
                    "Class": str(c["Name"]),
                    "Red": int(c["Color"][0]),
                    "Green": int(c["Color"][1]),
                    "Blue": int(c["Color"][2]),
                }
            }
            for i, c in enumerate(self.emd["Classes"])
        ]
        info["rasterAttributeTable"] = json.dumps(
            {
                "features": features,
                "fields": [
                    {"name": "OID", "type": "esriFieldTypeOID"},
                    {"name": "Value", "type": "esriFieldTypeInteger"},
                    {"name": "Class", "type": "esriFieldTypeString"},
                    {"name": "Red", "type": "esriFieldTypeInteger"},
                    {"name": "Green", "type": "esriFieldTypeInteger"},
                    {"name": "Blue", "type": "esriFieldTypeInteger"},
                ],
            }
        )
        return kwargs

    def class_indices(self, pixels: np.ndarray) -> np.ndarray:
        """Bands x rows x cols of raw pixels -> rows x cols of class indices (0 NoData)."""
        x = self.normalize(pixels, self.device)[None]
        rows, cols = x.shape[-2:]
        padded, _, _ = self.networks.pad_to_stride(x)  # as in training
        with torch.no_grad():
            logits = self.network(padded)[..., :rows, :cols]
        indices: np.ndarray = logits.argmax(dim=1)[0].cpu().numpy()
        return indices

    def updatePixels(self, tlc: Any, shape: Any, props: dict[str, Any], **pixelBlocks: Any) -> dict[str, Any]:
        pixels = np.asarray(pixelBlocks["raster_pixels"])
        values = self.values[self.class_indices(pixels)]
        mask = pixelBlocks.get("raster_mask")
        if mask is not None:
            # where no band has data there is nothing to classify
            values = np.where(np.asarray(mask).any(axis=0), values, 0)
        pixelBlocks["output_pixels"] = values[None].astype(props["pixelType"], copy=False)
        return pixelBlocks
