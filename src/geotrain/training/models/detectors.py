"""The object detectors on any band count: FASTERRCNN, RETINANET, SSD, MASKRCNN (torchvision), YOLOV3, DETREG and
MMDETECTION (OpenMMLab's mmdet, where installed).

Every one follows torchvision's detection interface: ``network(images, targets)`` gives a dict of losses
in training mode, ``network(images)`` a list of predictions in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers.norm_act import freeze_batch_norm_2d
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.ssd import SSD
from torchvision.ops import sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from geotrain.dlpk.prf import geotrain_networks as portable
from geotrain.task import catalog
from geotrain.training.matching import hungarian
from geotrain.training.models import pretrained, trunks, yolo
from geotrain.training.models.registry import BuiltModel, with_weights

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


DETR_QUERIES = 50  # object queries: a chip holds far fewer boxes than DETR's 100 for photographs


def detr_input_size(input_size: int) -> int:
    """DETR reads the stride-32 map, whose cells it learns a position for: a side that is a multiple of 32."""
    return -(-input_size // 32) * 32


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
            anchors = portable.rcnn_anchors()
            options = {
                **portable.rcnn_counts(input_size),
                **{k: v for k, v in arguments.items() if k in MASKRCNN_KEYWORDS},
            }
            kind = MaskRCNN if model_type == "MASKRCNN" else FasterRCNN
            network = kind(fpn, num_classes, rpn_anchor_generator=anchors, **sizes, **plain, **options)
            if model_type == "MASKRCNN" and arguments.get("pointrend", False):
                portable.add_mask_point_head(network.get_submodule("roi_heads"), num_classes, fpn.out_channels)
            encoder: nn.Module = fpn.body
        case "RETINANET":
            # RetinaNet's pyramid: P3-P5 from the backbone, P6-P7 computed on top
            p6p7 = LastLevelP6P7(256, 256)
            fpn, weights = _fpn(arch, bands, scheme, freeze, returned_layers=[2, 3, 4], extra_blocks=p6p7)
            scales = [float(s) for s in arguments.get("scales", RETINANET_SCALES)]
            ratios = [float(r) for r in arguments.get("ratios", RETINANET_RATIOS)]
            anchors = portable.retinanet_anchors(scales, ratios)
            head = portable.retinanet_head(anchors, num_classes)
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
            features = portable.GridFeatures(trunk, grids, float(arguments.get("drop", SSD_DROP)))
            kind_ssd = FocalSSD if arguments.get("focal_loss", False) else SSD
            network = kind_ssd(
                features,
                portable.GridAnchors(grids, zooms, ratios_wh),
                (input_size, input_size),
                num_classes,
                **plain,
                detections_per_img=100,  # as many as the AP metric scores
            )
            _class_prior(network, float(arguments.get("bias", SSD_BIAS)))
            encoder = trunk
        case "DETREG":
            size = detr_input_size(input_size)
            queries = int(arguments.get("queries", DETR_QUERIES))
            detr = portable.DetectionTransformer(arch, bands, num_classes - 1, size, queries)
            detr.match = hungarian
            return with_weights(detr, detr.encoder, arch, bands, scheme)
        case "MMDETECTION":
            from geotrain.training.models import openmmlab

            name = catalog.openmmlab_model(model_type, arguments)
            return openmmlab.build_mmdet(name, arch, bands, num_classes, input_size, scheme, freeze)
        case "YOLOV3":
            network, encoder, weights = _yolo(arch, bands, num_classes - 1, scheme, input_size, freeze, arguments)
        case _:
            raise ValueError(f"model type {model_type} is not a detector geotrain builds")
    return BuiltModel(network, encoder, weights.source, weights.notes)
