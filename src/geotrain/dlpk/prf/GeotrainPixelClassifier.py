"""The Python raster function of geotrain's pixel classification packages (UNET, PSPNET, DEEPLAB).

ArcGIS (Classify Pixels Using Deep Learning) loads it from the package, as the EMD's InferenceFunction
names it, and drives it through the raster-function interface. It needs torch, torchvision and numpy,
and the network file shipped beside it; never geotrain.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

NETWORKS_FILE = "geotrain_networks.py"


def load_networks(folder: str) -> Any:
    """The network definitions shipped beside this file, under a name of their own: two packages of
    different geotrain versions may be loaded in one ArcGIS process."""
    path = os.path.join(folder, NETWORKS_FILE)
    name = f"geotrain_networks_{abs(hash(os.path.abspath(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_emd(model: str) -> tuple[dict[str, Any], str]:
    """The EMD from a path or from its JSON text, and the folder its file names are relative to."""
    text = model.strip()
    if text.startswith("{"):
        emd = json.loads(text)
        return emd, os.path.dirname(os.path.abspath(str(emd.get("ModelFile", ""))))
    with open(model, encoding="utf-8-sig") as f:
        return json.load(f), os.path.dirname(os.path.abspath(model))


def pick_device(device: Any) -> torch.device:
    """ArcGIS's convention: -1 the CPU, a GPU's index, anything else (-2) the first GPU when there is one."""
    index = int(device) if device not in (None, "") else -2
    if index == -1 or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{index}" if index >= 0 else "cuda")


class GeotrainPixelClassifier:
    def __init__(self) -> None:
        self.name = "Geotrain Pixel Classifier"
        self.description = "Classifies pixels with a network trained by geotrain."
        self.emd: dict[str, Any] = {}

    def initialize(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            return
        self.emd, folder = read_emd(str(kwargs["model"]))
        self.device = pick_device(kwargs.get("device"))
        networks = load_networks(os.path.dirname(os.path.abspath(__file__)))
        self.network = networks.pixel_classifier(self.emd)
        weights = os.path.join(folder, str(self.emd["ModelFile"]))
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.network.load_state_dict(state, strict=True)
        self.network.to(self.device).eval()
        self.output_stride = int(networks.OUTPUT_STRIDE)
        stats = self.emd.get("NormalizationStats") or {}
        self.mean = np.asarray(stats["band_mean_values"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(stats["band_std_values"], dtype=np.float32)[:, None, None]
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
                "value": int(self.emd.get("ImageHeight", 256)) // 4,
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
        padding = int(scalars.get("padding", height // 4))
        self.batch_size = int(scalars.get("batch_size", 4))
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
        image = (pixels.astype(np.float32) - self.mean) / self.std
        x = torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device)
        rows, cols = x.shape[-2:]
        stride = self.output_stride
        # as in training: to a multiple of the stride, and at least two strides
        pad_r = max((-rows) % stride, 2 * stride - rows)
        pad_c = max((-cols) % stride, 2 * stride - cols)
        if pad_r or pad_c:
            mode = "reflect" if min(rows, cols) > max(pad_r, pad_c) else "constant"
            x = F.pad(x, (0, pad_c, 0, pad_r), mode=mode)
        with torch.no_grad():
            logits = self.network(x)[..., :rows, :cols]
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
