"""MMSEGMENTATION and MMDETECTION: an mmsegmentation or mmdet model picked by arcgis.learn's ``model`` name, from
the config files the package ships, fitted to the export (bands, classes, the ResNet depth of ``backbone_model``),
trained by geotrain as its own pixel classifiers and detectors are. Needs the ``openmmlab`` extra and mmcv with its
operators (``task.catalog.openmmlab_missing`` says what is missing); the names and config files are the
catalogue's."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from geotrain.dlpk.prf.geotrain_networks import MMDetNet, MMSegNet, rcnn_counts
from geotrain.task.catalog import mmdet_config_file, mmseg_config_file
from geotrain.training.models import pretrained
from geotrain.training.models.registry import BuiltModel

# a ResNet-50's stage widths, and a ResNet-18's or -34's (no bottleneck: a quarter of them)
WIDE, NARROW = (256, 512, 1024, 2048), (64, 128, 256, 512)
COCO_CLASSES = 80  # what mmdet's configs are written for
DETR_QUERIES = 100  # DINO's queries and detections per chip


def _edited(value: Any, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """``value`` (a config, nested) with ``edit`` applied to each of its dicts, innermost first."""
    if isinstance(value, dict):
        return edit({k: _edited(v, edit) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return [_edited(v, edit) for v in value]
    return value


def _single_process(part: dict[str, Any]) -> dict[str, Any]:
    """SyncBN made BN: one process may train it."""
    return {**part, "type": "BN"} if part.get("type") == "SyncBN" else part


def _narrowed(part: dict[str, Any], swap: dict[int, int]) -> dict[str, Any]:
    """The ResNet-50 stage widths a part reading the backbone takes as ``*in_channels`` (in_channels,
    deeplabv3plus's c1_in_channels) swapped for the chosen ResNet's."""
    return {k: _widths(v, swap) if k.endswith("in_channels") else v for k, v in part.items()}


def _widths(value: Any, swap: dict[int, int]) -> Any:
    if isinstance(value, list):
        return [swap.get(v, v) for v in value]
    return swap.get(value, value)


def _export_classes(part: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """A head's COCO class count made the export's."""
    return {**part, "num_classes": num_classes} if part.get("num_classes") == COCO_CLASSES else part


def _offline(part: dict[str, Any]) -> dict[str, Any]:
    """Without the pretrained checkpoints mmdet's configs name (downloaded from OpenMMLab's and torchvision's
    servers, which geotrain does not do: its own cache is loaded instead)."""
    out = {k: v for k, v in part.items() if k != "pretrained"}
    if isinstance(out.get("init_cfg"), dict) and out["init_cfg"].get("type") == "Pretrained":
        out["init_cfg"] = None
    return out


def _swap(arch: str) -> dict[int, int]:
    return dict(zip(WIDE, NARROW, strict=True)) if int(arch.removeprefix("resnet")) < 50 else {}


def _json(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(config))  # tuples as lists: what the EMD will hold
    return out


def model_config(name: str, arch: str, bands: int, num_classes: int) -> dict[str, Any]:
    """The mmsegmentation model config of ``name`` for ``arch`` (resnet18..152), ``bands`` and ``num_classes``
    (NoData included), without pretrained weights or its auxiliary head (geotrain trains the decode head's
    output), as plain JSON-ready data."""
    from mmengine.config import Config

    path = mmseg_config_file(name)
    if path is None:
        raise ValueError(f"mmsegmentation has no ResNet-50 config for '{name}'")
    swap = _swap(arch)
    model = _edited(Config.fromfile(str(path)).model.to_dict(), lambda part: _narrowed(_single_process(part), swap))
    backbone = model["backbone"]
    if "depth" not in backbone:
        raise ValueError(f"'{name}' has no ResNet backbone")
    backbone.update(depth=int(arch.removeprefix("resnet")), in_channels=bands, init_cfg=None)
    model.update(pretrained=None, data_preprocessor=None, auxiliary_head=None)
    heads = model["decode_head"] if isinstance(model["decode_head"], list) else [model["decode_head"]]
    for head in heads:
        head["num_classes"] = num_classes
    return _json(model)


def build_mmseg(name: str, arch: str, bands: int, num_classes: int) -> BuiltModel:
    config = model_config(name, arch, bands, num_classes)
    network = MMSegNet(config)
    note = (
        f"mmsegmentation's {name} on {arch}, built from its config; the backbone starts from random initialisation "
        "(OpenMMLab's pretrained weights are downloaded from its servers, which geotrain does not do)."
    )
    return BuiltModel(network, network.model.backbone, None, [note])


def detector_config(
    name: str, arch: str, bands: int, num_classes: int, input_size: int, frozen: bool
) -> dict[str, Any]:
    """The mmdet model config of arcgis.learn's ``name`` for ``arch`` (resnet18..152), ``bands`` and
    ``num_classes`` (foreground only, as mmdet counts them), as plain JSON-ready data. The backbone becomes a
    torchvision-layout ResNet that learns its BatchNorm (mmdet's configs freeze a stage and BatchNorm for
    ImageNet weights that a from-scratch start does not have); ``frozen`` keeps its BatchNorm as ImageNet's."""
    from mmengine.config import Config

    path = mmdet_config_file(name)
    if path is None:
        raise ValueError(f"geotrain has no mmdet config for '{name}'")
    model = _edited(
        Config.fromfile(str(path)).model.to_dict(),
        lambda part: _offline(_export_classes(_single_process(part), num_classes)),
    )
    if "depth" not in model["backbone"]:
        raise ValueError(f"'{name}' has no ResNet backbone")
    resnets = [model["backbone"]]
    necks = model["neck"] if isinstance(model["neck"], list) else [model["neck"]]
    if "rfp_backbone" in necks[0]:  # DetectoRS's recursive pyramid runs a second backbone on the image
        resnets.append(necks[0]["rfp_backbone"])
    for resnet in resnets:
        resnet.update(
            depth=int(arch.removeprefix("resnet")), in_channels=bands, init_cfg=None, style="pytorch",
            frozen_stages=-1, norm_eval=False, norm_cfg={"type": "BN", "requires_grad": True},
        )  # fmt: skip
    if frozen:  # BatchNorm keeps ImageNet's statistics; build_mmdet freezes ResNet's own weights once loaded
        model["backbone"].update(norm_eval=True, norm_cfg={"type": "BN", "requires_grad": False})
    # only the first neck reads the backbone's stages: later necks and the heads read the first neck's widths
    swap = _swap(arch)
    necks[0] = _edited(necks[0], lambda part: _narrowed(part, swap))
    model["neck"] = necks if isinstance(model["neck"], list) else necks[0]
    if "num_queries" in model:
        # DINO picks its queries among the encoder's cells (strides 8 to 64), which a 128 px chip has 340 of, not
        # the 900 queries of its config
        cells = sum(math.ceil(input_size / stride) ** 2 for stride in (8, 16, 32, 64))
        model["num_queries"] = min(int(model["num_queries"]), DETR_QUERIES, cells)
        model["test_cfg"]["max_per_img"] = model["num_queries"]
    _proposal_counts(model, input_size)
    model.update(data_preprocessor=None)
    return _json(model)


def _proposal_counts(model: dict[str, Any], input_size: int) -> None:
    """A two-stage detector's proposal and sampled-region counts scaled to the chip's area, as geotrain's
    FASTERRCNN has them (mmdet's suit 800 px photographs; on a 128 px chip the box heads ran ten times longer)."""
    counts = rcnn_counts(input_size)
    train, test = model.get("train_cfg") or {}, model.get("test_cfg") or {}
    for cfg, pre, post in (
        (train.get("rpn_proposal"), "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train"),
        (test.get("rpn"), "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test"),
    ):
        if isinstance(cfg, dict) and "nms_pre" in cfg:
            cfg["nms_pre"] = min(int(cfg["nms_pre"]), counts[pre])
            cfg["max_per_img"] = min(int(cfg.get("max_per_img", counts[post])), counts[post])
    stages = train.get("rcnn") or []
    for stage in stages if isinstance(stages, list) else [stages]:
        sampler = stage.get("sampler") if isinstance(stage, dict) else None
        if isinstance(sampler, dict) and "num" in sampler:
            sampler["num"] = min(int(sampler["num"]), counts["box_batch_size_per_image"])


def build_mmdet(
    name: str, arch: str, bands: int, num_classes: int, input_size: int, scheme: str, freeze: bool
) -> BuiltModel:
    """``num_classes`` counts the background, as geotrain's other detectors do."""
    weights = pretrained.backbone_weights(arch, bands, scheme)
    frozen = freeze and weights.state is not None
    config = detector_config(name, arch, bands, num_classes - 1, input_size, frozen)
    network = MMDetNet(config, input_size)
    with _quiet_mmengine():
        network.model.init_weights()  # the heads' own initialisation (a focal-loss head's prior, for one)
    for module in network.model.modules():
        # DetectoRS's backbone initialises its convolutions without calling its switchable ones' own
        # initialisation, which starts them as the plain convolution they replace
        if type(module).__name__ == "SAConv2d":
            module.init_weights()
    notes = [*weights.notes, f"mmdet's {name} on {arch}, built from its config."]
    if weights.state is not None:
        backbone = network.model.backbone
        # deformable offsets, attention, DetectoRS's switches: layers of the model's own beside ResNet's
        extra = pretrained.load_into(backbone, weights, arch, extra_layers=True)
        for rfp in getattr(network.model.neck, "rfp_modules", []):  # DetectoRS's second ResNet, trained along
            pretrained.load_into(rfp, weights, arch, extra_layers=True)
        if extra:
            notes.append(f"{len(extra)} tensors of {name}'s backbone are layers of its own, trained from their start.")
        if frozen:
            for key, parameter in backbone.named_parameters():
                parameter.requires_grad_(key not in weights.state)
    return BuiltModel(network, network.model.backbone, weights.source, notes)


@contextmanager
def _quiet_mmengine() -> Iterator[None]:
    """mmengine logs every tensor's initialisation at INFO, a line each: kept out of the job's log."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
