"""YOLOv3's anchors. The network itself (a compact three-scale head and loss behind torchvision's detection
interface, on timm's DarkNet53 in training) lives in the portable ``geotrain_networks``, which every YOLOV3
package carries for its inference function."""

from __future__ import annotations

import numpy as np

from geotrain.dlpk.prf.geotrain_networks import YOLO_STRIDES, YOLOv3

# the published YOLOv3 anchors (416 px COCO), used for a request that names none and has no boxes to fit
COCO_ANCHORS = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326)]
STRIDE = YOLO_STRIDES[-1]  # inputs are a multiple of this


def kmeans_anchors(sizes: np.ndarray, k: int = 9, rounds: int = 100) -> list[tuple[float, float]]:
    """``k`` anchor (width, height) pairs fitted to box sizes by k-means with 1 - IoU as the distance
    (boxes compared as if they shared a corner), as YOLO fits its anchors; smallest first."""
    sizes = sizes[(sizes > 0).all(axis=1)].astype(np.float64)
    if len(sizes) < k:
        raise ValueError(f"{len(sizes)} boxes cannot place {k} anchors")
    rng = np.random.default_rng(0)
    centres = sizes[rng.choice(len(sizes), k, replace=False)]
    for _ in range(rounds):
        inter = np.minimum(sizes[:, None], centres[None]).prod(-1)
        iou = inter / (sizes.prod(-1)[:, None] + centres.prod(-1)[None] - inter)
        nearest = iou.argmax(1)
        moved = np.array([sizes[nearest == j].mean(0) if (nearest == j).any() else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    ordered = centres[np.argsort(centres.prod(-1))]
    return [(round(float(w), 2), round(float(h), 2)) for w, h in ordered]


__all__ = ["COCO_ANCHORS", "STRIDE", "YOLOv3", "kmeans_anchors"]
