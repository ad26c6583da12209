"""model_type -> how to build the network. Torch lives here, the catalogue of keywords in task/."""

from __future__ import annotations

from dataclasses import dataclass

import segmentation_models_pytorch as smp
from torch import nn

from geotrain.training.models import pretrained

# Every backbone of these networks downsamples by 2**5: inputs are padded to a multiple of it.
OUTPUT_STRIDE = 32


@dataclass
class BuiltModel:
    network: nn.Module
    encoder: nn.Module
    pretrained_from: str | None  # the weights file, or None for random initialisation
    notes: list[str]


def build(model_type: str, backbone: str, bands: int, num_classes: int, weight_init_scheme: str) -> BuiltModel:
    match model_type:
        case "UNET":
            return _unet(backbone.lower(), bands, num_classes, weight_init_scheme)
        case _:
            raise ValueError(f"model type {model_type} is not built")


def _unet(arch: str, bands: int, num_classes: int, scheme: str) -> BuiltModel:
    network = smp.Unet(encoder_name=arch, encoder_weights=None, in_channels=bands, classes=num_classes)
    notes: list[str] = []
    source = pretrained.find_cached(arch)
    if source is None:
        notes.append(
            f"No ImageNet weights for {arch} in {pretrained.cache_dir()}; the backbone starts from random "
            "initialisation. Put torchvision's weight file there to start from ImageNet."
        )
        return BuiltModel(network, network.encoder, None, notes)
    state = {k: v for k, v in pretrained.load_state_dict(source).items() if not k.startswith("fc.")}
    if bands != 3:
        state["conv1.weight"] = pretrained.adapt_first_conv(state["conv1.weight"], bands, scheme)
        notes.append(f"First layer adapted to {bands} bands ({scheme}).")
    # nn.Module's own loader: smp's override drops the result that says what did not fit
    missing, unexpected = nn.Module.load_state_dict(network.encoder, state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source.name} does not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    notes.append(f"Backbone {arch} starts from ImageNet weights ({source.name}).")
    return BuiltModel(network, network.encoder, source.name, notes)
