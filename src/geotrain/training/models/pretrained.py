"""ImageNet weights from the local cache only: nothing here touches the network."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


# backbones whose ImageNet weights come from timm: its hub repository, and its file name in TORCH_HOME
TIMM_WEIGHTS = {"darknet53": ("timm/darknet53.c2ns_in1k", "darknet53_256_c2ns-3aeff817.pth")}


def find_cached(arch: str) -> Path | None:
    """The weight file for ``arch``: torchvision's (e.g. resnet34-b627a593.pth) or timm's in
    TORCH_HOME/hub/checkpoints, or for a timm backbone its file in the Hugging Face hub cache."""
    folder = cache_dir()
    names = [f"{arch}-*.pth"] + ([f"{arch}_*-*.pth"] if arch in TIMM_WEIGHTS else [])
    matches = sorted(m for name in names for m in (folder.glob(name) if folder.is_dir() else []))
    if matches:
        return matches[0]
    if arch in TIMM_WEIGHTS:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(TIMM_WEIGHTS[arch][0], filename)
            if isinstance(found, str):
                return Path(found)
    return None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
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


# torchvision's DenseNet files name some layers "norm.1"; its own loader renames them, so must we
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
# classification heads: not part of a backbone
_HEADS = ("fc.", "classifier.", "head.")


@dataclass
class BackboneWeights:
    state: dict[str, torch.Tensor] | None  # None: start from random initialisation
    source: str | None
    notes: list[str]


def backbone_weights(arch: str, bands: int, scheme: str) -> BackboneWeights:
    """The cached ImageNet weights of ``arch`` without its head, first layer fitted to ``bands``."""
    source = find_cached(arch)
    if source is None:
        where = (
            f"timm's {TIMM_WEIGHTS[arch][1]} there (or {TIMM_WEIGHTS[arch][0]} in the Hugging Face cache)"
            if arch in TIMM_WEIGHTS
            else "torchvision's weight file there"
        )
        note = (
            f"No ImageNet weights for {arch} in {cache_dir()}; the backbone starts from random "
            f"initialisation. Put {where} to start from ImageNet."
        )
        return BackboneWeights(None, None, [note])
    state = {}
    for key, value in load_state_dict(source).items():
        if key.startswith(_HEADS):
            continue
        match = _DENSENET_OLD_KEY.match(key)
        state[match.group(1) + match.group(2) if match else key] = value
    notes = []
    if bands != 3:
        # the first convolution is the one that reads three bands (safetensors files are not in layer order)
        first = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3)
        state[first] = adapt_first_conv(state[first], bands, scheme)
        notes.append(f"First layer adapted to {bands} bands ({scheme}).")
    notes.append(f"Backbone {arch} starts from ImageNet weights ({source.name}).")
    return BackboneWeights(state, source.name, notes)


def load_into(module: nn.Module, weights: BackboneWeights, arch: str, extra_layers: bool = False) -> list[str]:
    """Load backbone weights, failing loudly when the file does not fit the network; ``extra_layers``: the network
    may have layers of its own beside the backbone's (left as they are; their names are returned)."""
    assert weights.state is not None
    # nn.Module's own loader: smp's encoders override it and drop the result that says what did not fit
    missing, unexpected = nn.Module.load_state_dict(module, weights.state, strict=False)
    # a new head starts fresh: a classifier's fc/classifier weights are not in a backbone's file
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith(_HEADS)]
    if (missing and not extra_layers) or unexpected:
        raise ValueError(f"{weights.source} does not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return missing


_WEIGHT_FILE = re.compile(r"^([a-z0-9_]+)-[0-9a-f]{6,}\.pth$")


def import_weights(folder: Path) -> list[str]:
    """Copy torchvision weight files (``<arch>-<hash>.pth``) from ``folder`` into the cache, each one
    checked to load as plain tensors first."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    imported = []
    for path in sorted(folder.glob("*.pth")):
        if not _WEIGHT_FILE.match(path.name):
            continue
        try:
            load_state_dict(path)
        except Exception as exc:  # pickled code, truncated files: refuse, say which
            raise ValueError(f"{path.name} is not a plain weight file ({exc})") from None
        cache_dir().mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, cache_dir() / path.name)
        imported.append(path.name)
    if not imported:
        raise ValueError(f"no torchvision weight files (<arch>-<hash>.pth) in {folder}")
    return imported
