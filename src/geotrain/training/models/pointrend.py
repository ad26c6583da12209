"""PointRend (Kirillov et al., 2020) over a pixel classifier, for arcgis.learn's ``pointrend`` argument.

The networks here already put out logits at the chip's resolution (bilinear upsamples of a coarse map), so
the point head re-predicts the most uncertain pixels of that map, from the encoder's stride-4 features and
the coarse logits there: in training at points drawn with PointRend's importance sampling, in inference at
the pixels whose top two classes are closest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geotrain.dlpk.prf.geotrain_networks import point_mlp, point_sample

__all__ = ["PointOutput", "PointRend", "point_sample", "training_points", "uncertainty"]

# PointRend's semantic-segmentation settings (its paper and the public configs)
TRAIN_POINTS = 2048
OVERSAMPLE = 3
IMPORTANCE = 0.75
INFER_POINTS = 8192
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
        self.point_head = point_mlp(channels + num_classes, num_classes)

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
