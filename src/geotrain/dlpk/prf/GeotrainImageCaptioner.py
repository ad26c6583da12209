"""The Python raster function of geotrain's image captioning packages (IMAGECAPTIONER).

ArcGIS (Classify Objects Using Deep Learning) calls ``vectorize`` with one block of pixels per feature, as for
object classification (this function is the object classifier's, shipped beside it, with the network
swapped): each feature comes back with its caption as its class and label, and as confidence the mean
probability of the caption's words in percent. Needs torch, torchvision, numpy and the files shipped beside it;
never geotrain.
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
ObjectClassifier = runtime.load_sibling(HERE, "GeotrainObjectClassifier.py").GeotrainObjectClassifier


class GeotrainImageCaptioner(ObjectClassifier):  # type: ignore[misc,valid-type]  # a class loaded by path
    def __init__(self) -> None:
        super().__init__()
        self.name = "Geotrain Image Captioner"
        self.description = "Describes objects in words with a network trained by geotrain."

    def initialize(self, **kwargs: Any) -> None:
        super().initialize(**kwargs)
        if "model" in kwargs:
            self.words = [str(w) for w in self.emd["Vocabulary"]]
            self.steps = int(self.emd["ModelParameters"]["max_words"]) + 1  # and its end

    def build_network(self) -> Any:
        return self.networks.image_captioner(self.emd)

    def getParameterInfo(self) -> list[dict[str, Any]]:
        return [p for p in super().getParameterInfo() if p["name"] != "threshold"]

    def labels(self, blocks: list[np.ndarray]) -> list[tuple[str, str | float]]:
        """Each block's (caption, mean probability of its words in percent), greedy word by word."""
        found: list[tuple[str, str | float]] = []
        for batch in self.batches(blocks):
            with torch.no_grad():
                found.extend(self.networks.describe_captions(self.network, batch, self.steps, self.words))
        return found
