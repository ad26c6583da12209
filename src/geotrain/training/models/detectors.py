"""The object detectors on any band count: FASTERRCNN, RETINANET, SSD, MASKRCNN (torchvision), YOLOV3.

Every one follows torchvision's detection interface: ``network(images, targets)`` gives a dict of losses
in training mode, ``network(images)`` a list of predictions in eval mode.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from timm.layers.norm_act import freeze_batch_norm_2d
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.ops import sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from geotrain.training.models import pointrend, pretrained, trunks, yolo
from geotrain.training.models.registry import BuiltModel

# ArcGIS's defaults (arcgis.learn) where a request leaves an argument out
RETINANET_SCALES = [1.0, 2 ** (-1 / 3), 2 ** (-2 / 3)]
RETINANET_RATIOS = [0.5, 1.0, 2.0]
# SSD grids when none are given: ssd_version 2 (arcgis.learn's default) fits them to the boxes, version 1
# used these
SSD_GRIDS = [4, 2, 1]
SSD_VERSION = 2
SSD_ZOOMS = [1.0]
SSD_RATIOS = [[1.0, 1.0]]
SSD_DROP = 0.3
SSD_BIAS = -4.0
# MaskRCNN arguments that are torchvision MaskRCNN keyword arguments of the same name
MASKRCNN_KEYWORDS = (
    "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
    "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_batch_size_per_image",
    "rpn_positive_fraction", "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
    "box_fg_iou_thresh", "box_bg_iou_thresh", "box_batch_size_per_image", "box_positive_fraction",
)  # fmt: skip
# anchor sizes per pyramid level: chips are small, so anchors start at 16 px rather than torchvision's 32
_LEVEL_SIZES = (16, 32, 64, 128, 256)


def _fpn(
    arch: str, bands: int, scheme: str, freeze: bool, **fpn_options: Any
) -> tuple[BackboneWithFPN, pretrained.BackboneWeights]:
    weights = pretrained.backbone_weights(arch, bands, scheme)
    # FrozenBatchNorm keeps ImageNet statistics; a backbone starting from scratch needs BatchNorm that learns
    norm_layer = FrozenBatchNorm2d if weights.state is not None else nn.BatchNorm2d
    trainable = 0 if (freeze and weights.state is not None) else 5
    fpn = resnet_fpn_backbone(
        backbone_name=arch, weights=None, norm_layer=norm_layer, trainable_layers=trainable, **fpn_options
    )
    body: nn.Module = fpn.body
    if bands != 3:
        trunks.with_bands(body, bands)
        body.get_submodule("conv1").requires_grad_(trainable > 0)
    if weights.state is not None:
        pretrained.load_into(body, weights, arch)
    return fpn, weights


def _rcnn_counts(input_size: int) -> dict[str, int]:
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

    channels = 256

    def __init__(self, trunk: trunks.Trunk, grids: list[int], drop: float) -> None:
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


class FocalSSD(SSD):  # type: ignore[misc]  # torchvision ships no types
    """SSD with arcgis.learn's ``focal_loss``: every anchor's class scored by sigmoid focal loss (gamma 2,
    alpha 0.25) over the foreground classes, instead of softmax with hard negative mining."""

    def compute_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        head_outputs: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        logits = head_outputs["cls_logits"]
        wanted = torch.zeros_like(logits)
        for i, (target, matched) in enumerate(zip(targets, matched_idxs, strict=True)):
            foreground = torch.where(matched >= 0)[0]
            wanted[i, foreground, target["labels"][matched[foreground]]] = 1.0
        num_foreground = max(1, int(sum(int((m >= 0).sum()) for m in matched_idxs)))
        focal = sigmoid_focal_loss(logits[..., 1:], wanted[..., 1:], reduction="sum")
        losses["classification"] = focal / num_foreground
        return losses


def _class_prior(network: SSD, bias: float) -> None:
    """Start every foreground class logit at ``bias`` (arcgis.learn's ``bias``, -4: about 2 %), so that the
    many empty anchors do not swamp the first steps."""
    for conv in network.head.classification_head.module_list:
        with torch.no_grad():
            conv.bias.view(-1, network.head.classification_head.num_columns)[:, 1:] = bias


def yolo_input_size(input_size: int) -> int:
    """YOLOv3 sees images whose side is a multiple of its coarsest stride."""
    return -(-input_size // yolo.STRIDE) * yolo.STRIDE


def _yolo(
    arch: str, bands: int, num_classes: int, scheme: str, input_size: int, freeze: bool, arguments: dict[str, Any]
) -> tuple[yolo.YOLOv3, nn.Module, pretrained.BackboneWeights]:
    import timm
    from timm.models import FeatureListNet

    darknet = timm.create_model(arch, in_chans=bands, num_classes=0)
    if arguments.get("pretrained_backbone", True):
        weights = pretrained.backbone_weights(arch, bands, scheme)
    else:
        weights = pretrained.BackboneWeights(
            None, None, ["pretrained_backbone False: DarkNet53 starts from random initialisation."]
        )
    if weights.state is not None:
        pretrained.load_into(darknet, weights, arch)
    backbone = FeatureListNet(darknet, out_indices=(3, 4, 5), flatten_sequential=True)
    if freeze and weights.state is not None:
        freeze_batch_norm_2d(backbone)  # type: ignore[no-untyped-call]  # converts in place below the top
        backbone.requires_grad_(False)
    anchors = [(float(w), float(h)) for w, h in arguments.get("anchors") or yolo.COCO_ANCHORS]
    channels = [int(c) for c in backbone.feature_info.channels()]
    return yolo.YOLOv3(backbone, channels, num_classes, anchors, yolo_input_size(input_size)), backbone, weights


def build_detector(
    model_type: str,
    backbone: str,
    bands: int,
    num_classes: int,
    scheme: str,
    input_size: int,
    freeze: bool,
    arguments: dict[str, Any],
) -> BuiltModel:
    """``num_classes`` counts the background; images arrive normalised with the export's statistics."""
    arch = backbone.lower()
    plain = {"image_mean": [0.0] * bands, "image_std": [1.0] * bands}
    sizes = {"min_size": input_size, "max_size": input_size * 4}
    network: nn.Module
    match model_type:
        case "FASTERRCNN" | "MASKRCNN":
            fpn, weights = _fpn(arch, bands, scheme, freeze)
            anchors = AnchorGenerator(tuple((s,) for s in _LEVEL_SIZES), ((0.5, 1.0, 2.0),) * len(_LEVEL_SIZES))
            options = {**_rcnn_counts(input_size), **{k: v for k, v in arguments.items() if k in MASKRCNN_KEYWORDS}}
            kind = MaskRCNN if model_type == "MASKRCNN" else FasterRCNN
            network = kind(fpn, num_classes, rpn_anchor_generator=anchors, **sizes, **plain, **options)
            if model_type == "MASKRCNN" and arguments.get("pointrend", False):
                pointrend.add_mask_point_head(network.get_submodule("roi_heads"), num_classes, fpn.out_channels)
            encoder: nn.Module = fpn.body
        case "RETINANET":
            # RetinaNet's pyramid: P3-P5 from the backbone, P6-P7 computed on top
            p6p7 = LastLevelP6P7(256, 256)
            fpn, weights = _fpn(arch, bands, scheme, freeze, returned_layers=[2, 3, 4], extra_blocks=p6p7)
            scales = [float(s) for s in arguments.get("scales", RETINANET_SCALES)]
            ratios = tuple(float(r) for r in arguments.get("ratios", RETINANET_RATIOS))
            anchors = AnchorGenerator(
                tuple(tuple(base * s for s in scales) for base in _LEVEL_SIZES), (ratios,) * len(_LEVEL_SIZES)
            )
            # torchvision's v2 head: GroupNorm in the towers keeps training from scratch stable, and boxes
            # regress on GIoU
            head = RetinaNetHead(
                256, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 32)
            )
            head.regression_head._loss_type = "giou"
            network = RetinaNet(
                fpn, num_classes, anchor_generator=anchors, head=head, **sizes, **plain, detections_per_img=100
            )
            encoder = fpn.body
        case "SSD":
            trunk, weights = trunks.trunk(arch, bands, scheme)
            if freeze and weights.state is not None:
                freeze_batch_norm_2d(trunk)  # type: ignore[no-untyped-call]  # converts in place below the top
                trunk.requires_grad_(False)
            grids = [int(g) for g in arguments.get("grids") or SSD_GRIDS]
            zooms = [float(z) for z in arguments.get("zooms", SSD_ZOOMS)]
            ratios_wh = [[float(v) for v in pair] for pair in arguments.get("ratios", SSD_RATIOS)]
            features = GridFeatures(trunk, grids, float(arguments.get("drop", SSD_DROP)))
            kind_ssd = FocalSSD if arguments.get("focal_loss", False) else SSD
            network = kind_ssd(
                features,
                GridAnchors(grids, zooms, ratios_wh),
                (input_size, input_size),
                num_classes,
                **plain,
                detections_per_img=100,  # as many as the AP metric scores
            )
            _class_prior(network, float(arguments.get("bias", SSD_BIAS)))
            encoder = trunk
        case "YOLOV3":
            network, encoder, weights = _yolo(arch, bands, num_classes - 1, scheme, input_size, freeze, arguments)
        case _:
            raise ValueError(f"model type {model_type} is not a detector geotrain builds")
    return BuiltModel(network, encoder, weights.source, weights.notes)
