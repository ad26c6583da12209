"""model_type -> how to build the network. Torch lives here, the catalogue of keywords in task/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Conv2dReLU
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPModule
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from geotrain.dlpk.prf import geotrain_networks as portable
from geotrain.task import catalog
from geotrain.training.models import pretrained, trunks
from geotrain.training.models.pointrend import PointRend

PYRAMID_SIZES = (1, 2, 3, 6)  # PSPNet's pooling grids, arcgis.learn's default


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


def _pyramid(channels: int, sizes: tuple[int, ...]) -> tuple[PSPModule, int]:
    """smp's pyramid pooling module over ``sizes``, and how many channels it puts out."""
    return PSPModule(channels, sizes=sizes), channels + len(sizes) * (channels // len(sizes))


class PSPUnet(smp.Unet):  # type: ignore[misc]  # smp ships no types
    """arcgis.learn's PSPNet with ``use_unet``: the pyramid pooling module on the deepest features, then a
    U-Net decoder that upsamples with the encoder's skip connections instead of one bilinear step."""

    def __init__(self, pyramid_sizes: tuple[int, ...], aux_loss: bool, **unet: Any) -> None:
        super().__init__(**unet)
        deepest = self.encoder.out_channels[-1]
        self.psp, pooled = _pyramid(deepest, pyramid_sizes)
        # back to the encoder's width, which the decoder was built for
        self.psp_merge = Conv2dReLU(pooled, deepest, kernel_size=1)
        # unet_aux_loss: PSPNet's auxiliary head, on the stride-16 features, trained alongside
        self.aux_head: nn.Module | None = None
        if aux_loss:
            self.aux_head = nn.Sequential(
                Conv2dReLU(self.encoder.out_channels[-2], 256, kernel_size=3, padding=1),
                nn.Dropout2d(0.1),
                nn.Conv2d(256, unet["classes"], kernel_size=1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        middle = features[-2]
        features[-1] = self.psp_merge(self.psp(features[-1]))
        out: torch.Tensor = self.segmentation_head(self.decoder(features))
        if self.training and self.aux_head is not None:
            aux = F.interpolate(self.aux_head(middle), size=out.shape[-2:], mode="bilinear", align_corners=False)
            return out, aux
        return out


def _pspnet(arch: str, bands: int, num_classes: int, arguments: dict[str, Any]) -> nn.Module:
    sizes = tuple(int(s) for s in arguments.get("pyramid_sizes", PYRAMID_SIZES))
    common = {"encoder_name": arch, "encoder_weights": None, "in_channels": bands, "classes": num_classes}
    if arguments.get("use_unet", arguments.get("use_net", True)):
        return PSPUnet(sizes, bool(arguments.get("unet_aux_loss", False)), **common)
    network: nn.Module = smp.PSPNet(**common)
    if sizes != PYRAMID_SIZES:
        deepest = int(network.encoder.out_channels[-1])  # type: ignore[index, union-attr]
        decoder = network.get_submodule("decoder")
        decoder.psp, pooled = _pyramid(deepest, sizes)
        width = decoder.get_submodule("conv.0").out_channels
        decoder.conv = Conv2dReLU(pooled, width, kernel_size=1)
    return network


def deeplab_output_stride(arguments: dict[str, Any]) -> int:
    """arcgis.learn: with pointrend the ResNet gives up half its dilation (the point head recovers the
    detail) unless keep_dilation asks to keep it, at the cost of memory."""
    coarser = arguments.get("pointrend", False) and not arguments.get("keep_dilation", False)
    return 16 if coarser else 8


def build(
    model_type: str,
    backbone: str,
    bands: int,
    num_classes: int,
    weight_init_scheme: str,
    arguments: dict[str, Any] | None = None,
) -> BuiltModel:
    """``arguments``: the request's model arguments (PSPNET reads use_unet and pyramid_sizes, PSPNET and
    DEEPLAB pointrend, DEEPLAB keep_dilation)."""
    arguments = arguments or {}
    built = _build(model_type, backbone.lower(), bands, num_classes, weight_init_scheme, arguments)
    if arguments.get("pointrend", False):
        built.network = PointRend(built.network, built.encoder, bands, num_classes)
    return built


def _build(
    model_type: str, arch: str, bands: int, num_classes: int, weight_init_scheme: str, arguments: dict[str, Any]
) -> BuiltModel:
    if model_type == "CHANGEDETECTOR":
        # both dates' bands come stacked; one encoder reads each date
        attention = str(arguments.get("attention_type", "PAM"))
        change = portable.ChangeNet(arch, bands // 2, num_classes, attention)
        return with_weights(change, change.encoder, arch, bands // 2, weight_init_scheme)
    if model_type in ("MULTITASK_ROADEXTRACTOR", "CONNECTNET"):
        from geotrain.training.roads import MTL_MODEL, ORIENT_BIN_SIZE, aux_channels

        extra = aux_channels(model_type, int(arguments.get("orient_bin_size", ORIENT_BIN_SIZE)))
        if arguments.get("mtl_model", MTL_MODEL) == "hourglass":
            hourglass = portable.HourglassRoadNet(bands, num_classes, extra)
            note = "The stacked hourglass has layers of its own (no backbone): it starts from random initialisation."
            return BuiltModel(hourglass, hourglass.stem, None, [note])
        roads = portable.RoadNet(arch, bands, num_classes, extra)
        return with_weights(roads, roads.encoder, arch, bands, weight_init_scheme)
    if model_type in ("HED_EDGEDETECTOR", "BDCN_EDGEDETECTOR"):
        edges = portable.EdgeNet(arch, bands, model_type.split("_")[0])
        return with_weights(edges, edges.encoder, arch, bands, weight_init_scheme)
    if model_type == "MMSEGMENTATION":
        from geotrain.training.models.openmmlab import build_mmseg

        return build_mmseg(catalog.openmmlab_model(model_type, arguments), arch, bands, num_classes)
    if model_type == "DEEPLAB" and not arch.startswith("resnet"):
        trunk, trunk_weights = trunks.trunk(arch, bands, weight_init_scheme)
        return BuiltModel(TrunkDeepLab(trunk, num_classes), trunk, trunk_weights.source, trunk_weights.notes)
    match model_type:
        case "UNET":
            network: nn.Module = smp.Unet(
                encoder_name=arch, encoder_weights=None, in_channels=bands, classes=num_classes
            )
        case "PSPNET":
            network = _pspnet(arch, bands, num_classes, arguments)
        case "DEEPLAB":
            network = smp.DeepLabV3(
                encoder_name=arch,
                encoder_weights=None,
                in_channels=bands,
                classes=num_classes,
                encoder_output_stride=deeplab_output_stride(arguments),
            )
        case _:
            raise ValueError(f"model type {model_type} is not built")
    encoder: nn.Module = network.encoder  # type: ignore[assignment]
    return with_weights(network, encoder, arch, bands, weight_init_scheme)


def with_weights(
    network: nn.Module, encoder: nn.Module, arch: str, bands: int, scheme: str, dropped: tuple[str, ...] = ()
) -> BuiltModel:
    """``network`` with its encoder's cached ImageNet weights loaded, where there are any; ``dropped``: the
    stages the encoder was built without (their weights are not loaded)."""
    weights = pretrained.backbone_weights(arch, bands, scheme)
    if weights.state is not None:
        if dropped:
            kept = {k: v for k, v in weights.state.items() if not k.startswith(tuple(f"{d}." for d in dropped))}
            weights = pretrained.BackboneWeights(kept, weights.source, weights.notes)
        pretrained.load_into(encoder, weights, arch)
    return BuiltModel(network, encoder, weights.source, weights.notes)
