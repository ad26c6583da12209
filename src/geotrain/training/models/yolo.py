"""YOLOv3: timm's DarkNet53 with a compact three-scale head and loss, behind torchvision's detection
interface (``network(images, targets)`` -> losses in training, ``network(images)`` -> predictions)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

# the published YOLOv3 anchors (416 px COCO), used for a request that names none and has no boxes to fit
COCO_ANCHORS = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326)]
STRIDES = (8, 16, 32)
STRIDE = 32  # inputs are a multiple of this


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


def _block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1, inplace=True)
    )


class YOLOv3(nn.Module):
    """``backbone`` gives feature maps at strides 8, 16 and 32 with ``channels``; ``anchors`` are nine
    (width, height) pairs in input pixels, smallest first, three per stride; ``num_classes`` excludes the
    background (labels arrive 1-based, as torchvision's detectors take them)."""

    anchors: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        channels: list[int],
        num_classes: int,
        anchors: list[tuple[float, float]],
        input_size: int,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.45,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.input_size = input_size
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))
        out = 3 * (5 + num_classes)
        c3, c4, c5 = channels
        # top-down: each scale's features, then an upsampled summary handed to the next finer scale
        self.neck5 = nn.Sequential(_block(c5, 512, 1), _block(512, 1024, 3), _block(1024, 512, 1))
        self.neck4 = nn.Sequential(_block(c4 + 256, 256, 1), _block(256, 512, 3), _block(512, 256, 1))
        self.neck3 = nn.Sequential(_block(c3 + 128, 128, 1), _block(128, 256, 3), _block(256, 128, 1))
        self.up5, self.up4 = _block(512, 256, 1), _block(256, 128, 1)
        self.heads = nn.ModuleList(
            nn.Sequential(_block(c, 2 * c, 3), nn.Conv2d(2 * c, out, 1)) for c in (128, 256, 512)
        )
        # objectness starts at a 1 % prior: most cells hold nothing, and an even start drowns the other losses
        for head in self.heads:
            last = list(head.children())[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            with torch.no_grad():
                last.bias.view(3, 5 + num_classes)[:, 4] = math.log(0.01 / 0.99)

    def _raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per stride 8, 16, 32: (batch, anchor, row, col, [x, y, w, h, objectness, classes...])."""
        f3, f4, f5 = self.backbone(x)
        p5 = self.neck5(f5)
        p4 = self.neck4(torch.cat([F.interpolate(self.up5(p5), size=f4.shape[-2:]), f4], 1))
        p3 = self.neck3(torch.cat([F.interpolate(self.up4(p4), size=f3.shape[-2:]), f3], 1))
        outs = []
        for head, p in zip(self.heads, (p3, p4, p5), strict=True):
            y = head(p)
            n, _, h, w = y.shape
            outs.append(y.view(n, 3, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2))
        return outs

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        size = self.input_size
        x = torch.stack(
            [F.interpolate(im[None], size=(size, size), mode="bilinear", align_corners=False)[0] for im in images]
        )
        # image pixels -> network pixels, per image: (x, y, x, y)
        scales = [torch.tensor([size / im.shape[-1], size / im.shape[-2]] * 2, device=x.device) for im in images]
        raw = self._raw(x)
        if self.training:
            assert targets is not None, "training needs targets"
            return self._loss(raw, targets, scales)
        return self._predict(raw, images, scales)

    def _loss(
        self, raw: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], scales: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        objectness = [torch.zeros_like(r[..., 4]) for r in raw]
        box = raw[0].new_zeros(())
        cls = raw[0].new_zeros(())
        for b, (target, scale) in enumerate(zip(targets, scales, strict=True)):
            boxes = target["boxes"] * scale
            if len(boxes) == 0:
                continue
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            # each object is the responsibility of the anchor whose shape fits it best
            inter = torch.min(wh[:, None], self.anchors[None]).prod(-1)
            best = (inter / (wh.prod(-1)[:, None] + self.anchors.prod(-1)[None] - inter)).argmax(1)
            for level, stride in enumerate(STRIDES):
                mine = (best // 3) == level
                if not mine.any():
                    continue
                rows, cols = raw[level].shape[2:4]
                grid = centre[mine] / stride
                col = grid[:, 0].long().clamp(0, cols - 1)
                row = grid[:, 1].long().clamp(0, rows - 1)
                anchor = best[mine] % 3
                p = raw[level][b, anchor, row, col]
                objectness[level][b, anchor, row, col] = 1.0
                offset = (grid - torch.stack([col, row], 1)).clamp(0, 1)
                box = box + F.binary_cross_entropy_with_logits(p[:, :2], offset, reduction="sum")
                box = box + F.mse_loss(p[:, 2:4], torch.log(wh[mine] / self.anchors[best[mine]]), reduction="sum")
                onehot = F.one_hot(target["labels"][mine] - 1, self.num_classes).to(p.dtype)
                cls = cls + F.binary_cross_entropy_with_logits(p[:, 5:], onehot, reduction="sum")
        n = len(targets)
        obj = sum(
            F.binary_cross_entropy_with_logits(r[..., 4], t, reduction="sum")
            for r, t in zip(raw, objectness, strict=True)
        )
        assert isinstance(obj, torch.Tensor)
        return {"bbox_regression": box / n, "classification": cls / n, "objectness": obj / n}

    def _predict(
        self, raw: list[torch.Tensor], images: list[torch.Tensor], scales: list[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        results = []
        for b, (image, scale) in enumerate(zip(images, scales, strict=True)):
            found_boxes, found_scores, found_labels = [], [], []
            for level, stride in enumerate(STRIDES):
                p = raw[level][b].float()
                rows, cols = p.shape[1:3]
                gy, gx = torch.meshgrid(
                    torch.arange(rows, device=p.device), torch.arange(cols, device=p.device), indexing="ij"
                )
                xy = (p[..., :2].sigmoid() + torch.stack([gx, gy], -1)) * stride
                wh = p[..., 2:4].clamp(max=8).exp() * self.anchors[3 * level : 3 * level + 3].view(3, 1, 1, 2)
                scores = (p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()).reshape(-1, self.num_classes)
                boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(-1, 4)
                where, label = (scores > self.score_thresh).nonzero(as_tuple=True)
                found_boxes.append(boxes[where])
                found_scores.append(scores[where, label])
                found_labels.append(label + 1)
            boxes, scores, labels = torch.cat(found_boxes), torch.cat(found_scores), torch.cat(found_labels)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            rows, cols = image.shape[-2:]
            boxes = boxes[keep] / scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cols)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, rows)
            results.append({"boxes": boxes, "scores": scores[keep], "labels": labels[keep]})
        return results
