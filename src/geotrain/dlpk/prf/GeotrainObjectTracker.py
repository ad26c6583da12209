"""The object tracker of geotrain's SiamMask packages (SIAMMASK).

Tracking is not a raster function in ArcGIS: a tracker is given a frame and the boxes of the objects to follow,
then each next frame, and says where each object went. This class does that with the package's network, in
the shape arcgis.learn's SiamMask offers (``init``, ``update``, ``remove``, tracks with an id, a label, a box, a
score and a mask), after the raster-function preamble every geotrain package has (``initialize`` with the EMD,
``getParameterInfo``, ``getConfiguration``). Needs torch, torchvision, numpy and the files shipped beside it;
never geotrain.
"""

from __future__ import annotations

import os
import runpy
from types import SimpleNamespace
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
runtime = SimpleNamespace(**runpy.run_path(os.path.join(HERE, "geotrain_runtime.py")))
SETTINGS = ("penalty_k", "window_influence", "lr", "seg_thr")


class GeotrainObjectTracker:
    def __init__(self) -> None:
        self.name = "Geotrain Object Tracker"
        self.description = "Follows objects through video frames with a SiamMask network trained by geotrain."
        self.emd: dict[str, Any] = {}
        self.settings: dict[str, float] = {}
        self.tracks: list[dict[str, Any]] = []
        self.trackers: dict[int, Any] = {}
        self.next_id = 0

    def initialize(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            return
        self.emd, folder = runtime.read_emd(str(kwargs["model"]))
        self.device = runtime.pick_device(kwargs.get("device"))
        self.networks = runtime.load_sibling(HERE, "geotrain_networks.py")
        self.network = self.networks.siammask(self.emd)
        self.network.load_state_dict(runtime.load_state(self.emd, folder), strict=True)
        self.network.to(self.device).eval()
        self.normalize = runtime.Normalizer(self.emd)
        self.bands = len(self.emd["ExtractBands"])
        self.settings = {k: float(v) for k, v in self.emd["ModelParameters"]["hp"].items() if k in SETTINGS}

    def getParameterInfo(self) -> list[dict[str, Any]]:
        hp = self.settings or {k: v for k, v in zip(SETTINGS, (0.04, 0.4, 1.0, 0.35), strict=True)}
        texts = {
            "penalty_k": "How much a change of the box's size and shape counts against an anchor.",
            "window_influence": "The share of the cosine window (favouring the last position) in choosing an anchor.",
            "lr": "How fast the box's size follows what the network finds (0 to 1).",
            "seg_thr": "The mask probability from which a pixel is the object's.",
        }
        return [
            {"name": "raster", "dataType": "raster", "required": True, "displayName": "Frame",
             "description": "A video frame (bands x rows x cols, or rows x cols x bands)"},
            {"name": "model", "dataType": "string", "required": True,
             "displayName": "Input Model Definition (EMD) File",
             "description": "Input model definition (EMD) JSON file"},
            *({"name": k, "dataType": "numeric", "value": hp[k], "required": False, "displayName": k,
               "description": texts[k]} for k in SETTINGS),
        ]  # fmt: skip

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:
        for k in SETTINGS:
            self.settings[k] = runtime.scalar(scalars, k, self.settings.get(k, 0.0))
        return {"extractBands": tuple(self.emd.get("ExtractBands", [])), "inputMask": False}

    def _frame(self, frame: Any) -> Any:
        pixels = np.asarray(frame)
        if pixels.ndim == 2:
            pixels = pixels[None]
        if pixels.shape[0] != self.bands and pixels.shape[-1] == self.bands:
            pixels = pixels.transpose(2, 0, 1)  # a video frame as numpy holds it: rows x cols x bands
        if pixels.shape[0] != self.bands:
            raise ValueError(f"a frame of {self.bands} bands is needed, not of shape {pixels.shape}")
        return self.normalize(pixels, self.device)

    def init(
        self, frame: Any, detections: list[Any], labels: list[str] | None = None, reset: bool = True
    ) -> list[dict[str, Any]]:
        """Start a track for each box of ``detections`` (x, y, width, height in pixels of ``frame``)."""
        if reset:
            self.tracks, self.trackers, self.next_id = [], {}, 0
        x = self._frame(frame)
        for i, box in enumerate(detections or []):
            x0, y0, w, h = (float(v) for v in box[:4])
            label = labels[i] if labels is not None and len(labels) == len(detections) else "Object"
            self.trackers[self.next_id] = self.networks.SiamTracker(self.network, x, (x0, y0, w, h), self.settings)
            self.tracks.append({"id": self.next_id, "label": label, "bbox": [x0, y0, w, h], "score": 1.0,
                                "mask": None, "age": 0})  # fmt: skip
            self.next_id += 1
        return self.tracks

    def update(
        self, frame: Any, detections: list[Any] | None = None, labels: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Each track's box, score and mask (rows x cols, True on the object) in ``frame``; ``detections`` start
        tracks of their own beside them."""
        x = self._frame(frame)
        threshold = self.settings.get("seg_thr", 0.35)
        for track in self.tracks:
            box, score, mask = self.trackers[track["id"]].update(x)
            track.update(bbox=box, score=score, mask=mask.cpu().numpy() > threshold, age=track["age"] + 1)
        if detections:
            self.init(frame, detections, labels, reset=False)
        return self.tracks

    def remove(self, track_ids: list[int]) -> list[dict[str, Any]]:
        gone = set(track_ids)
        self.tracks = [t for t in self.tracks if t["id"] not in gone]
        for i in gone:
            self.trackers.pop(i, None)
        return self.tracks
