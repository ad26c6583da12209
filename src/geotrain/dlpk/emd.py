"""The model definition (.emd) written into a package, in the keys ArcGIS and arcgis.learn read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import geotrain

# Bumped when the EMD we write changes shape, so a reader can upgrade old packages.
GEOTRAIN_EMD_VERSION = 1


@dataclass(frozen=True)
class ClassEntry:
    value: int
    name: str
    color: tuple[int, int, int]


def _metric(value: float) -> str:
    # arcgis.learn writes metrics as text in this notation
    return f"{value:.4e}"


def pixel_classification_emd(
    *,
    name: str,
    model_type: str,
    model_name: str,
    backbone: str,
    classes: list[ClassEntry],
    bands: int,
    extract_bands: list[int] | None,
    tile_size: tuple[int, int],
    learning_rate: float,
    accuracy: float,
    miou: float,
    per_class: dict[str, dict[str, float]],
    monitored: tuple[str, float] | None,
    normalization: dict[str, Any],
    is_imagenet: bool,
    image_space: str,
    min_cell_size: Any,
    max_cell_size: Any,
    ignore_classes: list[int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    emd: dict[str, Any] = {
        "Framework": "PyTorch",
        "ModelConfiguration": f"geotrain.{model_type.lower()}",
        "ModelType": "ImageClassification",
        "ModelFile": f"{name}.pth",
        "ModelName": model_name,
        "ModelFormat": "NCHW",
        "ImageHeight": tile_size[0],
        "ImageWidth": tile_size[1],
        "ExtractBands": extract_bands or list(range(bands)),
        "Classes": [{"Value": c.value, "Name": c.name, "Color": list(c.color)} for c in classes],
        "ignore_mapped_class": ignore_classes,
        "SupportsVariableTileSize": True,
        "ImageSpaceUsed": image_space,
        "MinCellSize": min_cell_size,
        "MaxCellSize": max_cell_size,
        "LearningRate": f"{learning_rate:.4e}",
        "backend": "pytorch",
        "ModelParameters": {"backbone": backbone.lower(), "backend": "pytorch", "in_channels": bands},
        "accuracy": _metric(accuracy),
        "miou": _metric(miou),
        # arcgis.learn stores this as JSON text, NoData included
        "per_class_metrics": json.dumps(per_class),
        "IsMultispectral": not is_imagenet,
        "IsImageNetNormalization": is_imagenet,
        "NormalizationStats": normalization,
        "resize_to": None,
        "GeotrainVersion": geotrain.__version__,
        "GeotrainEmdVersion": GEOTRAIN_EMD_VERSION,
    }
    if monitored is not None:
        emd[f"monitored_{monitored[0]}"] = monitored[1]
    emd.update(extra)
    return emd
