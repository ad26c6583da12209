"""What ArcGIS offers for TrainDeepLearningModel, and which of it geotrain has built.

Torch-free on purpose: the API validates against this without importing the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
)  # fmt: skip

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

    @property
    def backbones_built(self) -> tuple[str, ...]:
        return tuple(b for b in self.backbones if b not in self.backbones_not_yet)


_SEGMENTATION_ARGUMENTS = {
    "class_balancing": "True or False",
    "focal_loss": "True or False",
    "dice_loss_fraction": "a number from 0 to 1",
    "dice_loss_average": "'micro' or 'macro'",
    "ignore_classes": "a list of class values, e.g. [3, 7]",
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss, accuracy or valid_miou",
}

_DETECTION_ARGUMENTS = {
    "chip_size": "an integer chip size in pixels",
    "monitor": "valid_loss or average_precision",
}

BUILT: dict[str, ModelTypeInfo] = {
    "DEEPLAB": ModelTypeInfo(
        keyword="DEEPLAB",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=(*RESNETS, *DENSENETS, *VGGS),
        default_backbone="RESNET101",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments=_SEGMENTATION_ARGUMENTS,
        arguments_not_yet=("mixup", "pointrend", "keep_dilation"),
        # DeepLabV3 needs dilated convolutions; DenseNet and VGG downsample by pooling and have none
        backbones_not_yet=(*DENSENETS, *VGGS),
    ),
    "FEATURE_CLASSIFIER": ModelTypeInfo(
        keyword="FEATURE_CLASSIFIER",
        family="object_classification",
        formats=("Labeled_Tiles", "MultiLabeled_Tiles", "Imagenet"),
        backbones=(*RESNETS, "MOBILENET_V2"),
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY"),
        arguments={"chip_size": "an integer chip size in pixels", "monitor": "valid_loss or accuracy"},
        arguments_not_yet=("mixup", "oversample"),
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
    "PSPNET": ModelTypeInfo(
        keyword="PSPNET",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=(*RESNETS, *DENSENETS, *VGGS),
        default_backbone="RESNET50",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments=_SEGMENTATION_ARGUMENTS,
        # segmentation-models-pytorch's PSPNet has a fixed pyramid and no U-Net decoder option
        arguments_not_yet=(
            "mixup",
            "use_unet",
            "use_net",
            "pyramid_sizes",
            "unet_aux_loss",
            "pointrend",
            "keep_dilation",
        ),
    ),
    "UNET": ModelTypeInfo(
        keyword="UNET",
        family="pixel_classification",
        formats=("Classified_Tiles",),
        backbones=RESNETS,
        default_backbone="RESNET34",
        monitors=("VALID_LOSS", "ACCURACY", "MIOU"),
        arguments=_SEGMENTATION_ARGUMENTS,
        arguments_not_yet=("mixup",),
    ),
}


def built_model_types() -> list[str]:
    return sorted(BUILT)
