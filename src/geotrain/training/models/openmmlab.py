"""MMSEGMENTATION: an mmsegmentation model picked by arcgis.learn's ``model`` name, from the config files the
package ships, fitted to the export (bands, classes, the ResNet depth of ``backbone_model``), trained by geotrain
as its own pixel classifiers are. Needs the ``openmmlab`` extra and mmcv with its operators
(``task.catalog.openmmlab_missing`` says what is missing); the names and config files are the catalogue's."""

from __future__ import annotations

import json
from typing import Any

from geotrain.dlpk.prf.geotrain_networks import MMSegNet
from geotrain.task.catalog import mmseg_config_file
from geotrain.training.models.registry import BuiltModel

MODEL = "deeplabv3"  # arcgis.learn's default
# a ResNet-50's stage widths, and a ResNet-18's or -34's (no bottleneck: a quarter of them)
WIDE, NARROW = (256, 512, 1024, 2048), (64, 128, 256, 512)


def _replace(value: Any, swap: dict[int, int]) -> Any:
    """``value`` (a config, nested) with SyncBN made BN (one process may train it) and the ResNet-50 stage widths
    that necks and heads read swapped for the chosen ResNet's."""
    if isinstance(value, dict):
        out = {k: _replace(v, swap) for k, v in value.items()}
        if out.get("type") == "SyncBN":
            out["type"] = "BN"
        for key in [k for k in out if k.endswith("in_channels")]:  # in_channels, deeplabv3plus's c1_in_channels
            out[key] = _widths(out[key], swap)
        return out
    if isinstance(value, list | tuple):
        return [_replace(v, swap) for v in value]
    return value


def _widths(value: Any, swap: dict[int, int]) -> Any:
    if isinstance(value, list):
        return [swap.get(v, v) for v in value]
    return swap.get(value, value)


def model_config(name: str, arch: str, bands: int, num_classes: int) -> dict[str, Any]:
    """The mmsegmentation model config of ``name`` for ``arch`` (resnet18..152), ``bands`` and ``num_classes``
    (NoData included), without pretrained weights or its auxiliary head (geotrain trains the decode head's
    output), as plain JSON-ready data."""
    from mmengine.config import Config

    path = mmseg_config_file(name)
    if path is None:
        raise ValueError(f"mmsegmentation has no ResNet-50 config for '{name}'")
    depth = int(arch.removeprefix("resnet"))
    swap = dict(zip(WIDE, NARROW, strict=True)) if depth < 50 else {}
    model = _replace(Config.fromfile(str(path)).model.to_dict(), swap)
    backbone = model["backbone"]
    if "depth" not in backbone:
        raise ValueError(f"'{name}' has no ResNet backbone")
    backbone.update(depth=depth, in_channels=bands, init_cfg=None)
    model.update(pretrained=None, data_preprocessor=None, auxiliary_head=None)
    heads = model["decode_head"] if isinstance(model["decode_head"], list) else [model["decode_head"]]
    for head in heads:
        head["num_classes"] = num_classes
    config: dict[str, Any] = json.loads(json.dumps(model))  # tuples as lists: what the EMD will hold
    return config


def build_mmseg(name: str, arch: str, bands: int, num_classes: int) -> BuiltModel:
    config = model_config(name, arch, bands, num_classes)
    network = MMSegNet(config)
    note = (
        f"mmsegmentation's {name} on {arch}, built from its config; the backbone starts from random initialisation "
        "(OpenMMLab's pretrained weights are downloaded from its servers, which geotrain does not do)."
    )
    return BuiltModel(network, network.model.backbone, None, [note])
