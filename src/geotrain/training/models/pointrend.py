"""PointRend (Kirillov et al., 2020) over a pixel classifier, for arcgis.learn's ``pointrend`` argument.

The networks here already put out logits at the chip's resolution (bilinear upsamples of a coarse map), so
the point head re-predicts the most uncertain pixels of that map, from the encoder's stride-4 features and
the coarse logits there: in training at points drawn with PointRend's importance sampling, in inference at
the pixels whose top two classes are closest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# PointRend's semantic-segmentation settings (its paper and the public configs)
TRAIN_POINTS = 2048
OVERSAMPLE = 3
IMPORTANCE = 0.75
INFER_POINTS = 8192
HIDDEN = 256
# the resolution of the features the point head reads, relative to the input
FINE_STRIDE = 4


@dataclass
class PointOutput:
    """What a PointRend network gives in training: its dense logits (and auxiliary logits where the
    network has an auxiliary head), the point head's logits ``[B, C, N]`` at ``coords`` ``[B, N, 2]``
    (x, y in 0..1 of the input)."""

    logits: torch.Tensor
    aux: torch.Tensor | None
    point_logits: torch.Tensor
    coords: torch.Tensor


def point_sample(values: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``values`` ``[B, C, H, W]`` read at ``coords`` ``[B, N, 2]`` (x, y in 0..1) -> ``[B, C, N]``."""
    grid = 2.0 * coords.unsqueeze(2) - 1.0
    return F.grid_sample(values, grid.to(values.dtype), mode=mode, align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """How close the two likeliest classes are (0 is a tie), over dimension 1."""
    top = logits.topk(2, dim=1).values
    return top[:, 1] - top[:, 0]


def training_points(logits: torch.Tensor, count: int) -> torch.Tensor:
    """PointRend's importance sampling: ``IMPORTANCE`` of the points the most uncertain of ``OVERSAMPLE``
    times as many random ones, the rest uniformly at random."""
    batch = logits.shape[0]
    candidates = torch.rand(batch, count * OVERSAMPLE, 2, device=logits.device)
    important = int(IMPORTANCE * count)
    chosen = uncertainty(point_sample(logits, candidates)).topk(important, dim=1).indices
    picked = candidates.gather(1, chosen.unsqueeze(2).expand(-1, -1, 2))
    return torch.cat([picked, torch.rand(batch, count - important, 2, device=logits.device)], dim=1)


def fine_features_module(encoder: nn.Module, bands: int) -> tuple[str, int]:
    """The encoder's module whose output the point head reads (its name, its channels): of the modules
    run once that put out a stride-``FINE_STRIDE`` map, the highest in the module tree (a whole stage
    rather than a layer inside one), the last to finish among equals. Found by running a probe chip."""
    size = 16 * FINE_STRIDE
    calls: dict[str, int] = {}
    seen: dict[str, int] = {}  # name -> channels
    handles = []
    for name, module in encoder.named_modules():
        if not name:
            continue

        def record(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] == size // FINE_STRIDE:
                seen.pop(name, None)  # keep the order in which they finished
                seen[name] = int(out.shape[1])

        handles.append(module.register_forward_hook(record))
    was_training = encoder.training
    encoder.eval()  # the probe must not move BatchNorm's running statistics
    try:
        with torch.no_grad():
            encoder(torch.zeros(1, bands, size, size))
    finally:
        for handle in handles:
            handle.remove()
        encoder.train(was_training)
    once = [(name, channels) for name, channels in seen.items() if calls[name] == 1]
    if not once:
        raise ValueError("the encoder has no stride-4 features for PointRend")
    top = min(name.count(".") for name, _ in once)
    return [(name, channels) for name, channels in once if name.count(".") == top][-1]


class PointRend(nn.Module):
    """``network`` with a point head that refines its uncertain pixels."""

    def __init__(self, network: nn.Module, encoder: nn.Module, bands: int, num_classes: int) -> None:
        super().__init__()
        self.network = network
        name, channels = fine_features_module(encoder, bands)
        self._fine: torch.Tensor | None = None
        encoder.get_submodule(name).register_forward_hook(self._keep_fine)
        # where the features come from, within ``network``: the package's EMD records it
        prefix = next(n for n, m in network.named_modules() if m is encoder)
        self.fine_module, self.fine_channels = f"{prefix}.{name}" if prefix else name, channels
        # an MLP over points, as 1x1 convolutions: fine features and coarse logits in, class logits out
        self.point_head = nn.Sequential(
            nn.Conv1d(channels + num_classes, HIDDEN, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(HIDDEN, HIDDEN, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(HIDDEN, num_classes, 1),
        )

    def _keep_fine(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._fine = output

    def _point_logits(self, coarse: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        assert self._fine is not None
        features = torch.cat([point_sample(self._fine, coords), point_sample(coarse, coords)], dim=1)
        out: torch.Tensor = self.point_head(features)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | PointOutput:
        out = self.network(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        if self.training:
            rows, cols = logits.shape[-2:]
            with torch.no_grad():
                coords = training_points(logits.detach(), min(TRAIN_POINTS, rows * cols))
            return PointOutput(logits, aux, self._point_logits(logits, coords), coords)
        return self.refine(logits)

    def refine(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with their most uncertain pixels re-predicted by the point head."""
        batch, classes, rows, cols = logits.shape
        count = min(INFER_POINTS, rows * cols)
        index = uncertainty(logits).reshape(batch, -1).topk(count, dim=1).indices
        # pixel centres, in 0..1
        coords = torch.stack([(index % cols + 0.5) / cols, (index // cols + 0.5) / rows], dim=2)
        points = self._point_logits(logits, coords).to(logits.dtype)
        flat = logits.reshape(batch, classes, -1).scatter(2, index.unsqueeze(1).expand(-1, classes, -1), points)
        return flat.reshape(batch, classes, rows, cols)


# Mask R-CNN: its 28x28 mask logits upsampled once, and this many of the most uncertain of the 56x56 cells
# re-predicted (a quarter of them)
MASK_POINTS = 28 * 28
MASK_STEPS = 1


@dataclass
class _Stash:
    """What torchvision's RoIHeads hand the mask RoI pool and not the mask predictor: the stride-4 pyramid
    level and the boxes the masks are for."""

    fine: torch.Tensor | None = None
    boxes: list[torch.Tensor] | None = None


class _StashingPool(nn.Module):
    def __init__(self, pool: nn.Module, stash: _Stash) -> None:
        super().__init__()
        self.pool = pool
        self._stash = stash

    def forward(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        self._stash.fine, self._stash.boxes = features["0"], boxes
        out: torch.Tensor = self.pool(features, boxes, image_shapes)
        return out


class PointRendMasks(nn.Module):
    """Mask R-CNN's mask predictor with a PointRend head: its logits are upsampled ``MASK_STEPS`` times,
    each time the most uncertain cells corrected from the pyramid's stride-4 features and the coarse
    logits there. torchvision's mask loss then scores the refined masks, so the point head learns at the
    points it refines. A cell is uncertain when any foreground class's mask logit is near 0: the predictor
    does not know the box's class, so some refined cells belong to classes the box is not of. That is why
    the head adds a correction to the coarse logit rather than replacing it, and starts at none (its last
    layer zero): it can only learn to help."""

    def __init__(self, predictor: nn.Module, fine_channels: int, num_classes: int, stash: _Stash) -> None:
        super().__init__()
        self.predictor = predictor
        self._stash = stash
        self.point_head = nn.Sequential(
            nn.Conv1d(fine_channels + num_classes, HIDDEN, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(HIDDEN, HIDDEN, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(HIDDEN, num_classes, 1),
        )
        last = self.point_head[-1]
        assert isinstance(last, nn.Conv1d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, mask_features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.predictor(mask_features)
        for _ in range(MASK_STEPS):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            if len(logits):
                logits = self._refine(logits)
        return logits

    def _refine(self, logits: torch.Tensor) -> torch.Tensor:
        rois, classes, size, _ = logits.shape
        count = min(MASK_POINTS, size * size)
        foreground = logits[:, 1:] if classes > 1 else logits
        index = (-foreground.abs()).amax(dim=1).reshape(rois, -1).topk(count, dim=1).indices
        flat = logits.reshape(rois, classes, -1)
        spread = index.unsqueeze(1).expand(-1, classes, -1)
        coarse = flat.gather(2, spread)
        features = torch.cat([self._fine_at(index, size), coarse.to(self._stash.fine.dtype)], dim=1)  # type: ignore[union-attr]
        points: torch.Tensor = coarse + self.point_head(features).to(flat.dtype)
        return flat.scatter(2, spread, points).reshape(rois, classes, size, size)

    def _fine_at(self, index: torch.Tensor, size: int) -> torch.Tensor:
        """The stride-4 features at cells ``index`` of each box's ``size`` x ``size`` grid: ``[R, F, N]``."""
        fine, boxes = self._stash.fine, self._stash.boxes
        assert fine is not None and boxes is not None
        # the pyramid level covers the padded batch image at a quarter of its size
        extent = fine.new_tensor([fine.shape[-1] * FINE_STRIDE, fine.shape[-2] * FINE_STRIDE])
        u = (index % size + 0.5) / size
        v = torch.div(index, size, rounding_mode="floor").add(0.5) / size
        out, start = [], 0
        for image, image_boxes in enumerate(boxes):
            n = len(image_boxes)
            if n == 0:
                continue
            b = image_boxes.unsqueeze(1)  # [n, 1, 4]
            x = b[..., 0] + u[start : start + n] * (b[..., 2] - b[..., 0])
            y = b[..., 1] + v[start : start + n] * (b[..., 3] - b[..., 1])
            coords = torch.stack([x, y], dim=2) / extent  # [n, N, 2]
            sampled = point_sample(fine[image : image + 1], coords.reshape(1, -1, 2))  # [1, F, n*N]
            out.append(sampled.reshape(fine.shape[1], n, -1).permute(1, 0, 2))
            start += n
        return torch.cat(out)


def add_mask_point_head(roi_heads: nn.Module, num_classes: int, fine_channels: int = 256) -> None:
    """Give torchvision RoIHeads' mask branch a PointRend head, in place."""
    stash = _Stash()
    roi_heads.mask_roi_pool = _StashingPool(roi_heads.get_submodule("mask_roi_pool"), stash)
    roi_heads.mask_predictor = PointRendMasks(
        roi_heads.get_submodule("mask_predictor"), fine_channels, num_classes, stash
    )
