"""The Python raster function of geotrain's detection packages: FASTERRCNN, RETINANET, SSD, YOLOV3 (boxes) and
MASKRCNN (instance outlines).

ArcGIS (Detect Objects Using Deep Learning) loads it from the package, as the EMD's InferenceFunction names
it, and calls ``vectorize`` per tile. Features come back in the tile's pixel coordinates (x to the right, y
down), Confidence in percent. Needs torch, torchvision, numpy and the files shipped beside it; never
geotrain.
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
POLYGON = 4  # ArcGIS's geometry type code
FIELDS = [
    {"name": "OID", "type": "esriFieldTypeOID", "alias": "OID"},
    {"name": "Class", "type": "esriFieldTypeString", "alias": "Class"},
    {"name": "Confidence", "type": "esriFieldTypeDouble", "alias": "Confidence"},
    {"name": "Shape", "type": "esriFieldTypeGeometry", "alias": "Shape"},
]


def outline(mask: np.ndarray) -> list[list[list[float]]]:
    """The rings along the pixel edges of a boolean mask: each edge between a masked and an unmasked pixel,
    directed so that the mask lies to its right, linked into closed rings (outer rings and holes turn
    opposite ways), runs of collinear edges merged."""
    padded = np.pad(mask.astype(bool), 1)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    rows, cols = np.nonzero(padded)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        y, x = r - 1, c - 1  # the pixel's top-left corner in the mask's coordinates
        if not padded[r - 1, c]:
            edges.setdefault((x, y), []).append((x + 1, y))  # top edge, left to right
        if not padded[r, c + 1]:
            edges.setdefault((x + 1, y), []).append((x + 1, y + 1))  # right edge, downwards
        if not padded[r + 1, c]:
            edges.setdefault((x + 1, y + 1), []).append((x, y + 1))  # bottom edge, right to left
        if not padded[r, c - 1]:
            edges.setdefault((x, y + 1), []).append((x, y))  # left edge, upwards
    rings: list[list[list[float]]] = []
    while edges:
        start = next(iter(edges))
        ring = [start]
        point = start
        while True:
            targets = edges[point]
            nxt = targets.pop()
            if not targets:
                del edges[point]
            if nxt == start:
                break
            ring.append(nxt)
            point = nxt
        corners = [p for i, p in enumerate(ring) if _turns(ring[i - 1], p, ring[(i + 1) % len(ring)])]
        rings.append([[float(x), float(y)] for x, y in [*corners, corners[0]]])
    return rings


def _turns(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> bool:
    return (b[0] - a[0]) * (c[1] - b[1]) != (b[1] - a[1]) * (c[0] - b[0])


def box_ring(box: list[float]) -> list[list[list[float]]]:
    x0, y0, x1, y1 = box
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


class GeotrainObjectDetector:
    def __init__(self) -> None:
        self.name = "Geotrain Object Detector"
        self.description = "Detects objects with a network trained by geotrain."
        self.emd: dict[str, Any] = {}
        self.padding, self.threshold, self.nms_overlap, self.exclude_pad = 0, 0.5, 0.5, True

    def initialize(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            return
        self.emd, folder = runtime.read_emd(str(kwargs["model"]))
        self.device = runtime.pick_device(kwargs.get("device"))
        here = os.path.dirname(os.path.abspath(__file__))
        self.networks = runtime.load_sibling(here, "geotrain_networks.py")
        self.network = self.networks.detector(self.emd)
        self.networks.load_weights(self.network, runtime.load_state(self.emd, folder))
        self.network.to(self.device).eval()
        self.normalize = runtime.Normalizer(self.emd)
        self.masks = self.emd.get("ModelType") == "InstanceDetection"
        # the networks drop boxes below a score of their own (0.01-0.05): a lower threshold lowers it
        self.built_thresholds = [
            (m, float(m.score_thresh)) for m in self.network.modules() if hasattr(m, "score_thresh")
        ]
        self.threshold = float(self.emd.get("Threshold", 0.5))
        self.nms_overlap = float(self.emd.get("NMSOverlap", 0.5))

    def getParameterInfo(self) -> list[dict[str, Any]]:
        def numeric(name: str, value: float, display: str, description: str) -> dict[str, Any]:
            return {"name": name, "dataType": "numeric", "value": value, "required": False,
                    "displayName": display, "description": description}  # fmt: skip

        return [
            {"name": "raster", "dataType": "raster", "required": True, "displayName": "Raster",
             "description": "Input raster"},
            {"name": "model", "dataType": "string", "required": True,
             "displayName": "Input Model Definition (EMD) File",
             "description": "Input model definition (EMD) JSON file"},
            numeric("padding", runtime.padding(self.emd), "Padding",
                    "Pixels of each side of a tile that are read but not kept."),
            numeric("threshold", float(self.emd.get("Threshold", 0.5)), "Confidence Score Threshold [0.0, 1.0]",
                    "Detections less confident than this are dropped."),
            numeric("nms_overlap", float(self.emd.get("NMSOverlap", 0.5)), "NMS Overlap",
                    "Of two detections of a class overlapping more than this (IoU), the less confident is dropped."),
            numeric("batch_size", 1, "Batch Size", "Tiles processed together."),
            {"name": "exclude_pad_detections", "dataType": "string", "value": "True", "required": False,
             "displayName": "Exclude Pad Detections", "description": "Drop detections centred in the padding."},
        ]  # fmt: skip

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:
        height, width = int(self.emd["ImageHeight"]), int(self.emd["ImageWidth"])
        self.padding = int(runtime.scalar(scalars, "padding", runtime.padding(self.emd)))
        self.threshold = runtime.scalar(scalars, "threshold", self.threshold)
        self.nms_overlap = runtime.scalar(scalars, "nms_overlap", self.nms_overlap)
        self.exclude_pad = runtime.flag(scalars, "exclude_pad_detections", True)
        for module, built in self.built_thresholds:
            module.score_thresh = min(built, self.threshold)
        return {
            "extractBands": tuple(int(b) for b in self.emd["ExtractBands"]),
            "padding": self.padding,
            "tx": width - 2 * self.padding,
            "ty": height - 2 * self.padding,
            "fixedTileSize": 1,
            "inheritProperties": 2 | 4 | 8,
            "inputMask": True,
        }

    def getFields(self) -> str:
        return json.dumps({"fields": FIELDS})

    def getGeometryType(self) -> int:
        return POLYGON

    def detect(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Boxes (x0, y0, x1, y1 in pixels), scores (0..1), class indices (1 = the EMD's first class) and,
        for instance detection, masks; after the threshold, the NMS overlap and the padding rule."""
        x = self.normalize(pixels, self.device)
        with torch.no_grad():
            found = self.network([x])[0]
        found = self.networks.filter_detections(found, self.threshold, self.nms_overlap)
        if self.exclude_pad and self.padding > 0:
            rows, cols = pixels.shape[1:]
            cx = (found["boxes"][:, 0] + found["boxes"][:, 2]) / 2
            cy = (found["boxes"][:, 1] + found["boxes"][:, 3]) / 2
            p = self.padding
            inside = (cx >= p) & (cx < cols - p) & (cy >= p) & (cy < rows - p)
            found = {k: v[inside] for k, v in found.items()}
        return {k: v.cpu().numpy() for k, v in found.items()}

    def vectorize(self, **pixelBlocks: Any) -> dict[str, str]:
        pixels = np.array(pixelBlocks["raster_pixels"], copy=True)
        mask = pixelBlocks.get("raster_mask")
        if mask is not None:
            pixels[np.asarray(mask) == 0] = 0  # no data reads as zero, as in training exports
        found = self.detect(pixels)
        names = [str(c["Name"]) for c in self.emd["Classes"]]
        features = []
        for i, (box, score, label) in enumerate(zip(found["boxes"], found["scores"], found["labels"], strict=True)):
            rings = box_ring([float(v) for v in box])
            if self.masks:
                rings = outline(found["masks"][i, 0] >= 0.5) or rings
            features.append(
                {
                    "attributes": {"OID": i + 1, "Class": names[int(label) - 1], "Confidence": float(score) * 100},
                    "geometry": {"rings": rings},
                }
            )
        return {"output_vectors": json.dumps({"fields": FIELDS, "features": features})}
