"""torchvision classification networks as backbones: any band count, cached ImageNet weights when present."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from geotrain.training.models import pretrained


def with_bands(network: nn.Module, bands: int) -> None:
    """Give the network's first convolution ``bands`` inputs (same shape otherwise)."""
    name, first = next((n, m) for n, m in network.named_modules() if isinstance(m, nn.Conv2d))
    if first.in_channels == bands:
        return
    conv = nn.Conv2d(
        bands,
        first.out_channels,
        first.kernel_size,  # type: ignore[arg-type]
        first.stride,  # type: ignore[arg-type]
        first.padding,  # type: ignore[arg-type]
        bias=first.bias is not None,
    )
    parent_name, _, attr = name.rpartition(".")
    setattr(network.get_submodule(parent_name) if parent_name else network, attr, conv)


def classifier(arch: str, bands: int, num_classes: int, scheme: str) -> tuple[nn.Module, pretrained.BackboneWeights]:
    """torchvision's ``arch`` with a fresh ``num_classes`` head, ImageNet weights loaded when cached."""
    network: nn.Module = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    with_bands(network, bands)
    weights = pretrained.backbone_weights(arch, bands, scheme)
    if weights.state is not None:
        pretrained.load_into(network, weights, arch)
    return network, weights


class Trunk(nn.Module):
    """The convolutional part of a classification network: image in, its deepest feature map out."""

    def __init__(self, features: nn.Module, channels: int) -> None:
        super().__init__()
        self.features = features
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out


def trunk(arch: str, bands: int, scheme: str) -> tuple[Trunk, pretrained.BackboneWeights]:
    network, weights = classifier(arch, bands, 1000, scheme)
    if arch.startswith("resnet"):
        features: nn.Module = nn.Sequential(*(getattr(network, n) for n in ("conv1", "bn1", "relu", "maxpool")),
                                            *(getattr(network, f"layer{i}") for i in range(1, 5)))  # fmt: skip
    elif arch.startswith("densenet"):
        # DenseNet's features end in a BatchNorm; its classifier applies the ReLU
        features = nn.Sequential(network.get_submodule("features"), nn.ReLU(inplace=True))
    else:  # VGG, MobileNet
        features = network.get_submodule("features")
    features.eval()  # the probe must not move BatchNorm's running statistics
    with torch.no_grad():
        channels = int(features(torch.zeros(1, bands, 64, 64)).shape[1])
    features.train()
    return Trunk(features, channels), weights
