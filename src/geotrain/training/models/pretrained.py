"""ImageNet weights from the local cache only: nothing here touches the network."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_cached(arch: str) -> Path | None:
    """torchvision's file for ``arch`` (e.g. resnet34-b627a593.pth) in TORCH_HOME/hub/checkpoints."""
    folder = cache_dir()
    matches = sorted(folder.glob(f"{arch}-*.pth")) if folder.is_dir() else []
    return matches[0] if matches else None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} does not hold a state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def adapt_first_conv(weight: torch.Tensor, bands: int, scheme: str) -> torch.Tensor:
    """Fit RGB first-layer weights to ``bands`` inputs.

    RANDOM: pretrained weights for the first three bands, fresh ones for the rest; RED_BAND: every extra
    band starts from the red filters; ALL_RANDOM: nothing pretrained in this layer.
    """
    out_ch, _, kh, kw = weight.shape
    fresh = torch.empty(out_ch, bands, kh, kw)
    nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu")
    if scheme == "ALL_RANDOM":
        return fresh
    if bands < 3:
        # fewer bands than RGB: each band takes the mean RGB filter, rescaled to keep activations alike
        return weight.mean(dim=1, keepdim=True).repeat(1, bands, 1, 1) * (3 / bands)
    fresh[:, :3] = weight
    if scheme == "RED_BAND":
        fresh[:, 3:] = weight[:, :1]
    return fresh
