"""The Python raster function of geotrain's object classification packages (FEATURE_CLASSIFIER).

ArcGIS (Classify Objects Using Deep Learning) loads it from the package, as the EMD's InferenceFunction
names it, and calls ``vectorize`` with one block of pixels per feature to classify (``rasters_pixels``).
Each block is classified as a training chip was: resized to the chip size the model was trained on. A
feature comes back per block, its outline the block's extent in pixels, with the class and the confidence
in percent; a multi-label model gives every class at or above the threshold, separated by ``;``. Needs
torch, torchvision, numpy and the files shipped beside it; never geotrain.
"""

from __future__ import annotations

import json
import os
import runpy
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# the shared helpers, by path: another package's copy (of another geotrain version) may be loaded too
runtime = SimpleNamespace(
    **runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "geotrain_runtime.py"))
)
POLYGON = 4  # ArcGIS's geometry type code
THRESHOLD = 0.5  # a multi-label model's least probability for a label, unless the tool says otherwise


def describe(p: np.ndarray, names: list[str], multi_label: bool, threshold: float) -> tuple[str, str | float]:
    """An object's (label, confidence in percent) from its class probabilities: the likeliest class, or
    for a multi-label model every class at ``threshold`` or above, ``;``-separated (confidences too)."""
    if multi_label:
        chosen = [j for j in range(len(p)) if p[j] >= threshold]
        return ";".join(names[j] for j in chosen), ";".join(f"{100 * float(p[j]):.2f}" for j in chosen)
    best = int(p.argmax())
    return names[best], 100 * float(p[best])


class GeotrainObjectClassifier:
    def __init__(self) -> None:
        self.name = "Geotrain Object Classifier"
        self.description = "Classifies objects with a network trained by geotrain."
        self.emd: dict[str, Any] = {}
        self.threshold, self.batch_size = THRESHOLD, 4
        self.reid = False

    def initialize(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            return
        self.emd, folder = runtime.read_emd(str(kwargs["model"]))
        self.device = runtime.pick_device(kwargs.get("device"))
        self.networks = runtime.load_sibling(os.path.dirname(os.path.abspath(__file__)), "geotrain_networks.py")
        self.network = self.build_network()
        self.networks.load_weights(self.network, runtime.load_state(self.emd, folder))
        self.network.to(self.device).eval()
        self.normalize = runtime.Normalizer(self.emd)
        self.names = [str(c["Name"]) for c in self.emd["Classes"]]
        self.multi_label = bool(self.emd.get("IsMultiLabel", False))
        # DEEPSORT's re-identification network: each object also gets its appearance descriptor
        self.reid = "EmbeddingSize" in self.emd
        self.batch_size = int(self.emd.get("BatchSize", self.batch_size))

    def build_network(self) -> Any:
        """The EMD's network, with random weights."""
        return self.networks.feature_classifier(self.emd)

    def getParameterInfo(self) -> list[dict[str, Any]]:
        return [
            {"name": "rasters", "dataType": "rasters", "value": None, "required": True, "displayName": "Rasters",
             "description": "The blocks of the raster under the objects to classify"},
            {"name": "model", "dataType": "string", "required": True,
             "displayName": "Input Model Definition (EMD) File",
             "description": "Input model definition (EMD) JSON file"},
            {"name": "device", "dataType": "numeric", "required": False, "displayName": "Device ID",
             "description": "Device ID"},
            {"name": "batch_size", "dataType": "numeric", "value": self.batch_size, "required": False,
             "displayName": "Batch Size", "description": "Objects classified together."},
            {"name": "threshold", "dataType": "numeric", "value": self.threshold, "required": False,
             "displayName": "Threshold", "description": "A multi-label model gives the classes at least this sure."},
        ]  # fmt: skip

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:
        self.batch_size = max(1, int(runtime.scalar(scalars, "batch_size", self.batch_size)))
        self.threshold = runtime.scalar(scalars, "threshold", self.threshold)
        configuration = {
            "CropSizeFixed": int(self.emd.get("CropSizeFixed", 1)),
            "BlackenAroundFeature": int(self.emd.get("BlackenAroundFeature", 0)),
            "extractBands": tuple(int(b) for b in self.emd["ExtractBands"]),
            "tx": int(self.emd["ImageWidth"]),
            "ty": int(self.emd["ImageHeight"]),
            "batch_size": self.batch_size,
            "inheritProperties": 2 | 4 | 8,
            "inputMask": True,
        }
        if "DataRange" in self.emd:
            configuration["dataRange"] = tuple(self.emd["DataRange"])
        return configuration

    def _fields(self) -> list[dict[str, str]]:
        confidence = "esriFieldTypeString" if self.multi_label else "esriFieldTypeDouble"
        return [
            {"name": "OID", "type": "esriFieldTypeOID", "alias": "OID"},
            {"name": "Class", "type": "esriFieldTypeString", "alias": "Class"},
            {"name": "Confidence", "type": confidence, "alias": "Confidence"},
            {"name": "Shape", "type": "esriFieldTypeGeometry", "alias": "Shape"},
            {"name": "Label", "type": "esriFieldTypeString", "alias": "Label"},
            *([{"name": "Embedding", "type": "esriFieldTypeString", "alias": "Embedding"}] if self.reid else []),
        ]

    def getFields(self) -> str:
        return json.dumps({"fields": self._fields()})

    def getGeometryType(self) -> int:
        return POLYGON

    def batches(self, blocks: list[np.ndarray]) -> Iterator[torch.Tensor]:
        """The blocks (bands x rows x cols, raw pixels) normalized and resized as training chips were, in
        batches."""
        size = (int(self.emd["ImageHeight"]), int(self.emd["ImageWidth"]))
        for start in range(0, len(blocks), self.batch_size):
            batch = []
            for pixels in blocks[start : start + self.batch_size]:
                x = self.normalize(pixels, self.device)[None]
                if x.shape[-2:] != size:
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                batch.append(x)
            yield torch.cat(batch)

    def classify(self, blocks: list[np.ndarray]) -> np.ndarray:
        """Per block: the probability of each class (softmax, or one sigmoid per class for a multi-label
        model)."""
        out = []
        for batch in self.batches(blocks):
            with torch.no_grad():
                logits = self.network(batch).float()
            out.append((logits.sigmoid() if self.multi_label else logits.softmax(1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.names)), dtype=np.float32)

    def embeddings(self, blocks: list[np.ndarray]) -> list[str]:
        """A re-identification network's unit-length descriptor of each block, as comma-separated numbers:
        a tracker matches objects across frames by the cosine of two."""
        out = []
        for batch in self.batches(blocks):
            with torch.no_grad():
                out += [",".join(f"{v:.5f}" for v in row) for row in self.network.embed(batch).float().cpu().tolist()]
        return out

    def labels(self, blocks: list[np.ndarray]) -> list[tuple[str, str | float]]:
        """Each block's (label, confidence in percent)."""
        return [describe(p, self.names, self.multi_label, self.threshold) for p in self.classify(blocks)]

    def vectorize(self, **pixelBlocks: Any) -> dict[str, str]:
        masks = pixelBlocks.get("rasters_mask")
        blocks = []
        for i, block in enumerate(pixelBlocks["rasters_pixels"]):
            pixels = np.array(block, copy=True)
            if masks is not None:
                pixels[np.asarray(masks[i]) == 0] = 0  # no data reads as zero, as in training exports
            blocks.append(pixels)
        features = []
        described = self.embeddings(blocks) if self.reid else None
        for i, (pixels, (label, confidence)) in enumerate(zip(blocks, self.labels(blocks), strict=True)):
            rows, cols = pixels.shape[-2:]
            ring = [[0.0, 0.0], [float(cols), 0.0], [float(cols), float(rows)], [0.0, float(rows)], [0.0, 0.0]]
            features.append(
                {
                    "attributes": {
                        "OID": i + 1,
                        "Class": label,
                        "Label": label,
                        "Confidence": confidence,
                        **({"Embedding": described[i]} if described is not None else {}),
                    },
                    "geometry": {"rings": [ring]},
                }
            )
        return {"output_vectors": json.dumps({"fields": self._fields(), "features": features})}
