"""geotrain's pixel classifiers rebuilt from their EMD with torch and torchvision only.

This file travels inside every .dlpk geotrain writes, beside the inference function that loads it, so it
must not import geotrain, segmentation-models-pytorch or timm: ArcGIS's Python is only sure to have torch,
torchvision and numpy. The networks are laid out module for module like the ones geotrain trains
(segmentation-models-pytorch 0.6 and geotrain's own heads), so the package's state dict loads into them
strictly; geotrain's tests check that their outputs match on the same chips.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

# inputs are padded to a multiple of this, and to at least twice it
OUTPUT_STRIDE = 32
UNET_DECODER = (256, 128, 64, 32, 16)
PSP_OUT = 512
DEEPLAB_CHANNELS = 256
DEEPLAB_RATES = (12, 24, 36)
POINT_HIDDEN = 256
INFER_POINTS = 8192


def _with_bands(module: nn.Module, bands: int) -> None:
    name, first = next((n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d))
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
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, conv)


def _dilate(stage: nn.Module, rate: int) -> None:
    for conv in stage.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)
            conv.dilation = (rate, rate)
            kh, kw = conv.kernel_size
            conv.padding = ((kh // 2) * rate, (kw // 2) * rate)


class Encoder(nn.Module):
    """A torchvision ResNet, DenseNet or VGG without its classifier, giving the feature maps at strides
    1, 2, 4, 8, 16 and 32 (fewer with a smaller ``depth``)."""

    def __init__(self, arch: str, bands: int, depth: int = 5, output_stride: int = 32) -> None:
        super().__init__()
        network = getattr(torchvision.models, arch)(weights=None)
        for name, child in network.named_children():
            if name not in ("fc", "avgpool", "classifier"):
                self.add_module(name, child)
        self.arch, self.depth = arch, depth
        _with_bands(self, bands)
        if arch.startswith("resnet") and output_stride < 32:
            # the deepest stages keep their resolution and widen their view instead
            if output_stride == 8:
                _dilate(self.get_submodule("layer3"), 2)
            _dilate(self.get_submodule("layer4"), 32 // output_stride)
        if arch.startswith("vgg"):
            layers = list(self.get_submodule("features").children())
            self.taps = [i - 1 for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)] + [len(layers) - 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.arch.startswith("resnet"):
            return self._resnet(x)
        if self.arch.startswith("densenet"):
            return self._densenet(x)
        features = []
        for i, module in enumerate(self.get_submodule("features").children()):
            x = module(x)
            if i in self.taps:
                features.append(x)
            if len(features) > self.depth:
                break
        return features[: self.depth + 1]

    def _resnet(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.get_submodule
        features = [x]
        x = m("relu")(m("bn1")(m("conv1")(x)))
        features.append(x)
        x = m("layer1")(m("maxpool")(x))
        features.append(x)
        for i in range(3, self.depth + 1):
            x = m(f"layer{i - 1}")(x)
            features.append(x)
        return features

    def _densenet(self, x: torch.Tensor) -> list[torch.Tensor]:
        def run(names: str, x: torch.Tensor) -> torch.Tensor:
            for name in names.split():
                x = self.get_submodule(f"features.{name}")(x)
            return x

        features = [x]
        x = run("conv0 norm0 relu0", x)
        features.append(x)
        x = run("pool0", x)
        for i in (1, 2, 3):
            if self.depth < i + 1:
                break
            if i > 1:
                x = run(f"transition{i - 1}.conv transition{i - 1}.pool", x)
            x = run(f"denseblock{i} transition{i}.norm transition{i}.relu", x)
            features.append(x)
        if self.depth >= 5:
            features.append(run("transition3.conv transition3.pool denseblock4 norm5", x))
        return features


def conv_relu(cin: int, cout: int, kernel: int, padding: int = 0, norm: bool = True) -> nn.Sequential:
    """Convolution, BatchNorm (or none, the convolution then has a bias), ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, bias=not norm),
        nn.BatchNorm2d(cout) if norm else nn.Identity(),
        nn.ReLU(inplace=True),
    )


class _Attention(nn.Module):
    """The place of segmentation-models-pytorch's (absent) attention in a U-Net block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class UnetBlock(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_relu(cin + skip, cout, 3, 1)
        self.attention1 = _Attention()
        self.conv2 = conv_relu(cout, cout, 3, 1)
        self.attention2 = _Attention()

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        out: torch.Tensor = self.conv2(self.conv1(x))
        return out


class UnetDecoder(nn.Module):
    def __init__(self, encoder_channels: list[int], center: bool) -> None:
        super().__init__()
        deep = encoder_channels[1:][::-1]
        ins = [deep[0], *UNET_DECODER[:-1]]
        skips = [*deep[1:], 0]
        if center:
            self.center: nn.Module = nn.Sequential(conv_relu(deep[0], deep[0], 3, 1), conv_relu(deep[0], deep[0], 3, 1))
        else:
            self.center = nn.Identity()
        self.blocks = nn.ModuleList(UnetBlock(i, s, o) for i, s, o in zip(ins, skips, UNET_DECODER, strict=True))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        sizes = [tuple(f.shape[2:]) for f in features][::-1]
        deep = features[1:][::-1]
        x = self.center(deep[0])
        for i, block in enumerate(self.blocks):
            skip = deep[i + 1] if i + 1 < len(deep) else None
            x = block(x, sizes[i + 1], skip)
        out: torch.Tensor = x
        return out


class PyramidBlock(nn.Module):
    def __init__(self, cin: int, cout: int, size: int) -> None:
        super().__init__()
        # a 1x1 pooled map cannot be batch-normalised
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(size), conv_relu(cin, cout, 1, norm=size != 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)


class Pyramid(nn.Module):
    def __init__(self, channels: int, sizes: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(PyramidBlock(channels, channels // len(sizes), s) for s in sizes)
        self.out_channels = channels + len(sizes) * (channels // len(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([*(block(x) for block in self.blocks), x], dim=1)


class PSPDecoder(nn.Module):
    def __init__(self, channels: int, sizes: list[int]) -> None:
        super().__init__()
        self.psp = Pyramid(channels, sizes)
        self.conv = conv_relu(self.psp.out_channels, PSP_OUT, 1)
        self.dropout = nn.Dropout2d(0.2)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.conv(self.psp(features[-1])))
        return out


def _bn_relu(conv: nn.Conv2d, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())


class _ImagePool(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        convs: list[nn.Module] = [_bn_relu(nn.Conv2d(cin, cout, 1, bias=False), cout)]
        convs += [_bn_relu(nn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False), cout) for r in DEEPLAB_RATES]
        convs.append(
            _ImagePool(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
        )
        self.convs = nn.ModuleList(convs)
        self.project = nn.Sequential(
            nn.Conv2d(5 * cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(torch.cat([conv(x) for conv in self.convs], dim=1))
        return out


class DeepLabDecoder(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.aspp = ASPP(cin, DEEPLAB_CHANNELS)
        self.conv = nn.Conv2d(DEEPLAB_CHANNELS, DEEPLAB_CHANNELS, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(DEEPLAB_CHANNELS)
        self.relu = nn.ReLU()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.bn(self.conv(self.aspp(features[-1]))))
        return out


def _head(cin: int, classes: int, kernel: int, upsampling: int = 1) -> nn.Sequential:
    up: nn.Module = nn.Upsample(scale_factor=upsampling, mode="bilinear", align_corners=True)
    return nn.Sequential(
        nn.Conv2d(cin, classes, kernel, padding=kernel // 2), up if upsampling > 1 else nn.Identity(), nn.Identity()
    )


def _channels(encoder: Encoder, bands: int) -> list[int]:
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        out = [int(f.shape[1]) for f in encoder(torch.zeros(1, bands, 64, 64))]
    encoder.train(was)
    return out


class EncoderDecoder(nn.Module):
    """An encoder, a decoder over its feature maps and a head; optionally a pyramid on the deepest map
    before a U-Net decoder (PSPNet with use_unet) and an auxiliary head (used in training only)."""

    def __init__(self, encoder: Encoder, decoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = head
        self.psp: nn.Module | None = None
        self.psp_merge: nn.Module | None = None
        self.aux_head: nn.Module | None = None  # trained alongside; not used to predict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        if self.psp is not None and self.psp_merge is not None:
            features[-1] = self.psp_merge(self.psp(features[-1]))
        out: torch.Tensor = self.segmentation_head(self.decoder(features))
        return out


class TrunkDeepLab(nn.Module):
    """DeepLabV3's head on the stride-32 map of a DenseNet or VGG."""

    def __init__(self, arch: str, bands: int, classes: int) -> None:
        super().__init__()
        network = getattr(torchvision.models, arch)(weights=None)
        _with_bands(network, bands)
        features: nn.Module = network.get_submodule("features")
        if arch.startswith("densenet"):
            features = nn.Sequential(features, nn.ReLU(inplace=True))
        self.encoder = nn.Module()
        self.encoder.features = features
        with torch.no_grad():
            channels = int(features.eval()(torch.zeros(1, bands, 64, 64)).shape[1])
        self.head = DeepLabHead(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder.get_submodule("features")(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PointRend(nn.Module):
    """A network whose most uncertain pixels a point head re-predicts from fine features and the
    coarse logits there."""

    def __init__(self, network: nn.Module, fine_module: str, fine_channels: int, classes: int) -> None:
        super().__init__()
        self.network = network
        self._fine: torch.Tensor | None = None
        network.get_submodule(fine_module).register_forward_hook(self._keep)
        self.point_head = nn.Sequential(
            nn.Conv1d(fine_channels + classes, POINT_HIDDEN, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(POINT_HIDDEN, POINT_HIDDEN, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(POINT_HIDDEN, classes, 1),
        )

    def _keep(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._fine = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network(x)
        assert self._fine is not None
        batch, classes, rows, cols = logits.shape
        top = logits.topk(2, dim=1).values
        index = (top[:, 1] - top[:, 0]).reshape(batch, -1).topk(min(INFER_POINTS, rows * cols), dim=1).indices
        coords = torch.stack([(index % cols + 0.5) / cols, (index // cols + 0.5) / rows], dim=2)
        grid = (2.0 * coords.unsqueeze(2) - 1.0).to(logits.dtype)

        def sample(values: torch.Tensor) -> torch.Tensor:
            return F.grid_sample(values, grid.to(values.dtype), align_corners=False).squeeze(3)

        points = self.point_head(torch.cat([sample(self._fine), sample(logits)], dim=1)).to(logits.dtype)
        flat = logits.reshape(batch, classes, -1).scatter(2, index.unsqueeze(1).expand(-1, classes, -1), points)
        return flat.reshape(batch, classes, rows, cols)


def pixel_classifier(emd: dict[str, Any]) -> nn.Module:
    """The network an ImageClassification EMD of geotrain describes, with random weights."""
    params = emd["ModelParameters"]
    arch = str(params["backbone"])
    bands = int(params["in_channels"])
    classes = len(emd["Classes"]) + 1  # and NoData
    kind = str(emd["ModelConfiguration"]).removeprefix("geotrain.").upper()
    network: nn.Module
    if kind == "DEEPLAB" and not arch.startswith("resnet"):
        network = TrunkDeepLab(arch, bands, classes)
    elif kind == "DEEPLAB":
        stride = int(params.get("output_stride", 8))
        encoder = Encoder(arch, bands, 5, stride)
        decoder = DeepLabDecoder(_channels(encoder, bands)[-1])
        network = EncoderDecoder(encoder, decoder, _head(DEEPLAB_CHANNELS, classes, 1, stride))
    elif kind == "PSPNET" and not params.get("use_unet", True):
        encoder = Encoder(arch, bands, 3)
        psp = PSPDecoder(_channels(encoder, bands)[-1], [int(s) for s in params["pyramid_sizes"]])
        network = EncoderDecoder(encoder, psp, _head(PSP_OUT, classes, 3, 8))
    else:  # UNET, PSPNET with use_unet
        encoder = Encoder(arch, bands)
        channels = _channels(encoder, bands)
        network = EncoderDecoder(encoder, UnetDecoder(channels, arch.startswith("vgg")), _head(16, classes, 3))
        if kind == "PSPNET":
            pyramid = Pyramid(channels[-1], [int(s) for s in params["pyramid_sizes"]])
            network.psp, network.psp_merge = pyramid, conv_relu(pyramid.out_channels, channels[-1], 1)
            if params.get("unet_aux_loss", False):
                network.aux_head = nn.Sequential(
                    conv_relu(channels[-2], 256, 3, 1), nn.Dropout2d(0.1), nn.Conv2d(256, classes, 1)
                )
    if params.get("pointrend", False):
        network = PointRend(network, str(params["pointrend_features"]), int(params["pointrend_channels"]), classes)
    return network
