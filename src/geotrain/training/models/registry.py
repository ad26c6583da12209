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
    arch = backbone.lower()
    match model_type:
        case "UNET":
            network: nn.Module = smp.Unet(
                encoder_name=arch, encoder_weights=None, in_channels=bands, classes=num_classes
            )
        case "PSPNET":
            network = smp.PSPNet(encoder_name=arch, encoder_weights=None, in_channels=bands, classes=num_classes)
        case "DEEPLAB":
            network = smp.DeepLabV3(encoder_name=arch, encoder_weights=None, in_channels=bands, classes=num_classes)
        case _:
            raise ValueError(f"model type {model_type} is not built")
    encoder: nn.Module = network.encoder  # type: ignore[assignment]
    weights = pretrained.backbone_weights(arch, bands, weight_init_scheme)
    if weights.state is not None:
        pretrained.load_into(encoder, weights, arch)
    return BuiltModel(network, encoder, weights.source, weights.notes)
