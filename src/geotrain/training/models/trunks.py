"""torchvision classification networks as backbones: any band count, cached ImageNet weights when present."""

from __future__ import annotations

import torchvision
from torch import nn

from geotrain.dlpk.prf.geotrain_networks import Trunk, backbone_body, make_trunk, trunk_features, with_bands
from geotrain.training.models import pretrained

__all__ = ["Trunk", "classifier", "trunk", "with_bands"]


def classifier(arch: str, bands: int, num_classes: int, scheme: str) -> tuple[nn.Module, pretrained.BackboneWeights]:
    """torchvision's ``arch`` with a fresh ``num_classes`` head, ImageNet weights loaded when cached."""
    network: nn.Module = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    with_bands(network, bands)
    weights = pretrained.backbone_weights(arch, bands, scheme)
    if weights.state is not None:
        pretrained.load_into(network, weights, arch)
    return network, weights


def trunk(arch: str, bands: int, scheme: str) -> tuple[Trunk, pretrained.BackboneWeights]:
    """``arch``'s feature layers (no head), ImageNet weights loaded when cached."""
    network = backbone_body(arch)
    with_bands(network, bands)
    weights = pretrained.backbone_weights(arch, bands, scheme)
    if weights.state is not None:
        pretrained.load_into(network, weights, arch)
    return make_trunk(trunk_features(network, arch), bands), weights
