"""model_type -> how to build the network. Torch lives here, the catalogue of keywords in task/."""

from __future__ import annotations

from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from geotrain.training.models import pretrained, trunks

# Every backbone of these networks downsamples by 2**5: inputs are padded to a multiple of it.
OUTPUT_STRIDE = 32


@dataclass
class BuiltModel:
    network: nn.Module
    encoder: nn.Module
    pretrained_from: str | None  # the weights file, or None for random initialisation
    notes: list[str]


class TrunkDeepLab(nn.Module):
    """DeepLabV3's head (ASPP) on a backbone without dilated convolutions (DenseNet, VGG): it reads the
    stride-32 map, as arcgis.learn's DeepLab does for these backbones, and is upsampled to the chip."""

    def __init__(self, trunk: trunks.Trunk, num_classes: int) -> None:
        super().__init__()
        self.encoder = trunk
        self.head = DeepLabHead(trunk.channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build(model_type: str, backbone: str, bands: int, num_classes: int, weight_init_scheme: str) -> BuiltModel:
    arch = backbone.lower()
    if model_type == "DEEPLAB" and not arch.startswith("resnet"):
        trunk, trunk_weights = trunks.trunk(arch, bands, weight_init_scheme)
        return BuiltModel(TrunkDeepLab(trunk, num_classes), trunk, trunk_weights.source, trunk_weights.notes)
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
