"""geotrain's networks rebuilt from their EMD with torch and torchvision only: the pixel classifiers (UNET,
PSPNET, DEEPLAB; CHANGEDETECTOR, HED_EDGEDETECTOR, BDCN_EDGEDETECTOR, MULTITASK_ROADEXTRACTOR and CONNECTNET,
which geotrain builds from this file too), the image translators (SUPERRESOLUTION, PIX2PIX, PIX2PIXHD,
CYCLEGAN; built from here too), the object classifier (FEATURE_CLASSIFIER) and the detectors (FASTERRCNN,
MASKRCNN, RETINANET, SSD, YOLOV3). MMSEGMENTATION and MMDETECTION packages rebuild OpenMMLab's models from their
EMD's config here, where OpenMMLab is installed (imported only then).

This file travels inside every .dlpk geotrain writes that has an inference function, beside it, so it must
not import geotrain, segmentation-models-pytorch or timm: ArcGIS's Python is only sure to have torch,
torchvision and numpy. The pixel classifiers are laid out module for module like the ones geotrain trains
(segmentation-models-pytorch 0.6 and geotrain's own heads); the detectors' own pieces (anchors, grid
features, the PointRend mask head, YOLOv3 and its DarkNet53) are defined here and geotrain's builder uses
them. Either way the package's state dict loads strictly, and geotrain's tests check that the outputs match
on the same input.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.ops import batched_nms, box_convert, generalized_box_iou
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

# inputs are padded to a multiple of this, and to at least twice it
OUTPUT_STRIDE = 32
UNET_DECODER = (256, 128, 64, 32, 16)
PSP_OUT = 512
DEEPLAB_CHANNELS = 256
DEEPLAB_RATES = (12, 24, 36)
POINT_HIDDEN = 256
INFER_POINTS = 8192


def with_bands(module: nn.Module, bands: int) -> None:
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


def pad_to_stride(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``x`` padded at the bottom and right to a multiple of ``OUTPUT_STRIDE``, and to at least two strides
    (BatchNorm cannot train on a 1x1 bottleneck when a batch holds a single chip); the rows and columns added.
    Training and the inference function pad alike, so the package predicts what the trained model does."""
    rows, cols = x.shape[-2:]
    pad_r = max((-rows) % OUTPUT_STRIDE, 2 * OUTPUT_STRIDE - rows)
    pad_c = max((-cols) % OUTPUT_STRIDE, 2 * OUTPUT_STRIDE - cols)
    if pad_r or pad_c:
        x = F.pad(x, (0, pad_c, 0, pad_r), mode="reflect" if min(rows, cols) > max(pad_r, pad_c) else "constant")
    return x, pad_r, pad_c


def filter_detections(found: dict[str, torch.Tensor], threshold: float, overlap: float) -> dict[str, torch.Tensor]:
    """A detector's output for one image kept above ``threshold``, then per class without the less confident
    of two detections overlapping more than ``overlap`` (IoU), most confident first."""
    keep = found["scores"] >= threshold
    found = {k: v[keep] for k, v in found.items()}
    keep = batched_nms(found["boxes"].float(), found["scores"].float(), found["labels"], overlap)
    return {k: v[keep] for k, v in found.items()}


def point_sample(values: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``values`` ``[B, C, H, W]`` read at ``coords`` ``[B, N, 2]`` (x, y in 0..1) -> ``[B, C, N]``."""
    grid = 2.0 * coords.unsqueeze(2) - 1.0
    return F.grid_sample(values, grid.to(values.dtype), mode=mode, align_corners=False).squeeze(3)


def point_mlp(in_channels: int, classes: int) -> nn.Sequential:
    """PointRend's point head: an MLP over points (as 1x1 convolutions), features in, class logits out."""
    return nn.Sequential(
        nn.Conv1d(in_channels, POINT_HIDDEN, 1),
        nn.ReLU(inplace=True),
        nn.Conv1d(POINT_HIDDEN, POINT_HIDDEN, 1),
        nn.ReLU(inplace=True),
        nn.Conv1d(POINT_HIDDEN, classes, 1),
    )


def _dilate(stage: nn.Module, rate: int) -> None:
    for conv in stage.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)
            conv.dilation = (rate, rate)
            kh, kw = conv.kernel_size
            conv.padding = ((kh // 2) * rate, (kw // 2) * rate)


# torchvision's layer plans of its VGGs
VGG_PLANS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def backbone_body(arch: str) -> nn.Module:
    """torchvision's ``arch`` with random weights, without what a backbone drops: a VGG is built as its
    ``features`` alone, initialised as torchvision initialises them (building its classifier's 120 million
    weights took a second, to be thrown away)."""
    if not arch.startswith("vgg"):
        network: nn.Module = getattr(torchvision.models, arch)(weights=None)
        return network
    from torchvision.models import vgg

    features = vgg.make_layers(vgg.cfgs[VGG_PLANS[arch.removesuffix("_bn")]], batch_norm=arch.endswith("_bn"))
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    body = nn.Module()
    body.add_module("features", features)
    return body


class Encoder(nn.Module):
    """A torchvision ResNet, DenseNet or VGG without its classifier, giving the feature maps at strides
    1, 2, 4, 8, 16 and 32 (fewer with a smaller ``depth``)."""

    def __init__(self, arch: str, bands: int, depth: int = 5, output_stride: int = 32) -> None:
        super().__init__()
        network = backbone_body(arch)
        for name, child in network.named_children():
            if name not in ("fc", "avgpool", "classifier"):
                self.add_module(name, child)
        self.arch, self.depth = arch, depth
        with_bands(self, bands)
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
        network = backbone_body(arch)
        with_bands(network, bands)
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
        self.point_head = point_mlp(fine_channels + classes, classes)

    def _keep(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._fine = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network(x)
        assert self._fine is not None
        batch, classes, rows, cols = logits.shape
        top = logits.topk(2, dim=1).values
        index = (top[:, 1] - top[:, 0]).reshape(batch, -1).topk(min(INFER_POINTS, rows * cols), dim=1).indices
        coords = torch.stack([(index % cols + 0.5) / cols, (index // cols + 0.5) / rows], dim=2)
        sampled = [point_sample(self._fine, coords), point_sample(logits, coords)]
        points = self.point_head(torch.cat(sampled, dim=1)).to(logits.dtype)
        flat = logits.reshape(batch, classes, -1).scatter(2, index.unsqueeze(1).expand(-1, classes, -1), points)
        return flat.reshape(batch, classes, rows, cols)


# STANet's self-attention: BAM attends over the whole map, PAM within each cell of 1x1, 2x2, 4x4 and 8x8 grids
ATTENTION_SCALES = {"BAM": (1,), "PAM": (1, 2, 4, 8)}


class RegionAttention(nn.Module):
    """Self-attention among the positions of each cell of an s x s grid laid over the map, for every s of
    ``scales``, merged and added back to the map (scaled by a learned gain that starts at 0)."""

    def __init__(self, channels: int, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.scales = scales
        keys = max(channels // 8, 8)
        self.query = nn.Conv2d(channels, keys, 1)
        self.key = nn.Conv2d(channels, keys, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.merge = nn.Conv2d(channels * len(scales), channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _attend(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        n, c, h, w = x.shape
        grid_r, grid_c = min(scale, h), min(scale, w)  # a map smaller than the grid: one position a cell
        padded = F.pad(x, (0, (-w) % grid_c, 0, (-h) % grid_r))
        rows, cols = padded.shape[-2:]
        cell_r, cell_c = rows // grid_r, cols // grid_c

        def cells(t: torch.Tensor) -> torch.Tensor:  # n, k, rows, cols -> n * cells, k, positions
            k = t.shape[1]
            t = t.reshape(n, k, grid_r, cell_r, grid_c, cell_c).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(n * grid_r * grid_c, k, cell_r * cell_c)

        q, k, v = cells(self.query(padded)), cells(self.key(padded)), cells(self.value(padded))
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(q.shape[1]), dim=-1)
        out = (v @ weights.transpose(1, 2)).reshape(n, grid_r, grid_c, c, cell_r, cell_c)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(n, c, rows, cols)[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged: torch.Tensor = self.merge(torch.cat([self._attend(x, s) for s in self.scales], dim=1))
        return x + self.gamma * merged


class ChangeNet(nn.Module):
    """Change detection on two dates stacked band-wise (``bands`` of the first, then as many of the second),
    as ArcGIS's Detect Change Using Deep Learning hands them over. One encoder reads both dates (siamese); the
    deepest maps of the two, side by side, go through self-attention together (STANet's BAM or PAM), so a
    place attends to itself and its surroundings at the other date; a U-Net decoder reads each level's
    |difference| and sum and classifies every pixel into the change classes."""

    def __init__(self, arch: str, bands: int, classes: int, attention: str = "PAM") -> None:
        super().__init__()
        self.bands = bands
        self.encoder = Encoder(arch, bands)
        channels = _channels(self.encoder, bands)
        self.attention = RegionAttention(channels[-1], ATTENTION_SCALES[attention])
        self.decoder = UnetDecoder([2 * c for c in channels], arch.startswith("vgg"))
        self.segmentation_head = _head(16, classes, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        levels = self.encoder(torch.cat([x[:, : self.bands], x[:, self.bands :]], dim=0))  # both dates at once
        deepest = levels[-1]
        width = deepest.shape[3]
        joined = self.attention(torch.cat([deepest[:n], deepest[n:]], dim=3))
        levels[-1] = torch.cat([joined[..., :width], joined[..., width:]], dim=0)
        fused = [torch.cat([(f[:n] - f[n:]).abs(), f[:n] + f[n:]], dim=1) for f in levels]
        out: torch.Tensor = self.segmentation_head(self.decoder(fused))
        return out


BDCN_WIDTH = 32
BDCN_RATES = (4, 8, 12)


class ScaleEnhancement(nn.Module):
    """BDCN's scale enhancement module: a level's features through parallel dilated convolutions, summed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = conv_relu(channels, BDCN_WIDTH, 3, 1)
        self.dilated = nn.ModuleList(nn.Conv2d(BDCN_WIDTH, BDCN_WIDTH, 3, padding=r, dilation=r) for r in BDCN_RATES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        out: torch.Tensor = x
        for conv in self.dilated:
            out = out + conv(x)
        return out


class EdgeNet(nn.Module):
    """HED: a side output (1x1 convolution) on each level of the backbone, upsampled to the chip, all of them
    fused by a 1x1 convolution. BDCN: each level's scale enhancement module gives two side maps, summed in
    two cascades, shallow to deep and deep to shallow, each stage supervised; all of them fused the same way.
    ``side_logits`` gives what training supervises (every side output, the fused one last); the network's
    output is two class scores a pixel, NoData 0 and the fused edge logit, as a pixel classifier's."""

    def __init__(self, arch: str, bands: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.encoder = Encoder(arch, bands)
        channels = _channels(self.encoder, bands)[1:]  # strides 2 to 32
        if kind == "HED":
            self.sides = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in channels)
            outputs = len(channels)
        else:
            self.enhance = nn.ModuleList(ScaleEnhancement(c) for c in channels)
            self.sides = nn.ModuleList(nn.Conv2d(BDCN_WIDTH, 2, 1) for _ in channels)
            outputs = 2 * len(channels)
        self.fuse = nn.Conv2d(outputs, 1, 1)

    def side_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        levels = self.encoder(x)[1:]
        if self.kind == "HED":
            sides = [up(side(f)) for side, f in zip(self.sides, levels, strict=True)]
        else:
            maps = [up(side(enhance(f))) for side, enhance, f in zip(self.sides, self.enhance, levels, strict=True)]
            shallow = torch.cumsum(torch.stack([m[:, :1] for m in maps]), dim=0)  # levels 1..i
            deep = torch.cumsum(torch.stack([m[:, 1:] for m in maps][::-1]), dim=0).flip(0)  # levels i..last
            sides = [*shallow.unbind(0), *deep.unbind(0)]
        return [*sides, self.fuse(torch.cat(sides, dim=1))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edge = self.side_logits(x)[-1]
        return torch.cat([torch.zeros_like(edge), edge], dim=1)


class RoadNet(nn.Module):
    """Road extraction: a U-Net (LinkNet-like: a ResNet's levels joined back on the way up) with the road
    classes' head and a second head trained beside it on what the road masks imply (MULTITASK_ROADEXTRACTOR:
    each road pixel's direction, binned; CONNECTNET: whether each of 8 neighbours a few pixels away is road
    too). The second head sharpens the shared features; the output is the classes' scores alone."""

    def __init__(self, arch: str, bands: int, classes: int, aux_channels: int) -> None:
        super().__init__()
        self.encoder = Encoder(arch, bands)
        self.decoder = UnetDecoder(_channels(self.encoder, bands), arch.startswith("vgg"))
        self.segmentation_head = _head(UNET_DECODER[-1], classes, 3)
        self.aux_head = _head(UNET_DECODER[-1], aux_channels, 3)

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.decoder(self.encoder(x))
        return self.segmentation_head(shared), self.aux_head(shared)

    def stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.both(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.segmentation_head(self.decoder(self.encoder(x)))
        return out


class MaskNet(nn.Module):
    """Panoptic segmentation as MaX-DeepLab frames it: ``queries`` learned mask queries, refined by a transformer
    decoder reading the backbone's deepest map, each predicting a class (or none) and a mask as its dot product
    with every pixel's embedding from a U-Net decoder. Smaller than MaX-DeepLab (no dual-path transformer
    inside the backbone): the same outputs, trained the same way (each query matched to a segment)."""

    def __init__(self, arch: str, bands: int, classes: int, queries: int = 30, dim: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(arch, bands)
        channels = _channels(self.encoder, bands)
        self.decoder = UnetDecoder(channels, arch.startswith("vgg"))
        self.pixels = nn.Conv2d(UNET_DECODER[-1], dim, 1)
        self.memory = nn.Conv2d(channels[-1], dim, 1)
        self.queries = nn.Embedding(queries, dim)
        layer = nn.TransformerDecoderLayer(dim, 4, dim * 4, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerDecoder(layer, layers)
        self.classify = nn.Linear(dim, classes + 1)  # the classes 1..K at 0..K-1, then "no segment"

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's class logits (batch x queries x classes + 1) and mask logits (batch x queries x rows x
        cols); ``x`` padded to a multiple of 32."""
        features = self.encoder(x)
        pixels = self.pixels(self.decoder(features)).float()
        memory = self.memory(features[-1]).flatten(2).transpose(1, 2).float()
        queries = self.transformer(self.queries.weight[None].expand(len(x), -1, -1).float(), memory)
        return self.classify(queries), torch.einsum("bqd,bdhw->bqhw", queries, pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each pixel's class index (0: no segment) and segment (0: none), as two channels of longs."""
        rows, cols = x.shape[-2:]
        padded, _, _ = pad_to_stride(x)
        logits, masks = self.both(padded)
        return panoptic_maps(logits, masks[..., :rows, :cols])


def panoptic_maps(logits: torch.Tensor, masks: torch.Tensor, least: float = 0.5) -> torch.Tensor:
    """MaX-DeepLab's reading of the queries: each pixel goes to the query whose class certainty times mask
    probability is highest there, taking that query's class and its number (query + 1) as the segment;
    pixels whose best score is under ``least`` and queries that predict "no segment" give 0."""
    chance, label = logits.float().softmax(-1)[..., :-1].max(-1)  # batch x queries (the best real class)
    score = chance[..., None, None] * masks.float().sigmoid()
    best, query = score.max(1)  # batch x rows x cols
    classes = torch.gather(label + 1, 1, query.flatten(1)).view_as(query)
    keep = best >= least
    return torch.stack([torch.where(keep, classes, 0), torch.where(keep, query + 1, 0)], 1)


class _Hourglass(nn.Module):
    """One hourglass: halve, recurse ``depth`` times, come back up and add what was kept at each scale."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.keep, self.down = _ReidBlock(width, width, 1), _ReidBlock(width, width, 2)
        self.inner: nn.Module = _Hourglass(depth - 1, width) if depth > 1 else _ReidBlock(width, width, 1)
        self.after = _ReidBlock(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.after(self.inner(self.down(x)))
        out: torch.Tensor = self.keep(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")
        return out


def _full_head(width: int, channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False), nn.Conv2d(32, channels, 3, padding=1),
    )  # fmt: skip


class HourglassRoadNet(nn.Module):
    """Road extraction with stacked hourglasses (arcgis.learn's default ``mtl_model``, after Batra et al.'s
    orientation-and-segmentation network): a stem to a quarter of the size, ``stacks`` hourglasses each
    refining the last one's output, and the two heads of `RoadNet` upsampled back. Its own layers: no backbone."""

    def __init__(self, bands: int, classes: int, aux_channels: int, stacks: int = 2, width: int = 128) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(bands, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            _ReidBlock(64, width, 2),
        )  # fmt: skip
        self.stacks = nn.ModuleList(_Hourglass(3, width) for _ in range(stacks))
        self.merges = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(stacks - 1))
        self.segmentation_head, self.aux_head = _full_head(width, classes), _full_head(width, aux_channels)

    def _heads(self, shared: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        seg = F.interpolate(self.segmentation_head(shared), size=size, mode="bilinear", align_corners=False)
        return seg, F.interpolate(self.aux_head(shared), size=size, mode="bilinear", align_corners=False)

    def stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every stack's output read by the heads (segmentation, auxiliary task), the last one's being the
        network's: stacked hourglasses are trained on each stack's (intermediate supervision)."""
        y: torch.Tensor = self.stem(x)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        outputs = []
        for i, hourglass in enumerate(self.stacks):
            out: torch.Tensor = hourglass(y)
            outputs.append(self._heads(out, size))
            y = y + self.merges[i](out) if i < len(self.merges) else out
        return outputs

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y: torch.Tensor = self.stem(x)
        for i, hourglass in enumerate(self.stacks):
            out: torch.Tensor = hourglass(y)
            y = y + self.merges[i](out) if i < len(self.merges) else out
        return self._heads(y, (int(x.shape[-2]), int(x.shape[-1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.both(x)[0]


class Translator(nn.Module):
    """Image to image: a U-Net over a torchvision backbone giving ``out_bands`` values a pixel.
    ``residual``: the output is added to the input (super-resolution restores what a coarse copy lost)."""

    def __init__(self, arch: str, in_bands: int, out_bands: int, residual: bool) -> None:
        super().__init__()
        self.encoder = Encoder(arch, in_bands)
        self.decoder = UnetDecoder(_channels(self.encoder, in_bands), arch.startswith("vgg"))
        self.head = nn.Conv2d(UNET_DECODER[-1], out_bands, 3, padding=1)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.decoder(self.encoder(x)))
        return x + out if self.residual else out


class ResnetBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.block(x)
        return out


class ResnetGenerator(nn.Module):
    """CycleGAN's generator (pix2pixHD's global one is the same with ``downsample`` 4): a 7x7 convolution,
    ``downsample`` stride-2 convolutions, ``blocks`` residual blocks, as many transposed convolutions back up
    and a 7x7 convolution out, instance-normalised."""

    def __init__(self, in_bands: int, out_bands: int, blocks: int, width: int = 64, downsample: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_bands, width, 7), nn.InstanceNorm2d(width), nn.ReLU(True)
        ]  # fmt: skip
        c = width
        for _ in range(downsample):
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
            c *= 2
        layers += [ResnetBlock(c) for _ in range(blocks)]
        for _ in range(downsample):
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1),
                nn.InstanceNorm2d(c // 2),
                nn.ReLU(True),
            ]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, out_bands, 7)]
        self.model = nn.Sequential(*layers)
        self.multiple = 2**downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, rows, cols = _padded_to(x, self.multiple)
        out: torch.Tensor = self.model(padded)
        return out[..., :rows, :cols]


def _padded_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """``x`` with its last rows and columns repeated to a multiple of ``multiple`` (each halving then doubles back
    to the same size), at least twice it (the residual blocks' reflection needs 2 pixels), and its own rows and
    columns."""
    rows, cols = int(x.shape[-2]), int(x.shape[-1])
    pad_r = max((-rows) % multiple, 2 * multiple - rows)
    pad_c = max((-cols) % multiple, 2 * multiple - cols)
    if pad_r or pad_c:
        x = F.pad(x, (0, pad_c, 0, pad_r), mode="replicate")
    return x, rows, cols


def _enhancer(in_bands: int, out_bands: int, width: int, blocks: int, last: bool) -> nn.ModuleDict:
    down = nn.Sequential(
        nn.ReflectionPad2d(3), nn.Conv2d(in_bands, width, 7), nn.InstanceNorm2d(width), nn.ReLU(True),
        nn.Conv2d(width, 2 * width, 3, 2, 1), nn.InstanceNorm2d(2 * width), nn.ReLU(True),
    )  # fmt: skip
    up: list[nn.Module] = [ResnetBlock(2 * width) for _ in range(blocks)]
    up += [nn.ConvTranspose2d(2 * width, width, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(width), nn.ReLU(True)]
    if last:
        up += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_bands, 7)]
    return nn.ModuleDict({"down": down, "up": nn.Sequential(*up)})


class LocalEnhancerGenerator(nn.Module):
    """pix2pixHD's generator with ``enhancers`` local enhancers: the global generator (``width`` times
    2^enhancers filters first, without its output layer) reads the input 2^enhancers times coarser; each enhancer,
    from the coarsest, reads the input at its own scale, adds what the stage before it made, runs ``blocks``
    residual blocks and doubles the size; the last one gives the image."""

    def __init__(
        self, in_bands: int, out_bands: int, blocks: int, width: int = 32, downsample: int = 4, enhancers: int = 1,
        local_blocks: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        coarse = ResnetGenerator(in_bands, out_bands, blocks, width * 2**enhancers, downsample)
        self.global_model = nn.Sequential(*list(coarse.model.children())[:-2])
        self.enhancers = nn.ModuleList(
            _enhancer(in_bands, out_bands, width * 2 ** (enhancers - n), local_blocks, n == enhancers)
            for n in range(1, enhancers + 1)
        )
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.multiple = 2 ** (downsample + enhancers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, rows, cols = _padded_to(x, self.multiple)
        scales = [padded]
        for _ in self.enhancers:
            scales.append(self.pool(scales[-1]))
        out: torch.Tensor = self.global_model(scales[-1])
        for n, enhancer in enumerate(self.enhancers, start=1):
            down, up = enhancer.get_submodule("down"), enhancer.get_submodule("up")
            out = up(down(scales[len(self.enhancers) - n]) + out)
        return out[..., :rows, :cols]


# a caption vocabulary's first four words
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_WORDS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CaptionNet(nn.Module):
    """Show, attend and tell: a ResNet's deepest feature map, read by an LSTM that attends over its cells
    before each word (arcgis.learn's ImageCaptioner has this shape, with its sizes)."""

    def __init__(
        self, arch: str, bands: int, words: int, embed: int = 100, hidden: int = 100, attention: int = 100,
        dropout: float = 0.1, teacher_forcing: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder = Encoder(arch, bands)
        channels = _channels(self.encoder, bands)[-1]
        self.teacher_forcing = teacher_forcing
        self.embed = nn.Embedding(words, embed, padding_idx=PAD)
        self.start_h, self.start_c = nn.Linear(channels, hidden), nn.Linear(channels, hidden)
        self.keys, self.query = nn.Linear(channels, attention), nn.Linear(hidden, attention)
        self.score = nn.Linear(attention, 1)
        self.cell = nn.LSTMCell(embed + channels, hidden)
        self.drop = nn.Dropout(dropout)
        self.words = nn.Linear(hidden, words)

    def _cells(self, x: torch.Tensor) -> torch.Tensor:
        deepest: torch.Tensor = self.encoder(x)[-1]
        return deepest.flatten(2).transpose(1, 2).float()  # batch x cells x channels

    def _step(
        self, cells: torch.Tensor, keys: torch.Tensor, word: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        weights = self.score(torch.tanh(keys + self.query(state[0])[:, None])).squeeze(-1).softmax(1)
        context = (weights[..., None] * cells).sum(1)
        h, c = self.cell(torch.cat([self.embed(word), context], 1), state)
        return self.words(self.drop(h)), (h, c)

    def _start(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        cells = self._cells(x)
        mean = cells.mean(1)
        return cells, self.keys(cells), (torch.tanh(self.start_h(mean)), torch.tanh(self.start_c(mean)))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Each next word's logits (batch x steps x words) given the caption so far: ``tokens`` from <bos>;
        in training a word is the true one with the teacher_forcing chance, else the network's own guess."""
        cells, keys, state = self._start(x)
        word, out = tokens[:, 0], []
        for t in range(tokens.shape[1] - 1):
            logits, state = self._step(cells, keys, word, state)
            out.append(logits)
            word = tokens[:, t + 1]
            if self.training and self.teacher_forcing < 1:
                own = torch.rand(word.shape, device=word.device) >= self.teacher_forcing
                word = torch.where(own, logits.argmax(1), word)
        return torch.stack(out, 1)

    @torch.no_grad()
    def caption(self, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy captions: word ids (batch x steps, <eos> and after as <pad>) and each word's probability."""
        cells, keys, state = self._start(x)
        word = torch.full((len(x),), BOS, dtype=torch.long, device=x.device)
        ended = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        ids, chances = [], []
        for _ in range(steps):
            logits, state = self._step(cells, keys, word, state)
            chance, word = logits.float().softmax(1).max(1)
            word = torch.where(ended, torch.full_like(word, PAD), word)
            ended |= word == EOS
            ids.append(torch.where(word == EOS, torch.full_like(word, PAD), word))
            chances.append(chance)
            if bool(ended.all()):
                break
        return torch.stack(ids, 1), torch.stack(chances, 1)


def describe_captions(network: CaptionNet, x: torch.Tensor, steps: int, words: list[str]) -> list[tuple[str, float]]:
    """Each image's greedy caption and the mean probability of its words (its end included) in percent."""
    ids, chances = network.caption(x, steps)
    found = []
    for row, chance in zip(ids.tolist(), chances.float().cpu(), strict=True):
        said = [i for i in row if i >= UNK]
        confidence = 100 * float(chance[: len(said) + 1].mean())
        found.append((" ".join(words[i] for i in said), round(confidence, 2)))
    return found


def image_captioner(emd: dict[str, Any]) -> CaptionNet:
    """The network an ImageCaptioner EMD of geotrain describes, with random weights."""
    params = emd["ModelParameters"]
    return CaptionNet(
        str(params["backbone"]), int(params["in_channels"]), len(emd["Vocabulary"]), int(params["embed_size"]),
        int(params["hidden_size"]), int(params["attention_size"]), float(params["dropout"]),
    )  # fmt: skip


def translator(emd: dict[str, Any]) -> nn.Module:
    """The generator a SuperResolution, Pix2Pix, Pix2PixHD or CycleGAN EMD of geotrain describes, with random
    weights."""
    params = emd["ModelParameters"]
    if params.get("generator") == "resnet_blocks" and int(params.get("local_enhancers", 0)) > 0:
        return LocalEnhancerGenerator(
            int(params["in_channels"]), int(params["out_channels"]), int(params["gen_blocks"]),
            int(params.get("width", 32)), int(params.get("downsample", 4)), int(params["local_enhancers"]),
            int(params.get("local_blocks", 3)),
        )  # fmt: skip
    if params.get("generator") == "resnet_blocks":
        return ResnetGenerator(
            int(params["in_channels"]), int(params["out_channels"]), int(params["gen_blocks"]),
            int(params.get("width", 64)), int(params.get("downsample", 2)),
        )  # fmt: skip
    return Translator(
        str(params["backbone"]), int(params["in_channels"]), int(params["out_channels"]), bool(params["residual"])
    )


def pixel_classifier(emd: dict[str, Any]) -> nn.Module:
    """The network an ImageClassification EMD of geotrain describes, with random weights."""
    params = emd["ModelParameters"]
    arch = str(params["backbone"])
    bands = int(params["in_channels"])
    classes = len(emd["Classes"]) + 1  # and NoData
    kind = str(emd["ModelConfiguration"]).removeprefix("geotrain.").upper()
    network: nn.Module
    if kind == "MAXDEEPLAB":
        return MaskNet(arch, bands, len(emd["Classes"]), int(params["n_masks"]))
    if kind == "MMSEGMENTATION":
        return MMSegNet(params["mmseg_model"])
    if kind == "CHANGEDETECTOR":
        return ChangeNet(arch, bands // 2, classes, str(params.get("attention_type", "PAM")))
    if kind in ("HED_EDGEDETECTOR", "BDCN_EDGEDETECTOR"):
        return EdgeNet(arch, bands, kind.split("_")[0])
    if kind in ("MULTITASK_ROADEXTRACTOR", "CONNECTNET"):
        if params.get("mtl_model") == "hourglass":
            return HourglassRoadNet(bands, classes, int(params["aux_channels"]))
        return RoadNet(arch, bands, classes, int(params["aux_channels"]))
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


class _ReidBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.relu(self.body(x) + self.skip(x))
        return out


# the re-identification networks of DEEPSORT: (stem width, stage widths, embedding size)
REID_PLANS = {
    "reid_v1": (32, (32, 64, 128), 128),  # deep SORT's small wide residual network
    "reid_v2": (64, (64, 128, 256, 512), 512),  # its deeper, wider successor
}


class ReidNet(nn.Module):
    """Deep SORT's appearance descriptor: residual stages, an L2-normalized embedding of each crop, and a
    classifier over the training identities on top (what trains the embedding)."""

    def __init__(self, version: str, bands: int, identities: int) -> None:
        super().__init__()
        stem, widths, size = REID_PLANS[version]
        layers: list[nn.Module] = [
            nn.Conv2d(bands, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]  # fmt: skip
        cin = stem
        for i, width in enumerate(widths):
            layers += [_ReidBlock(cin, width, 1 if i == 0 else 2), _ReidBlock(width, width, 1)]
            cin = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding = nn.Sequential(nn.Linear(cin, size), nn.BatchNorm1d(size))
        self.classifier = nn.Linear(size, identities)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Each crop's appearance descriptor, unit length: similar crops of one object lie close together."""
        return F.normalize(self.embedding(self.features(x)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(torch.relu(self.embedding(self.features(x))))
        return out


def feature_classifier(emd: dict[str, Any]) -> nn.Module:
    """The network an ObjectClassification (or DeepSort ObjectTracking) EMD of geotrain describes (torchvision's
    classifier on the EMD's band count, one output per class), with random weights."""
    params = emd["ModelParameters"]
    if str(params["backbone"]) in REID_PLANS:
        return ReidNet(str(params["backbone"]), int(params["in_channels"]), len(emd["Classes"]))
    network: nn.Module = getattr(torchvision.models, str(params["backbone"]))(
        weights=None, num_classes=len(emd["Classes"])
    )
    with_bands(network, int(params["in_channels"]))
    return network


# anchor sizes per pyramid level: chips are small, so anchors start at 16 px rather than torchvision's 32
LEVEL_SIZES = (16, 32, 64, 128, 256)
RCNN_RATIOS = (0.5, 1.0, 2.0)
SSD_CHANNELS = 256
DETECTIONS_PER_IMAGE = 100
# Mask R-CNN's PointRend head: the 28 px mask logits upsampled once, this many of the most uncertain of
# the 56 x 56 cells corrected (a quarter of them)
MASK_POINTS = 28 * 28
MASK_STEPS = 1
FINE_STRIDE = 4


def rcnn_counts(input_size: int) -> dict[str, int]:
    """torchvision's proposal counts suit 800 px photographs; a 128 px chip holds a few objects, and every
    proposal costs a pass through the box head: scale them with the chip's area."""
    area = input_size * input_size
    return {
        "rpn_pre_nms_top_n_train": min(2000, max(256, area // 32)),
        "rpn_post_nms_top_n_train": min(2000, max(128, area // 64)),
        "rpn_pre_nms_top_n_test": min(1000, max(128, area // 64)),
        "rpn_post_nms_top_n_test": min(1000, max(64, area // 256)),
        "box_batch_size_per_image": min(512, max(32, area // 256)),
    }


def rcnn_anchors() -> AnchorGenerator:
    return AnchorGenerator(tuple((s,) for s in LEVEL_SIZES), (RCNN_RATIOS,) * len(LEVEL_SIZES))


def retinanet_anchors(scales: list[float], ratios: list[float]) -> AnchorGenerator:
    return AnchorGenerator(
        tuple(tuple(base * s for s in scales) for base in LEVEL_SIZES), (tuple(ratios),) * len(LEVEL_SIZES)
    )


def retinanet_head(anchors: AnchorGenerator, num_classes: int) -> RetinaNetHead:
    """torchvision's v2 head: GroupNorm in the towers keeps training from scratch stable, and boxes regress
    on GIoU."""
    head = RetinaNetHead(256, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return head


class Trunk(nn.Module):
    """The convolutional part of a classification network: image in, its deepest feature map out."""

    def __init__(self, features: nn.Module, channels: int) -> None:
        super().__init__()
        self.features = features
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out


def trunk_features(network: nn.Module, arch: str) -> nn.Module:
    """The feature layers of a torchvision classifier ``network`` of architecture ``arch``."""
    if arch.startswith("resnet"):
        return nn.Sequential(*(network.get_submodule(n) for n in ("conv1", "bn1", "relu", "maxpool")),
                             *(network.get_submodule(f"layer{i}") for i in range(1, 5)))  # fmt: skip
    if arch.startswith("densenet"):
        # DenseNet's features end in a BatchNorm; its classifier applies the ReLU
        return nn.Sequential(network.get_submodule("features"), nn.ReLU(inplace=True))
    return network.get_submodule("features")  # VGG, MobileNet


def make_trunk(features: nn.Module, bands: int) -> Trunk:
    was = features.training
    features.eval()  # the probe must not move BatchNorm's running statistics
    with torch.no_grad():
        channels = int(features(torch.zeros(1, bands, 64, 64)).shape[1])
    features.train(was)
    return Trunk(features, channels)


class GridAnchors(DefaultBoxGenerator):  # type: ignore[misc]  # torchvision ships no types
    """SSD anchors as ArcGIS describes them: a ``g`` x ``g`` grid of cells per feature map, at each cell
    one box per zoom x ratio, sized ``zoom * ratio / g`` of the image."""

    def __init__(self, grids: list[int], zooms: list[float], ratios: list[list[float]]) -> None:
        super().__init__([[] for _ in grids])
        self.grids = list(grids)
        self.shapes = [(zoom * w, zoom * h) for zoom in zooms for w, h in ratios]

    def num_anchors_per_location(self) -> list[int]:
        return [len(self.shapes)] * len(self.grids)

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        rows, cols = image_list.tensors.shape[-2:]
        device = feature_maps[0].device
        per_grid = []
        for g in self.grids:
            centre = (torch.arange(g, dtype=torch.float32, device=device) + 0.5) / g
            cy, cx = torch.meshgrid(centre, centre, indexing="ij")
            # the head's output runs row by row, cell by cell, anchor by anchor: so do these
            centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
            half = torch.tensor(self.shapes, dtype=torch.float32, device=device)[None] / (2 * g)
            per_grid.append(torch.cat([centres - half, centres + half], -1).reshape(-1, 4))
        scale = torch.tensor([cols, rows, cols, rows], dtype=torch.float32, device=device)
        boxes = torch.cat(per_grid).clamp(0, 1) * scale
        return [boxes for _ in image_list.image_sizes]


class GridFeatures(nn.Module):
    """A backbone's deepest map pooled to each grid size and given its own 3x3 convolution."""

    channels = SSD_CHANNELS

    def __init__(self, trunk: Trunk, grids: list[int], drop: float) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_channels = [self.channels] * len(grids)  # what torchvision's SSD reads to build its head
        self.levels = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(g),
                nn.Dropout2d(drop),
                nn.Conv2d(trunk.channels, self.channels, 3, padding=1, bias=False),
                # GroupNorm: a 1 x 1 grid in a batch of one leaves BatchNorm nothing to average
                nn.GroupNorm(32, self.channels),
                nn.ReLU(inplace=True),
            )
            for g in grids
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        deepest = self.trunk(x)
        return OrderedDict((str(i), level(deepest)) for i, level in enumerate(self.levels))


@dataclass
class _Stash:
    """What torchvision's RoIHeads hand the mask RoI pool and not the mask predictor: the stride-4 pyramid
    level and the boxes the masks are for."""

    fine: torch.Tensor | None = None
    boxes: list[torch.Tensor] | None = None


class _StashingPool(nn.Module):
    def __init__(self, pool: nn.Module, stash: _Stash) -> None:
        super().__init__()
        self.pool = pool
        self._stash = stash

    def forward(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        self._stash.fine, self._stash.boxes = features["0"], boxes
        out: torch.Tensor = self.pool(features, boxes, image_shapes)
        return out


class PointRendMasks(nn.Module):
    """Mask R-CNN's mask predictor with a PointRend head: its logits are upsampled ``MASK_STEPS`` times,
    each time the most uncertain cells corrected from the pyramid's stride-4 features and the coarse
    logits there. torchvision's mask loss then scores the refined masks, so the point head learns at the
    points it refines. A cell is uncertain when any foreground class's mask logit is near 0: the predictor
    does not know the box's class, so some refined cells belong to classes the box is not of. That is why
    the head adds a correction to the coarse logit rather than replacing it, and starts at none (its last
    layer zero): it can only learn to help."""

    def __init__(self, predictor: nn.Module, fine_channels: int, num_classes: int, stash: _Stash) -> None:
        super().__init__()
        self.predictor = predictor
        self._stash = stash
        self.point_head = point_mlp(fine_channels + num_classes, num_classes)
        last = self.point_head[-1]
        assert isinstance(last, nn.Conv1d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, mask_features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.predictor(mask_features)
        for _ in range(MASK_STEPS):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            if len(logits):
                logits = self._refine(logits)
        return logits

    def _refine(self, logits: torch.Tensor) -> torch.Tensor:
        rois, classes, size, _ = logits.shape
        count = min(MASK_POINTS, size * size)
        foreground = logits[:, 1:] if classes > 1 else logits
        index = (-foreground.abs()).amax(dim=1).reshape(rois, -1).topk(count, dim=1).indices
        flat = logits.reshape(rois, classes, -1)
        spread = index.unsqueeze(1).expand(-1, classes, -1)
        coarse = flat.gather(2, spread)
        fine = self._fine_at(index, size)
        points: torch.Tensor = coarse + self.point_head(torch.cat([fine, coarse.to(fine.dtype)], dim=1)).to(flat.dtype)
        return flat.scatter(2, spread, points).reshape(rois, classes, size, size)

    def _fine_at(self, index: torch.Tensor, size: int) -> torch.Tensor:
        """The stride-4 features at cells ``index`` of each box's ``size`` x ``size`` grid: ``[R, F, N]``."""
        fine, boxes = self._stash.fine, self._stash.boxes
        assert fine is not None and boxes is not None
        # the pyramid level covers the padded batch image at a quarter of its size
        extent = fine.new_tensor([fine.shape[-1] * FINE_STRIDE, fine.shape[-2] * FINE_STRIDE])
        u = (index % size + 0.5) / size
        v = torch.div(index, size, rounding_mode="floor").add(0.5) / size
        out, start = [], 0
        for image, image_boxes in enumerate(boxes):
            n = len(image_boxes)
            if n == 0:
                continue
            b = image_boxes.unsqueeze(1)  # [n, 1, 4]
            x = b[..., 0] + u[start : start + n] * (b[..., 2] - b[..., 0])
            y = b[..., 1] + v[start : start + n] * (b[..., 3] - b[..., 1])
            coords = torch.stack([x, y], dim=2) / extent  # [n, N, 2]
            sampled = point_sample(fine[image : image + 1], coords.reshape(1, -1, 2))  # [1, F, n*N]
            out.append(sampled.reshape(fine.shape[1], n, -1).permute(1, 0, 2))
            start += n
        return torch.cat(out)


def add_mask_point_head(roi_heads: nn.Module, num_classes: int, fine_channels: int = 256) -> None:
    """Give torchvision RoIHeads' mask branch a PointRend head, in place."""
    stash = _Stash()
    roi_heads.mask_roi_pool = _StashingPool(roi_heads.get_submodule("mask_roi_pool"), stash)
    roi_heads.mask_predictor = PointRendMasks(
        roi_heads.get_submodule("mask_predictor"), fine_channels, num_classes, stash
    )


def _fpn(arch: str, bands: int, **options: Any) -> BackboneWithFPN:
    fpn = resnet_fpn_backbone(
        backbone_name=arch, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5, **options
    )
    with_bands(fpn.body, bands)
    return fpn


# YOLOv3: its three output strides; inputs are a multiple of the coarsest
YOLO_STRIDES = (8, 16, 32)
DARKNET_BLOCKS = (1, 2, 8, 8, 4)


class _BatchNormLeaky(nn.BatchNorm2d):
    """timm's BatchNormAct2d with LeakyReLU(0.01): the same parameters, the activation folded in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(super().forward(x), 0.01)


class _ConvBn(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = _BatchNormLeaky(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.conv(x))
        return out


class _DarkBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvBn(channels, channels // 2, 1)
        self.conv2 = _ConvBn(channels // 2, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv2(self.conv1(x))
        return out


class _DarkStage(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        self.conv_down = _ConvBn(cin, cout, 3, 2)
        self.blocks = nn.Sequential(*(_DarkBlock(cout) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(self.conv_down(x))
        return out


class DarkNet53(nn.Module):
    """timm's ``darknet53`` as ``FeatureListNet(out_indices=(3, 4, 5), flatten_sequential=True)`` exposes it
    (the same module names, so the same state dict): the feature maps at strides 8, 16 and 32."""

    channels = (256, 512, 1024)

    def __init__(self, bands: int) -> None:
        super().__init__()
        self.stem_conv1 = _ConvBn(bands, 32, 3)
        widths = (32, 64, 128, 256, 512, 1024)
        for i, blocks in enumerate(DARKNET_BLOCKS):
            self.add_module(f"stages_{i}", _DarkStage(widths[i], widths[i + 1], blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_conv1(x)
        found = []
        for i in range(len(DARKNET_BLOCKS)):
            x = self.get_submodule(f"stages_{i}")(x)
            if i >= 2:
                found.append(x)
        return found


def _yolo_block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1, inplace=True)
    )


def _yolo_neck(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(_yolo_block(c_in, c, 1), _yolo_block(c, 2 * c, 3), _yolo_block(2 * c, c, 1))


def resized(images: list[torch.Tensor], size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images of any size as one batch of ``size`` x ``size``, and per image the factors (x, y, x, y) that take
    its pixels to the batch's."""
    x = torch.stack(
        [F.interpolate(im[None], size=(size, size), mode="bilinear", align_corners=False)[0] for im in images]
    )
    return x, [torch.tensor([size / im.shape[-1], size / im.shape[-2]] * 2, device=x.device) for im in images]


class YOLOv3(nn.Module):
    """``backbone`` gives feature maps at strides 8, 16 and 32 with ``channels``; ``anchors`` are nine
    (width, height) pairs in input pixels, smallest first, three per stride; ``num_classes`` excludes the
    background (labels arrive 1-based, as torchvision's detectors take them)."""

    anchors: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        channels: list[int],
        num_classes: int,
        anchors: list[tuple[float, float]],
        input_size: int,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.45,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.input_size = input_size
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))
        out = 3 * (5 + num_classes)
        c3, c4, c5 = channels
        # top-down: each scale's features, then an upsampled summary handed to the next finer scale
        self.neck5, self.neck4, self.neck3 = _yolo_neck(c5, 512), _yolo_neck(c4 + 256, 256), _yolo_neck(c3 + 128, 128)
        self.up5, self.up4 = _yolo_block(512, 256, 1), _yolo_block(256, 128, 1)
        self.heads = nn.ModuleList(
            nn.Sequential(_yolo_block(c, 2 * c, 3), nn.Conv2d(2 * c, out, 1)) for c in (128, 256, 512)
        )
        # objectness starts at a 1 % prior: most cells hold nothing, and an even start drowns the other losses
        for head in self.heads:
            last = list(head.children())[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            with torch.no_grad():
                last.bias.view(3, 5 + num_classes)[:, 4] = math.log(0.01 / 0.99)

    def _raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per stride 8, 16, 32: (batch, anchor, row, col, [x, y, w, h, objectness, classes...])."""
        f3, f4, f5 = self.backbone(x)
        p5 = self.neck5(f5)
        p4 = self.neck4(torch.cat([F.interpolate(self.up5(p5), size=f4.shape[-2:]), f4], 1))
        p3 = self.neck3(torch.cat([F.interpolate(self.up4(p4), size=f3.shape[-2:]), f3], 1))
        outs = []
        for head, p in zip(self.heads, (p3, p4, p5), strict=True):
            y = head(p)
            n, _, h, w = y.shape
            outs.append(y.view(n, 3, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2))
        return outs

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        x, scales = resized(images, self.input_size)
        raw = self._raw(x)
        if self.training:
            assert targets is not None, "training needs targets"
            return self._loss(raw, targets, scales)
        return self._predict(raw, images, scales)

    def _loss(
        self, raw: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], scales: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        objectness = [torch.zeros_like(r[..., 4]) for r in raw]
        box = raw[0].new_zeros(())
        cls = raw[0].new_zeros(())
        for b, (target, scale) in enumerate(zip(targets, scales, strict=True)):
            boxes = target["boxes"] * scale
            if len(boxes) == 0:
                continue
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            # each object is the responsibility of the anchor whose shape fits it best
            inter = torch.min(wh[:, None], self.anchors[None]).prod(-1)
            best = (inter / (wh.prod(-1)[:, None] + self.anchors.prod(-1)[None] - inter)).argmax(1)
            for level, stride in enumerate(YOLO_STRIDES):
                mine = (best // 3) == level
                if not mine.any():
                    continue
                rows, cols = raw[level].shape[2:4]
                grid = centre[mine] / stride
                col = grid[:, 0].long().clamp(0, cols - 1)
                row = grid[:, 1].long().clamp(0, rows - 1)
                anchor = best[mine] % 3
                p = raw[level][b, anchor, row, col]
                objectness[level][b, anchor, row, col] = 1.0
                offset = (grid - torch.stack([col, row], 1)).clamp(0, 1)
                box = box + F.binary_cross_entropy_with_logits(p[:, :2], offset, reduction="sum")
                box = box + F.mse_loss(p[:, 2:4], torch.log(wh[mine] / self.anchors[best[mine]]), reduction="sum")
                onehot = F.one_hot(target["labels"][mine] - 1, self.num_classes).to(p.dtype)
                cls = cls + F.binary_cross_entropy_with_logits(p[:, 5:], onehot, reduction="sum")
        n = len(targets)
        obj = sum(
            F.binary_cross_entropy_with_logits(r[..., 4], t, reduction="sum")
            for r, t in zip(raw, objectness, strict=True)
        )
        assert isinstance(obj, torch.Tensor)
        return {"bbox_regression": box / n, "classification": cls / n, "objectness": obj / n}

    def _predict(
        self, raw: list[torch.Tensor], images: list[torch.Tensor], scales: list[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        results = []
        for b, (image, scale) in enumerate(zip(images, scales, strict=True)):
            found_boxes, found_scores, found_labels = [], [], []
            for level, stride in enumerate(YOLO_STRIDES):
                p = raw[level][b].float()
                rows, cols = p.shape[1:3]
                gy, gx = torch.meshgrid(
                    torch.arange(rows, device=p.device), torch.arange(cols, device=p.device), indexing="ij"
                )
                xy = (p[..., :2].sigmoid() + torch.stack([gx, gy], -1)) * stride
                wh = p[..., 2:4].clamp(max=8).exp() * self.anchors[3 * level : 3 * level + 3].view(3, 1, 1, 2)
                scores = (p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()).reshape(-1, self.num_classes)
                boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(-1, 4)
                where, label = (scores > self.score_thresh).nonzero(as_tuple=True)
                found_boxes.append(boxes[where])
                found_scores.append(scores[where, label])
                found_labels.append(label + 1)
            boxes, scores, labels = torch.cat(found_boxes), torch.cat(found_scores), torch.cat(found_labels)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            rows, cols = image.shape[-2:]
            boxes = boxes[keep] / scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cols)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, rows)
            results.append({"boxes": boxes, "scores": scores[keep], "labels": labels[keep]})
        return results


def greedy_match(cost: torch.Tensor) -> tuple[list[int], list[int]]:
    """One row (query) per column (target), the cheapest pairs first (an approximation of the least total
    cost, for training without scipy)."""
    cost = cost.detach().float().clone()
    rows, cols = [], []
    for _ in range(min(cost.shape)):
        r, c = divmod(int(cost.argmin()), cost.shape[1])
        rows.append(r)
        cols.append(c)
        cost[r, :], cost[:, c] = float("inf"), float("inf")
    return rows, cols


class DetectionTransformer(nn.Module):
    """DETR, the detector DETReg trains: a ResNet's deepest map read as a sequence by a transformer encoder,
    ``queries`` object queries decoded against it, each predicting a class (or "no object") and a box; trained
    by matching queries one to one to the boxes (class certainty, L1 and generalized IoU of the boxes). Takes
    and gives what torchvision's detectors take and give (``labels`` 1-based, boxes in input pixels)."""

    def __init__(
        self, arch: str, bands: int, num_classes: int, input_size: int, queries: int = 50, dim: int = 128,
        layers: int = 2, score_thresh: float = 0.05, detections_per_img: int = 100,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder = Encoder(arch, bands)
        self.num_classes, self.input_size = num_classes, input_size
        self.score_thresh, self.detections_per_img = score_thresh, detections_per_img
        self.project = nn.Conv2d(_channels(self.encoder, bands)[-1], dim, 1)
        cells = (input_size // 32) ** 2
        self.position = nn.Parameter(torch.randn(1, cells, dim) * 0.02)
        self.transformer = nn.Transformer(dim, 4, layers, layers, dim * 4, dropout=0.0, batch_first=True)
        self.queries = nn.Embedding(queries, dim)
        self.classify = nn.Linear(dim, num_classes + 1)  # the classes, then "no object"
        self.box = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 4))
        # how queries are paired with boxes in training; geotrain's training sets the Hungarian algorithm (scipy),
        # which this file cannot import (ArcGIS's Python is only sure to have torch, torchvision and numpy)
        self.match: Any = greedy_match

    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's class logits and box (centre x, centre y, width, height as shares of the input)."""
        memory = self.project(self.encoder(x)[-1]).flatten(2).transpose(1, 2).float() + self.position
        decoded = self.transformer(memory, self.queries.weight[None].expand(len(x), -1, -1).float())
        return self.classify(decoded), self.box(decoded).sigmoid()

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        x, scales = resized(images, self.input_size)
        logits, boxes = self._raw(x)
        if self.training:
            assert targets is not None, "training needs targets"
            return self._loss(logits.float(), boxes.float(), targets, scales)
        return self._predict(logits.float(), boxes.float(), images, scales)

    def _loss(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]],
        scales: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        weights = torch.ones(self.num_classes + 1, device=logits.device)
        weights[-1] = 0.1  # "no object", as DETR weighs it
        cls, l1, giou = logits.new_zeros(()), logits.new_zeros(()), logits.new_zeros(())
        count = max(1, sum(len(t["boxes"]) for t in targets))
        for b, (target, scale) in enumerate(zip(targets, scales, strict=True)):
            wanted = torch.full((logits.shape[1],), self.num_classes, dtype=torch.long, device=logits.device)
            if len(target["boxes"]):
                truth = box_convert(target["boxes"] * scale / self.input_size, "xyxy", "cxcywh")
                made = box_convert(boxes[b], "cxcywh", "xyxy")
                overlap = generalized_box_iou(made, box_convert(truth, "cxcywh", "xyxy"))
                cost = (
                    -logits[b].softmax(-1)[:, target["labels"] - 1]
                    + 5 * torch.cdist(boxes[b], truth, p=1)
                    - 2 * overlap
                )
                q, t = self.match(cost)
                wanted[q] = target["labels"][t] - 1
                l1 = l1 + F.l1_loss(boxes[b][q], truth[t], reduction="sum")
                giou = giou + (1 - torch.diag(overlap[q][:, t])).sum()
            cls = cls + F.cross_entropy(logits[b], wanted, weight=weights)
        n = len(targets)
        return {"classification": cls / n, "bbox_regression": 5 * l1 / count, "giou": 2 * giou / count}

    def _predict(
        self, logits: torch.Tensor, boxes: torch.Tensor, images: list[torch.Tensor], scales: list[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        results = []
        for b, (image, scale) in enumerate(zip(images, scales, strict=True)):
            scores, labels = logits[b].softmax(-1)[:, :-1].max(-1)
            keep = (scores > self.score_thresh).nonzero().flatten()
            keep = keep[scores[keep].argsort(descending=True)][: self.detections_per_img]
            rows, cols = image.shape[-2:]
            found = box_convert(boxes[b][keep], "cxcywh", "xyxy") * self.input_size / scale
            found[:, 0::2] = found[:, 0::2].clamp(0, cols)
            found[:, 1::2] = found[:, 1::2].clamp(0, rows)
            results.append({"boxes": found, "scores": scores[keep], "labels": labels[keep] + 1})
        return results


def detector(emd: dict[str, Any]) -> nn.Module:
    """The network an ObjectDetection or InstanceDetection EMD of geotrain describes, with random weights.
    It takes images normalised with the EMD's statistics, as torchvision detectors take them."""
    params = emd["ModelParameters"]
    arch, bands, size = str(params["backbone"]), int(params["in_channels"]), int(params["input_size"])
    kind = str(emd["ModelConfiguration"]).removeprefix("geotrain.").upper()
    num_classes = len(emd["Classes"]) + 1  # and the background
    plain: dict[str, Any] = {"image_mean": [0.0] * bands, "image_std": [1.0] * bands}
    sizes = {"min_size": size, "max_size": size * 4}
    network: nn.Module
    if kind in ("FASTERRCNN", "MASKRCNN"):
        options = {**rcnn_counts(size), **(emd.get("MaskRCNNkwargs") or {})}
        fpn = _fpn(arch, bands)
        kind_class = MaskRCNN if kind == "MASKRCNN" else FasterRCNN
        network = kind_class(fpn, num_classes, rpn_anchor_generator=rcnn_anchors(), **sizes, **plain, **options)
        if kind == "MASKRCNN" and params.get("pointrend", False):
            add_mask_point_head(network.get_submodule("roi_heads"), num_classes, fpn.out_channels)
    elif kind == "RETINANET":
        fpn = _fpn(arch, bands, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
        anchors = retinanet_anchors([float(s) for s in params["scales"]], [float(r) for r in params["ratios"]])
        network = RetinaNet(
            fpn, num_classes, anchor_generator=anchors, head=retinanet_head(anchors, num_classes), **sizes, **plain,
            detections_per_img=DETECTIONS_PER_IMAGE,
        )  # fmt: skip
    elif kind == "SSD":
        classifier = backbone_body(arch)
        with_bands(classifier, bands)
        grids = [int(g) for g in emd["Grids"]]
        features = GridFeatures(make_trunk(trunk_features(classifier, arch), bands), grids, 0.0)
        anchors_ssd = GridAnchors(
            grids, [float(z) for z in emd["Zooms"]], [[float(v) for v in r] for r in emd["Ratios"]]
        )
        network = SSD(
            features, anchors_ssd, (size, size), num_classes, **plain, detections_per_img=DETECTIONS_PER_IMAGE
        )
    elif kind == "DETREG":
        network = DetectionTransformer(
            arch, bands, num_classes - 1, size, int(params["queries"]), detections_per_img=DETECTIONS_PER_IMAGE
        )
    elif kind == "MMDETECTION":
        network = MMDetNet(params["mmdet_model"], size)
    elif kind == "YOLOV3":
        anchors_yolo = [(float(w), float(h)) for w, h in params["anchors"]]
        network = YOLOv3(
            DarkNet53(bands), list(DarkNet53.channels), num_classes - 1, anchors_yolo, size,
            detections_per_img=DETECTIONS_PER_IMAGE,
        )  # fmt: skip
    else:
        raise ValueError(f"no portable network for {kind}")
    return network


def load_weights(network: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a detector's state strictly. A backbone trained with frozen BatchNorm (ImageNet weights kept)
    saved no batch counters: those are the only keys allowed to be missing."""
    own = network.state_dict()
    filled = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in filled:
            filled[key] = torch.zeros_like(value)
    network.load_state_dict(filled, strict=True)


# SiamMask (SIAMMASK): the search window's anchors are this many input pixels apart (the backbone's stride)
SIAM_STRIDE = 8
SIAM_RATIOS = (0.33, 0.5, 1.0, 2.0, 3.0)  # anchors' height / width, SiamMask's
SIAM_SMALLEST = 2.0  # pixels: narrower or lower objects are not trained on, and a tracked box never gets smaller
SIAM_CONTEXT = 0.5  # the exemplar holds the box and half its perimeter's mean side around it, as SiamFC cuts it
# SiamMask's tracking settings (its "hp"): the size-change penalty, the cosine window's share, the size's update
# rate, the mask probability that counts as the object
SIAM_TRACKING = {"penalty_k": 0.04, "window_influence": 0.4, "lr": 1.0, "seg_thr": 0.35}


def window_crop(image: torch.Tensor, centre: tuple[float, float], side: float, out: int) -> torch.Tensor:
    """The square of ``side`` pixels of ``image`` (bands x rows x cols, normalized) centred on ``centre`` (x, y in
    pixel edges), resampled to ``out`` x ``out``; what lies outside the image is 0 (the band means)."""
    rows, cols = image.shape[-2:]
    steps = (torch.arange(out, device=image.device, dtype=torch.float32) + 0.5) * (side / out) - side / 2
    gx = (centre[0] + steps) * (2 / cols) - 1
    gy = (centre[1] + steps) * (2 / rows) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


Side = TypeVar("Side", float, torch.Tensor)


def context_side(width: Side, height: Side) -> Side:
    """The exemplar's side for a ``width`` x ``height`` box, or for boxes' widths and heights (SiamFC's context)."""
    extra = SIAM_CONTEXT * (width + height)
    side: Side = ((width + extra) * (height + extra)) ** 0.5
    return side


def xcorr_depthwise(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each channel of ``search`` correlated with the same channel of ``kernel``, sample by sample."""
    batch, channels = kernel.shape[:2]
    out = F.conv2d(
        search.reshape(1, batch * channels, *search.shape[2:]),
        kernel.reshape(batch * channels, 1, *kernel.shape[2:]),
        groups=batch * channels,
    )
    return out.reshape(batch, channels, *out.shape[2:])


class _XCorrBranch(nn.Module):
    """SiamRPN++'s depth-wise cross-correlation branch: exemplar and search features each through a 3x3
    convolution of their own, correlated channel by channel, then a 1x1 head to ``outputs`` per location."""

    def __init__(self, width: int, outputs: int) -> None:
        super().__init__()

        def conv() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(width, width, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))

        self.kernel, self.search = conv(), conv()
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, outputs, 1),
        )  # fmt: skip

    def forward(self, kernel: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(xcorr_depthwise(self.search(search), self.kernel(kernel)))
        return out


def _convs(cin: int, middle: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, middle, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(middle, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )  # fmt: skip


class SiamRefine(nn.Module):
    """SiamMask's refinement module: one location's mask features, spread by a transposed convolution over a
    quarter of the mask's side, merged three times with the backbone's maps at strides 8, 4 and 2 (each cut to the
    location's window and narrowed), doubling in size each time, to ``size`` x ``size`` logits."""

    def __init__(self, width: int, channels: tuple[int, int, int], size: int) -> None:
        super().__init__()
        self.sizes = (max(size // 4, 2), max(size // 2, 3), size)  # the stride-8, -4 and -2 cuts
        self.deconv = nn.ConvTranspose2d(width, 32, self.sizes[0], self.sizes[0])
        self.v2, self.v1, self.v0 = (
            _convs(channels[2], 128, 32),
            _convs(channels[1], 64, 16),
            _convs(channels[0], 16, 4),
        )
        self.h2, self.h1, self.h0 = _convs(32, 32, 32), _convs(16, 16, 16), _convs(4, 4, 4)
        self.post0, self.post1 = nn.Conv2d(32, 16, 3, padding=1), nn.Conv2d(16, 4, 3, padding=1)
        self.post2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, vectors: torch.Tensor, cuts: list[torch.Tensor]) -> torch.Tensor:
        """``vectors``: locations x width mask features; ``cuts``: the stride-2, -4 and -8 maps cut to each
        location's window at ``sizes`` (reversed). Gives locations x size x size logits."""
        p0, p1, p2 = cuts
        out = self.deconv(vectors[..., None, None])
        out = self.post0(F.interpolate(self.h2(out) + self.v2(p2), size=p1.shape[-2:], mode="bilinear"))
        out = self.post1(F.interpolate(self.h1(out) + self.v1(p1), size=p0.shape[-2:], mode="bilinear"))
        logits: torch.Tensor = self.post2(
            F.interpolate(self.h0(out) + self.v0(p0), size=p0.shape[-2:], mode="bilinear")
        )
        return logits[:, 0]


SiamOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]


class SiamMaskNet(nn.Module):
    """SiamMask (its "sharp" variant, as ArcGIS uses): the first four stages of a ResNet (the third dilated, so
    stride 8) read the exemplar (the object and its context, ``exemplar`` px) and the search window (``instance``
    px); an adjust layer narrows both to ``width`` channels, and three depth-wise cross-correlation branches give,
    at every location of the response map, a score per anchor, four box offsets per anchor and the features of
    the object's mask within the exemplar-sized window centred there, which the refinement module turns into
    ``mask_size`` x ``mask_size`` logits with the search window's shallower maps."""

    def __init__(
        self, arch: str, bands: int, exemplar: int = 127, instance: int = 255, width: int = 256,
        mask_size: int | None = None, ratios: tuple[float, ...] = SIAM_RATIOS,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder = Encoder(arch, bands, depth=4, output_stride=SIAM_STRIDE)
        del self.encoder.layer4  # SiamMask reads the first four stages only
        channels = _channels(self.encoder, bands)
        self.adjust = nn.Sequential(nn.Conv2d(channels[-1], width, 1, bias=False), nn.BatchNorm2d(width))
        self.exemplar, self.instance, self.ratios = exemplar, instance, tuple(ratios)
        self.mask_size = mask_size or max(exemplar // 2, 8)  # 63 for SiamMask's 127
        self.score = _XCorrBranch(width, len(self.ratios))
        self.box = _XCorrBranch(width, 4 * len(self.ratios))
        self.mask = _XCorrBranch(width, width)
        self.refine = SiamRefine(width, (channels[1], channels[2], channels[3]), self.mask_size)
        # the exemplar's map: the middle cells kept as the correlation's kernel (about half, odd, at least 3, as
        # SiamMask keeps the 7 middle cells of 15), and the first of them
        was = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            cells = int(self.encoder(torch.zeros(1, bands, exemplar, exemplar))[-1].shape[-1])
        self.encoder.train(was)
        if cells < 3:
            raise ValueError(f"an exemplar of {exemplar} px is too small: at least {2 * SIAM_STRIDE + 1} px")
        self.keep = min(cells, max(3, (cells // 2 - 1) | 1))
        self.start = (cells - self.keep) // 2

    def template(self, z: torch.Tensor) -> torch.Tensor:
        """The exemplar's features: the middle ``keep`` cells of its map."""
        features: torch.Tensor = self.adjust(self.encoder(z)[-1])
        start, keep = self.start, self.keep
        return features[..., start : start + keep, start : start + keep]

    def heads(self, kernel: torch.Tensor, x: torch.Tensor) -> SiamOutputs:
        """For search windows ``x``: scores (batch x anchors x R x R), box offsets (batch x 4 anchors x R x R), mask
        features (batch x width x R x R) and the backbone's stride-2, -4 and -8 maps (for ``masks``)."""
        features = self.encoder(x)
        search = self.adjust(features[-1])
        return self.score(kernel, search), self.box(kernel, search), self.mask(kernel, search), features[1:4]

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> SiamOutputs:
        return self.heads(self.template(z), x)

    def windows(self, where: torch.Tensor, size: int) -> torch.Tensor:
        """The exemplar-sized windows (sample, x0, y0, x1, y1 in search pixels: ``roi_align``'s boxes) centred on the
        response map's locations ``where`` (sample, row, column) of a ``size`` map."""
        centres = self.centres(size, where.device)
        cx, cy, half = centres[where[:, 2]], centres[where[:, 1]], self.exemplar / 2
        return torch.stack([where[:, 0].float(), cx - half, cy - half, cx + half, cy + half], 1)

    def masks(self, outputs: SiamOutputs, where: torch.Tensor) -> torch.Tensor:
        """The mask logits (locations x mask_size x mask_size) at ``where`` (locations x 3: sample, row, column of
        the response map), each over the exemplar-sized window centred there."""
        mask_features, maps = outputs[2], outputs[3]
        windows = self.windows(where, mask_features.shape[-1])
        sizes = self.refine.sizes[::-1]  # stride 2, 4, 8
        cuts = [
            torchvision.ops.roi_align(m.float(), windows, size, 1 / stride, 2, aligned=True)
            for m, size, stride in zip(maps, sizes, (2, 4, 8), strict=True)
        ]
        vectors = mask_features[where[:, 0], :, where[:, 1], where[:, 2]].float()
        out: torch.Tensor = self.refine(vectors, cuts)
        return out

    def centres(self, size: int, device: torch.device) -> torch.Tensor:
        """The search-window pixel (edges) each of a ``size`` response map's rows or columns is centred on: where
        the exemplar's centre lies when its kept cells match the search window's from that row or column on."""
        return self.exemplar / 2 + (torch.arange(size, device=device, dtype=torch.float32) - self.start) * SIAM_STRIDE

    def anchors(self, size: int, device: torch.device) -> torch.Tensor:
        """Anchors x R x R x 4 (centre x, centre y, width, height in search-window pixels): one per ratio at
        every location, of the area an object has in the exemplar (half its side, squared)."""
        base = self.exemplar / 2
        ratios = torch.tensor(self.ratios, device=device, dtype=torch.float32)
        widths, heights = base / ratios.sqrt(), base * ratios.sqrt()
        centre = self.centres(size, device)
        cy, cx = torch.meshgrid(centre, centre, indexing="ij")
        k = len(self.ratios)
        return torch.stack(
            [
                cx.expand(k, -1, -1), cy.expand(k, -1, -1),
                widths[:, None, None].expand(-1, size, size), heights[:, None, None].expand(-1, size, size),
            ], -1,
        )  # fmt: skip

    def decode(self, offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Box offsets (batch x 4 anchors x R x R) on ``anchors`` -> batch x anchors x R x R x 4 boxes (centre x,
        centre y, width, height)."""
        d = offsets.float().reshape(len(offsets), len(self.ratios), 4, *offsets.shape[-2:]).permute(0, 1, 3, 4, 2)
        xy = anchors[..., :2] + d[..., :2] * anchors[..., 2:]
        wh = anchors[..., 2:] * d[..., 2:].clamp(max=4).exp()
        return torch.cat([xy, wh], -1)

    def mask_in(
        self, logits: torch.Tensor, centre: tuple[float, float], xs: torch.Tensor, ys: torch.Tensor
    ) -> torch.Tensor:
        """One location's mask logits (``mask_size`` x ``mask_size``), its window centred on ``centre`` (search
        pixels), read as probabilities at the pixels ``xs``/``ys`` (indices, any scale: their centres are 0.5 further)
        of the search window: 0 outside it."""
        size = self.mask_size
        gx = (xs + 0.5 - centre[0]) * (2 / self.exemplar)
        gy = (ys + 0.5 - centre[1]) * (2 / self.exemplar)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
        probs = logits.float().reshape(1, 1, size, size).sigmoid()
        return F.grid_sample(probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]


def siammask(emd: dict[str, Any]) -> SiamMaskNet:
    """The SiamMask network a geotrain ObjectTracking (SiamMask) EMD describes, with random weights."""
    params = emd["ModelParameters"]
    return SiamMaskNet(
        str(params["backbone"]), int(params["in_channels"]), int(params["exemplar_size"]),
        int(params["instance_size"]), mask_size=int(params["mask_size"]),
        ratios=tuple(float(r) for r in params["anchors"]["ratios"]),
    )  # fmt: skip


class SiamTracker:
    """One object followed through frames as SiamMask tracks it: the exemplar is cut around its box in the first
    frame; in each later frame a search window (twice the exemplar's side, around its last position) is read,
    the anchor with the best score, penalised for changing the box's size and shape and weighted towards the
    window's middle (a cosine window), gives its new box, and that location's mask its outline in the frame."""

    def __init__(
        self, network: SiamMaskNet, frame: torch.Tensor, box: tuple[float, float, float, float],
        settings: dict[str, float] | None = None,
    ) -> None:  # fmt: skip
        """``frame``: bands x rows x cols, normalized; ``box``: x, y (top left), width, height in pixels."""
        self.network, self.settings = network, {**SIAM_TRACKING, **(settings or {})}
        x, y, w, h = (float(v) for v in box)
        self.centre, self.size = (x + w / 2, y + h / 2), (max(w, 1.0), max(h, 1.0))
        z = window_crop(frame, self.centre, context_side(*self.size), network.exemplar)
        with torch.no_grad():
            self.kernel = network.template(z[None])

    def update(self, frame: torch.Tensor) -> tuple[list[float], float, torch.Tensor]:
        """The object's box (x, y, width, height), the score it was found with and its mask probabilities (rows
        x cols of the frame) in ``frame``."""
        net, s = self.network, self.settings
        side = context_side(*self.size)
        scale = net.exemplar / side  # search-window pixels per frame pixel
        window_side = side * net.instance / net.exemplar
        x = window_crop(frame, self.centre, window_side, net.instance)
        with torch.no_grad():
            outputs = net.heads(self.kernel, x[None])
        score, offsets = outputs[0], outputs[1]
        size = score.shape[-1]
        anchors = net.anchors(size, score.device)
        boxes = net.decode(offsets, anchors)[0].reshape(-1, 4)
        probs = score[0].float().sigmoid().reshape(-1)
        target = (self.size[0] * scale, self.size[1] * scale)
        # SiamRPN's penalty: how much each box's context side and shape differ from the object's so far
        change = context_side(boxes[:, 2], boxes[:, 3]) / context_side(*target)
        shape = (target[0] / target[1]) / (boxes[:, 2] / boxes[:, 3])
        penalty = torch.exp(-(torch.maximum(change, 1 / change) * torch.maximum(shape, 1 / shape) - 1) * s["penalty_k"])
        hann = torch.hann_window(size + 2, periodic=False, device=score.device)[1:-1]
        cosine = torch.outer(hann, hann).expand(len(net.ratios), -1, -1).reshape(-1)
        chosen = penalty * probs * (1 - s["window_influence"]) + cosine * s["window_influence"]
        best = int(chosen.argmax())
        cx, cy, w, h = (float(v) for v in boxes[best])
        rate = float(penalty[best] * probs[best]) * s["lr"]
        # the window's top left corner in the frame: the mask is read from window pixels into frame pixels
        left, top = self.centre[0] - window_side / 2, self.centre[1] - window_side / 2
        rows, cols = frame.shape[-2:]
        moved = (self.centre[0] + (cx - net.instance / 2) / scale, self.centre[1] + (cy - net.instance / 2) / scale)
        self.centre = (min(max(moved[0], 0.0), float(cols)), min(max(moved[1], 0.0), float(rows)))
        grown = (self.size[0] * (1 - rate) + w / scale * rate, self.size[1] * (1 - rate) + h / scale * rate)
        self.size = (min(max(grown[0], SIAM_SMALLEST), float(cols)), min(max(grown[1], SIAM_SMALLEST), float(rows)))
        row, col = divmod(best % (size * size), size)
        centres = net.centres(size, score.device)
        xs = (torch.arange(cols, device=score.device, dtype=torch.float32) + 0.5 - left) * scale - 0.5
        ys = (torch.arange(rows, device=score.device, dtype=torch.float32) + 0.5 - top) * scale - 0.5
        with torch.no_grad():
            logits = net.masks(outputs, torch.tensor([[0, row, col]], device=score.device))[0]
        mask = net.mask_in(logits, (float(centres[col]), float(centres[row])), xs, ys)
        box = [self.centre[0] - self.size[0] / 2, self.centre[1] - self.size[1] / 2, self.size[0], self.size[1]]
        return box, float(probs[best]), mask


class MMSegNet(nn.Module):
    """An OpenMMLab mmsegmentation model (MMSEGMENTATION) as geotrain's pixel classifiers are: bands in, class
    logits at the input's size out (its decode head's output, upsampled). Built from the model's config, which the
    EMD keeps; needs mmsegmentation and mmcv with its operators, as arcgis.learn's MMSegmentation packages do."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        self.config = config
        self.model = MODELS.build(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.decode_head(self.model.extract_feat(x))
        if isinstance(out, tuple | list):  # danet's and encnet's heads add outputs of their own losses in training
            out = out[0]
        logits: torch.Tensor = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def _tuple_orders(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: tuple(v) if k == "order" and isinstance(v, list) else _tuple_orders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tuple_orders(v) for v in value]
    return value


class MMDetNet(nn.Module):
    """An OpenMMLab mmdet detector (MMDETECTION) with torchvision's detection interface, as geotrain's other
    detectors have it: ``network(images, targets)`` gives its losses in training mode, ``network(images)`` boxes,
    scores and labels (1 = the first class) in the images' pixels in eval mode. Images are resized so that their
    shorter side is ``input_size`` and padded to a multiple of 32 in a batch, as mmdet's pipeline would. Built from
    the model's config, which the EMD keeps; needs mmdet and mmcv with its operators, as arcgis.learn's MMDetection
    packages do."""

    def __init__(self, config: dict[str, Any], input_size: int) -> None:
        super().__init__()
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.config import ConfigDict

        register_all_modules(init_default_scope=False)
        self.config = config
        self.input_size = input_size
        # heads read their train and test settings as attributes: a ConfigDict, not the EMD's plain JSON; a layer's
        # order must be a tuple again (JSON made it a list)
        self.model = MODELS.build(ConfigDict(_tuple_orders(config)))

    def _test_configs(self) -> list[Any]:
        """The test settings that hold a score threshold: a one-stage head's, a two-stage detector's rcnn part."""
        found: list[Any] = []
        for module in self.model.modules():
            cfg = getattr(module, "test_cfg", None)
            for part in (cfg, cfg.get("rcnn") if isinstance(cfg, dict) else None):
                if isinstance(part, dict) and "score_thr" in part and all(part is not f for f in found):
                    found.append(part)
        return found

    @property
    def score_thresh(self) -> float:
        """The score below which mmdet drops boxes before NMS (the inference function lowers it with its own
        threshold, as it lowers torchvision's)."""
        return min((float(cfg["score_thr"]) for cfg in self._test_configs()), default=0.0)

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        for cfg in self._test_configs():
            cfg["score_thr"] = float(value)

    def _batch(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None
    ) -> tuple[torch.Tensor, list[Any]]:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        sized, samples = [], []
        for i, image in enumerate(images):
            rows, cols = image.shape[-2:]
            scale = self.input_size / min(rows, cols)
            height, width = max(1, round(rows * scale)), max(1, round(cols * scale))
            sized.append(F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0])
            sample = DetDataSample(
                metainfo={"img_shape": (height, width), "ori_shape": (rows, cols),
                          "scale_factor": (width / cols, height / rows)}
            )  # fmt: skip
            if targets is not None:
                boxes = targets[i]["boxes"].float()
                factor = boxes.new_tensor([width / cols, height / rows, width / cols, height / rows])
                # mmdet counts classes from 0, without a background class
                sample.gt_instances = InstanceData(bboxes=boxes * factor, labels=targets[i]["labels"].long() - 1)
            samples.append(sample)
        top = max(s.shape[-2] for s in sized)
        side = max(s.shape[-1] for s in sized)
        shape = (-(-top // OUTPUT_STRIDE) * OUTPUT_STRIDE, -(-side // OUTPUT_STRIDE) * OUTPUT_STRIDE)
        batch = sized[0].new_zeros((len(sized), sized[0].shape[0], *shape))
        for i, image in enumerate(sized):
            batch[i, :, : image.shape[-2], : image.shape[-1]] = image
        for sample, image in zip(samples, sized, strict=True):
            # each image's own padded size, as mmdet's preprocessor gives it: anchors over another's padding are not
            # valid
            own = tuple(-(-side // OUTPUT_STRIDE) * OUTPUT_STRIDE for side in image.shape[-2:])
            sample.set_metainfo({"batch_input_shape": shape, "pad_shape": own})
        return batch, samples

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        batch, samples = self._batch(images, targets)
        if self.training:
            if targets is None:
                raise ValueError("an mmdet detector in training mode needs targets")
            losses = self.model.loss(batch, samples)
            # mmdet adds accuracies beside its losses, and some losses are per level or per stage
            return {
                name: sum(v.sum() for v in value) if isinstance(value, list | tuple) else value.sum()
                for name, value in losses.items()
                if "loss" in name
            }
        results = []
        for image, sample in zip(images, self.model.predict(batch, samples, rescale=True), strict=True):
            found = sample.pred_instances
            boxes = found.bboxes.float()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.shape[-1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.shape[-2])
            results.append({"boxes": boxes, "scores": found.scores.float(), "labels": found.labels.long() + 1})
        return results
