"""What ArcGIS offers for TrainDeepLearningModel, and which of it geotrain has built.

Torch-free on purpose: the API validates against this without importing the training stack.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESNETS = ("RESNET18", "RESNET34", "RESNET50", "RESNET101", "RESNET152")
DENSENETS = ("DENSENET121", "DENSENET161", "DENSENET169", "DENSENET201")
VGGS = ("VGG11", "VGG11_BN", "VGG13", "VGG13_BN", "VGG16", "VGG16_BN", "VGG19", "VGG19_BN")

# Every backbone keyword the REST task documents (train-task-parameters.md §4.1).
ALL_BACKBONES = (*DENSENETS, "MOBILENET_V2", *RESNETS, *VGGS, "DARKNET53", "REID_V1", "REID_V2")

# Every model_type keyword ArcGIS documents (train-task-parameters.md §4).
ALL_MODEL_TYPES = (
    "SSD", "RETINANET", "YOLOV3", "FASTERRCNN", "MASKRCNN", "MMDETECTION", "UNET", "PSPNET", "DEEPLAB",
    "BDCN_EDGEDETECTOR", "HED_EDGEDETECTOR", "MULTITASK_ROADEXTRACTOR", "CONNECTNET", "MMSEGMENTATION",
    "CHANGEDETECTOR", "MAXDEEPLAB", "FEATURE_CLASSIFIER", "PIX2PIX", "PIX2PIXHD", "CYCLEGAN",
    "SUPERRESOLUTION", "IMAGECAPTIONER", "SIAMMASK", "DEEPSORT",
    # newer Pro releases' keywords that the RA task may accept (train-task-parameters.md §4)
    "DETREG",
)  # fmt: skip


def openmmlab_missing(package: str) -> str | None:
    """What this host lacks to train through OpenMMLab's ``package`` (mmseg, mmdet), or None; found without
    importing them (the API does not import torch)."""
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed"
    mmcv = importlib.util.find_spec("mmcv")
    places = list(mmcv.submodule_search_locations or []) if mmcv is not None else []
    if not any(next(Path(place).glob("_ext*"), None) for place in places):
        return "mmcv's compiled operators (mmcv._ext) are not installed"
    return None


def _shipped_configs(package: str) -> Path | None:
    """The model configs an OpenMMLab ``package`` ships (``<model>/<config>.py``), or None where it is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / ".mim" / "configs"


def mmseg_config_file(name: str) -> Path | None:
    """The ResNet-50 config of mmsegmentation's model ``name`` that geotrain fits to any ResNet, or None."""
    folder = _shipped_configs("mmseg")
    if folder is None or not name.isidentifier():
        return None
    for pattern in (f"{name}_r50-d8_*cityscapes-512x1024.py", f"{name}_r50*cityscapes-512x1024.py", f"{name}_r50*.py"):
        found = sorted((folder / name).glob(pattern))
        if found:
            return found[0]
    return None


# mmsegmentation 1.2.2's models geotrain fits to a ResNet and trains (each built, run and trained on ResNet-18 and
# -50 here; bisenetv1, icnet and fastfcn have backbones of their own, maskformer and mask2former other outputs)
MMSEG_MODELS = (
    "ann", "apcnet", "ccnet", "danet", "deeplabv3", "deeplabv3plus", "dmnet", "emanet", "encnet", "fcn", "gcnet",
    "isanet", "psanet", "pspnet", "upernet",
)  # fmt: skip


def mmseg_model_names() -> list[str]:
    """The models of MMSEG_MODELS the installed mmsegmentation ships a config for."""
    return [name for name in MMSEG_MODELS if mmseg_config_file(name) is not None]


# arcgis.learn's MMDetection model names with the ResNet-50 config of mmdet 3.3.0 geotrain fits to any ResNet (each
# built, trained a step and run here: tests/unit/test_mmdet_bridge.py)
MMDET_MODELS = {
    "atss": "atss/atss_r50_fpn_1x_coco.py",
    "cascade_rcnn": "cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py",
    "cascade_rpn": "cascade_rpn/cascade-rpn_faster-rcnn_r50-caffe_fpn_1x_coco.py",
    "dcn": "dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py",
    "detectors": "detectors/detectors_cascade-rcnn_r50_1x_coco.py",
    "dino": "dino/dino-4scale_r50_8xb2-12e_coco.py",
    "double_heads": "double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py",
    "dynamic_rcnn": "dynamic_rcnn/dynamic-rcnn_r50_fpn_1x_coco.py",
    "empirical_attention": "empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py",
    "fcos": "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
    "foveabox": "foveabox/fovea_r50_fpn_4xb4-1x_coco.py",
    "fsaf": "fsaf/fsaf_r50_fpn_1x_coco.py",
    "ghm": "ghm/retinanet_r50_fpn_ghm-1x_coco.py",
    "libra_rcnn": "libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py",
    "nas_fcos": "nas_fcos/nas-fcos_r50-caffe_fpn_nashead-gn-head_4xb4-1x_coco.py",
    "pafpn": "pafpn/faster-rcnn_r50_pafpn_1x_coco.py",
    "pisa": "pisa/faster-rcnn_r50_fpn_pisa_1x_coco.py",
    "reppoints": "reppoints/reppoints-moment_r50_fpn-gn_head-gn_1x_coco.py",
    "sabl": "sabl/sabl-faster-rcnn_r50_fpn_1x_coco.py",
    "vfnet": "vfnet/vfnet_r50_fpn_1x_coco.py",
}
# those whose layers replace a bottleneck block's convolutions (deformable, attention, DetectoRS's switchable
# atrous ones): mmdet builds them on ResNet-50 and deeper only
MMDET_BOTTLENECK_ONLY = ("dcn", "detectors", "empirical_attention")
# arcgis.learn's other MMDetection names, and why geotrain does not offer them
MMDET_NOT_OFFERED = {
    "carafe": "CARAFE's upsampling operator has no CPU kernel in mmcv, so it cannot train or run on a host without "
    "a GPU",
    "hrnet": "its backbone is an HRNet, not a ResNet that backbone_model chooses",
    "regnet": "its backbone is a RegNet, not a ResNet that backbone_model chooses",
    "res2net": "its backbone is a Res2Net, not a ResNet that backbone_model chooses",
}
# the OpenMMLab model types, their network the 'model' argument's, and the model a request naming none trains
# (arcgis.learn's defaults)
OPENMMLAB_DEFAULT_MODEL = {"MMSEGMENTATION": "deeplabv3", "MMDETECTION": "cascade_rcnn"}


def openmmlab_model(model_type: str, arguments: Mapping[str, Any]) -> str:
    """The OpenMMLab model an MMSEGMENTATION or MMDETECTION request's ``arguments`` train."""
    return str(arguments.get("model", OPENMMLAB_DEFAULT_MODEL[model_type]))


def mmdet_config_file(name: str) -> Path | None:
    """The ResNet-50 config of arcgis.learn's MMDetection model ``name`` in the installed mmdet, or None."""
    folder = _shipped_configs("mmdet")
    if folder is None or name not in MMDET_MODELS:
        return None
    path = folder / MMDET_MODELS[name]
    return path if path.is_file() else None


def mmdet_model_names() -> list[str]:
    """The models of MMDET_MODELS the installed mmdet ships a config for."""
    return [name for name in MMDET_MODELS if mmdet_config_file(name) is not None]


_OPENMMLAB = (
    "{missing}. {keyword} trains through OpenMMLab's {package}, whose models "
    "load mmcv's compiled operators (mmcv >= 2.0.0rc4, < 2.2.0): install geotrain's 'openmmlab' extra on a host "
    "that has mmcv 2.1.0 built with its operators (PyPI has mmcv only as source, and its setup compiles as C++17 "
    "where the headers of the torch 2.14.1 geotrain is pinned to require C++20: README's OpenMMLab section builds "
    "it). Train {instead} model instead"
)

# model types geotrain refuses for a reason that holds on this server (the OpenMMLab ones where OpenMMLab is missing)
REFUSED: dict[str, str] = {}

MONITORS = (
    "VALID_LOSS", "AVERAGE_PRECISION", "ACCURACY", "F1_SCORE", "MIOU", "DICE", "PRECISION", "RECALL",
    "CORPUS_BLEU", "MULTI_LABEL_FBETA",
)  # fmt: skip


@dataclass(frozen=True)
class ModelTypeInfo:
    keyword: str
    family: str
    formats: tuple[str, ...]
    backbones: tuple[str, ...]
    default_backbone: str
    monitors: tuple[str, ...]
    # argument name -> human description of the allowed values (used in error messages)
    arguments: dict[str, str] = field(default_factory=dict)
    # arguments ArcGIS documents for this model that geotrain does not implement yet
    arguments_not_yet: tuple[str, ...] = ()
    # backbones ArcGIS accepts for this model that geotrain cannot build yet
    backbones_not_yet: tuple[str, ...] = ()
    # what the export must hold beyond its format (training/data/export.py:data_kind); empty: the format's own
    data_kinds: tuple[str, ...] = ()

    @property
    def backbones_built(self) -> tuple[str, ...]:
        return tuple(b for b in self.backbones if b not in self.backbones_not_yet)


# arcgis.learn's ImageCaptioner decoder settings and their defaults
DECODE_DEFAULTS = {
    "embed_size": 100, "hidden_size": 100, "attention_size": 100, "teacher_forcing": 1, "dropout": 0.1,
    "pretrained_emb": False,
}  # fmt: skip
DECODE_PARAMS = (
    "a dictionary of embed_size, hidden_size, attention_size (whole numbers from 8 to 2048; 100 each), "
    "teacher_forcing (0 to 1; 1), dropout (0 to 0.9; 0.1) and pretrained_emb (False: pretrained word embeddings "
    "cannot be downloaded here)"
)

_SEGMENTATION_ARGUMENTS = {
    "class_balancing": "True or False",
    "mixup": "True or False",
    "focal_loss": "True or False",
    "dice_loss_fraction": "a number from 0 to 1",
    "dice_loss_average": "'micro' or 'macro'",
    "ignore_classes": "a list of class values, e.g. [3, 7]",
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss, accuracy or valid_miou",
}

_POINTREND = "True or False (a PointRend head refines the most uncertain pixels)"

_DETECTION_ARGUMENTS = {
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss or average_precision",
}

_WHOLE = "a whole number of at least 1"
_SHARE = "a number from 0 to 1"
_MASKRCNN_ARGUMENTS = {
    **{f"rpn_{k}": _WHOLE for k in ("pre_nms_top_n_train", "pre_nms_top_n_test", "post_nms_top_n_train",
                                    "post_nms_top_n_test", "batch_size_per_image")},
    **{f"rpn_{k}": _SHARE for k in ("nms_thresh", "fg_iou_thresh", "bg_iou_thresh", "positive_fraction")},
    **{f"box_{k}": _WHOLE for k in ("detections_per_img", "batch_size_per_image")},
    **{f"box_{k}": _SHARE for k in ("score_thresh", "nms_thresh", "fg_iou_thresh", "bg_iou_thresh",
                                    "positive_fraction")},
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss or average_precision",
}  # fmt: skip

_ROAD_ARGUMENTS = {
    "mtl_model": "'hourglass' (stacked hourglasses, arcgis.learn's default) or 'linknet' (a U-Net on the backbone)",
    "orient_bin_size": "a whole number of degrees from 1 to 90, the width of a direction bin (20)",
    "gaussian_thresh": "a number from 0 to 1 (accepted; geotrain trains on the masks as they are, so it has no effect)",
    "orient_theta": "a whole number from 1 to 64 (accepted; directions come from the masks' structure, so it has no "
    "effect)",
    "class_balancing": "True or False",
    "focal_loss": "True or False",
    "dice_loss_fraction": "a number from 0 to 1",
    "dice_loss_average": "'micro' or 'macro'",
    "ignore_classes": "a list of class values, e.g. [3, 7]",
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss, accuracy, miou or dice",
}

_EDGE_ARGUMENTS = {
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss, accuracy or f1_score",
}

BUILT: dict[str, ModelTypeInfo] = {
    "BDCN_EDGEDETECTOR": ModelTypeInfo(
        keyword="BDCN_EDGEDETECTOR",
        family="edge_detection",
        formats=("Classified_Tiles",),
        backbones=(*RESNETS, *VGGS),
        default_backbone="VGG19",
        monitors=("VALID_LOSS", "ACCURACY", "F1_SCORE"),
        arguments=_EDGE_ARGUMENTS,
    ),
    "CHANGEDETECTOR": ModelTypeInfo(
        keyword="CHANGEDETECTOR",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET18",
        monitors=("VALID_LOSS", "PRECISION", "RECALL", "F1_SCORE"),
        arguments={
            "attention_type": "'PAM' (self-attention within regions at four scales, the default) or 'BAM' (over "
            "the whole map)",
            "chip_size": "an integer chip size in pixels",
            "monitor": "valid_loss, precision, recall or f1",
        },
        data_kinds=("ChangeDetection",),
    ),
    "CONNECTNET": ModelTypeInfo(
        keyword="CONNECTNET",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU", "DICE"),
        arguments=_ROAD_ARGUMENTS,
    ),
    "CYCLEGAN": ModelTypeInfo(
        keyword="CYCLEGAN",
        family="image_translation",
        formats=("CycleGAN",),
        backbones=(),  # its generators are ResNet-block networks of their own
        default_backbone="",
        monitors=("VALID_LOSS",),
        arguments={
            "gen_blocks": "a whole number of residual blocks in each generator, from 1 to 32 (9)",
            "lsgan": "True (least-squares adversarial loss, the default) or False (binary cross-entropy)",
            "chip_size": "an integer chip size in pixels",
            "monitor": "valid_loss",
        },
    ),
    "DEEPLAB": ModelTypeInfo(
        keyword="DEEPLAB",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=(*RESNETS, *DENSENETS, *VGGS),
        default_backbone="RESNET101",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments={
            **_SEGMENTATION_ARGUMENTS,
            "pointrend": _POINTREND,
            # arcgis.learn: it changes the network only together with pointrend
            "keep_dilation": "True or False (with pointrend: keep the backbone's full dilation)",
        },
    ),
    "FEATURE_CLASSIFIER": ModelTypeInfo(
        keyword="FEATURE_CLASSIFIER",
        family="object_classification",
        formats=("Labeled_Tiles", "MultiLabeled_Tiles", "Imagenet"),
        backbones=(*RESNETS, "MOBILENET_V2"),
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY"),
        arguments={
            "mixup": "True or False",
            "oversample": "True or False",
            "chip_size": "an integer chip size in pixels",
            "monitor": "valid_loss or accuracy",
        },
        data_kinds=("Labeled_Tiles", "MultiLabeled_Tiles", "Imagenet"),
    ),
    "DEEPSORT": ModelTypeInfo(
        keyword="DEEPSORT",
        family="object_classification",
        formats=("Imagenet",),
        backbones=("REID_V1", "REID_V2"),
        default_backbone="REID_V1",
        monitors=("VALID_LOSS", "ACCURACY"),
        arguments={"chip_size": "an integer chip size in pixels", "monitor": "valid_loss or accuracy"},
    ),
    "DETREG": ModelTypeInfo(
        keyword="DETREG",
        family="object_detection",
        formats=("PASCAL_VOC_rectangles", "KITTI_rectangles"),
        backbones=RESNETS,
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments={
            "queries": "a whole number of object queries from 1 to 300 (50), more than the boxes a chip holds",
            **_DETECTION_ARGUMENTS,
        },
    ),
    "MAXDEEPLAB": ModelTypeInfo(
        keyword="MAXDEEPLAB",
        family="panoptic_segmentation",
        formats=("Panoptic_Segmentation",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS",),
        arguments={
            "n_masks": "a whole number of mask queries from 1 to 200 (30), at least the segments a chip holds",
            "monitor": "valid_loss",
        },
    ),
    "IMAGECAPTIONER": ModelTypeInfo(
        keyword="IMAGECAPTIONER",
        family="image_captioning",
        formats=("MultiLabeled_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY", "CORPUS_BLEU"),
        arguments={
            "decode_params": DECODE_PARAMS,
            "decoder_params": DECODE_PARAMS,
            "chip_size": "an integer chip size in pixels",
            "monitor": "valid_loss, accuracy or corpus_bleu",
        },
        data_kinds=("ImageCaptioning",),
    ),
    "FASTERRCNN": ModelTypeInfo(
        keyword="FASTERRCNN",
        family="object_detection",
        formats=("PASCAL_VOC_rectangles", "KITTI_rectangles"),
        backbones=RESNETS,
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments=_DETECTION_ARGUMENTS,
    ),
    "HED_EDGEDETECTOR": ModelTypeInfo(
        keyword="HED_EDGEDETECTOR",
        family="edge_detection",
        formats=("Classified_Tiles",),
        backbones=(*RESNETS, *VGGS),
        default_backbone="VGG19",
        monitors=("VALID_LOSS", "ACCURACY", "F1_SCORE"),
        arguments=_EDGE_ARGUMENTS,
    ),
    "MASKRCNN": ModelTypeInfo(
        keyword="MASKRCNN",
        family="instance_segmentation",
        formats=("RCNN_Masks",),
        backbones=RESNETS,
        default_backbone="RESNET50",
        # ArcGIS monitors only the loss; geotrain scores masks every epoch, so their AP can be monitored too
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments={**_MASKRCNN_ARGUMENTS, "pointrend": "True or False (a PointRend head refines the masks)"},
    ),
    "PIX2PIXHD": ModelTypeInfo(
        keyword="PIX2PIXHD",
        family="image_translation",
        formats=("Export_Tiles",),
        backbones=(),  # pix2pixHD's generator is its own ResNet-block network
        default_backbone="",
        monitors=("VALID_LOSS",),
        arguments={
            "gen_network": "'global' (the global generator alone, the default) or 'local' (with local enhancers)",
            "n_local_enhancers": "a whole number of local enhancers, each doubling the size, from 1 to 3 (1)",
            "n_blocks_local": "a whole number of residual blocks in each local enhancer, from 1 to 32 (3)",
            "n_gen_filters": "a whole number of filters in the generator's first layer, 8 to 256 (64)",
            "n_downsample_global": "a whole number of stride-2 steps in the generator, 1 to 6 (4)",
            "n_blocks_global": "a whole number of residual blocks in the generator, 1 to 32 (9)",
            "norm": "'instance' (the default) or 'batch' normalization in the discriminators",
            "lsgan": "True (least-squares adversarial loss, the default) or False (cross-entropy)",
            "n_dscr_filters": "a whole number of filters in each discriminator's first layer, 8 to 256 (64)",
            "n_layers_dscr": "a whole number of stride-2 layers in each discriminator, 1 to 5 (3)",
            "n_dscr": "a whole number of discriminators, each at half the previous one's resolution, 1 to 4 (2)",
            "feat_loss": "True (feature matching with the discriminators' layers, the default) or False",
            "vgg_loss": "True or False (accepted; geotrain uses the L1 distance to the target instead)",
            "lambda_feat": "a number from 0 to 1000, the feature matching loss's weight (10)",
            "lambda_l1": "a number from 0 to 1000, the L1 distance's weight (100)",
            "chip_size": "an integer chip size in pixels",
            "monitor": "valid_loss",
        },
        data_kinds=("Pix2Pix",),
    ),
    "PSPNET": ModelTypeInfo(
        keyword="PSPNET",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=(*RESNETS, *DENSENETS, *VGGS),
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments={
            **_SEGMENTATION_ARGUMENTS,
            "use_unet": "True or False (True, the default: a U-Net decoder upsamples the pyramid's output)",
            "use_net": "True or False (Pro's spelling of use_unet)",
            "pyramid_sizes": "a list of pooling grid sizes, e.g. [1, 2, 3, 6]",
            "unet_aux_loss": "True or False (with use_unet: an auxiliary head adds 0.4 of its loss)",
            "pointrend": _POINTREND,
            # accepted as arcgis.learn accepts it; the PSPNets here have no dilated backbone to keep
            "keep_dilation": "True or False (no effect: this PSPNet has no dilated backbone)",
        },
    ),
    "MULTITASK_ROADEXTRACTOR": ModelTypeInfo(
        keyword="MULTITASK_ROADEXTRACTOR",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU", "DICE"),
        arguments=_ROAD_ARGUMENTS,
    ),
    "PIX2PIX": ModelTypeInfo(
        keyword="PIX2PIX",
        family="image_translation",
        formats=("Export_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET18",
        monitors=("VALID_LOSS",),
        arguments={"chip_size": "an integer chip size in pixels", "monitor": "valid_loss"},
        data_kinds=("Pix2Pix",),
    ),
    "RETINANET": ModelTypeInfo(
        keyword="RETINANET",
        family="object_detection",
        formats=("PASCAL_VOC_rectangles", "KITTI_rectangles"),
        backbones=RESNETS,
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments={
            "scales": "a list of anchor scales, e.g. [1, 0.8, 0.63]",
            "ratios": "a list of anchor aspect ratios, e.g. [0.5, 1, 2]",
            **_DETECTION_ARGUMENTS,
        },
    ),
    "SIAMMASK": ModelTypeInfo(
        keyword="SIAMMASK",
        family="object_tracking",
        formats=("RCNN_Masks",),
        # ArcGIS fixes ResNet-50; geotrain builds the other ResNets too (smaller, faster trackers)
        backbones=RESNETS,
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "MIOU"),
        arguments={
            "exemplar_size": "a whole number of pixels from 17 to 512, the exemplar's side (127)",
            "instance_size": "a whole number of pixels from 32 to 1024, the search window's side (255; twice the "
            "exemplar's plus one when exemplar_size is given), at least 16 more than the exemplar's",
            "frame_range": "a whole number from 0 to 10000: how many frames apart an exemplar and its search window "
            "may be drawn (20; 0: from the same frame)",
            "chip_size": "an integer chip size in pixels (the exemplar's side)",
            "monitor": "valid_loss or mIOU",
        },
    ),
    "SSD": ModelTypeInfo(
        keyword="SSD",
        family="object_detection",
        formats=("PASCAL_VOC_rectangles", "KITTI_rectangles"),
        backbones=(*RESNETS, *DENSENETS, *VGGS, "MOBILENET_V2"),
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments={
            "grids": "a list of grid sizes from 1 to 64, e.g. [4, 2, 1]",
            "zooms": "a list of anchor zooms, e.g. [0.7, 1.0, 1.3]",
            "ratios": "a list of [width, height] anchor ratios, e.g. [[1.0, 1.0], [1.0, 0.5], [0.5, 1.0]]",
            "drop": "a dropout probability from 0 to 0.99",
            "location_loss_factor": "a number from 0 to 1 (the share of the loss given to box positions)",
            "focal_loss": "True or False",
            "bias": "a number from -20 to 20 (the starting class logit)",
            "ssd_version": "1 or 2 (2, the default: grids fitted to the boxes when none are given; 1: [4, 2, 1])",
            **_DETECTION_ARGUMENTS,
        },
    ),
    "YOLOV3": ModelTypeInfo(
        keyword="YOLOV3",
        family="object_detection",
        formats=("PASCAL_VOC_rectangles", "KITTI_rectangles"),
        backbones=("DARKNET53",),
        default_backbone="DARKNET53",
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments={
            "anchors": "nine [width, height] anchor sizes in pixels of the network's input, smallest first",
            "pretrained_backbone": "True or False (True: DarkNet53's ImageNet weights from the local cache)",
            "n_bands": "the export's band count (geotrain reads it from the export; a different number is refused)",
            **_DETECTION_ARGUMENTS,
        },
    ),
    "SUPERRESOLUTION": ModelTypeInfo(
        keyword="SUPERRESOLUTION",
        family="image_translation",
        formats=("Export_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS",),
        arguments={
            "downsample_factor": "a whole number from 2 to 16 (how many times coarser the inputs are made; 4)",
            "chip_size": "an integer chip size in pixels",
            "monitor": "valid_loss",
        },
    ),
    "UNET": ModelTypeInfo(
        keyword="UNET",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments=_SEGMENTATION_ARGUMENTS,
    ),
}


def _offer_openmmlab(info: ModelTypeInfo, package: str, published: str, instead: str) -> None:
    """``info`` built where this host has OpenMMLab's ``package`` (an import name), else refused saying what is
    missing and how to get it."""
    missing = openmmlab_missing(package)
    if missing is None:
        BUILT[info.keyword] = info
    else:
        REFUSED[info.keyword] = _OPENMMLAB.format(
            keyword=info.keyword, missing=missing, package=published, instead=instead
        )


_offer_openmmlab(
    ModelTypeInfo(
        keyword="MMSEGMENTATION",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments={
            "model": "the name of an mmsegmentation model with a ResNet config, as arcgis.learn's MMSegmentation takes "
            "it (deeplabv3, the default; e.g. pspnet, fcn, upernet, ccnet, danet)",
            **_SEGMENTATION_ARGUMENTS,
        },
    ),
    "mmseg",
    "mmsegmentation 1.2.2",
    "a UNET, PSPNET or DEEPLAB",
)
_offer_openmmlab(
    ModelTypeInfo(
        keyword="MMDETECTION",
        family="object_detection",
        formats=("PASCAL_VOC_rectangles", "KITTI_rectangles"),
        backbones=RESNETS,
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "AVERAGE_PRECISION"),
        arguments={
            "model": "the name of an mmdet detector as arcgis.learn's MMDetection takes it (cascade_rcnn, the "
            "default; e.g. atss, fcos, vfnet, libra_rcnn, double_heads)",
            **_DETECTION_ARGUMENTS,
        },
    ),
    "mmdet",
    "mmdet 3.3.0",
    "a FASTERRCNN, RETINANET, SSD or YOLOV3",
)


def built_model_types() -> list[str]:
    return sorted(BUILT)
