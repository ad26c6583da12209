"""The model definition (.emd) written into a package, in the keys ArcGIS and arcgis.learn read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geotrain
from geotrain.dlpk import inference

if TYPE_CHECKING:
    from geotrain.training.data.export import ExportInfo
    from geotrain.training.fit import FitResult

# Bumped when the EMD we write changes shape, so a reader can upgrade old packages.
GEOTRAIN_EMD_VERSION = 1


@dataclass(frozen=True)
class ClassEntry:
    value: int
    name: str
    color: tuple[int, int, int]


def metric_text(value: float) -> str:
    # arcgis.learn writes metrics as text in this notation
    return f"{value:.4e}"


def json_text(value: Any) -> str:
    return json.dumps(value)


# the kinds ArcGIS runs tile by tile over a raster (so with a padding), not object by object
TILED = (
    "ImageClassification",
    "ObjectDetection",
    "InstanceDetection",
    "SuperResolution",
    "Pix2Pix",
    "Pix2PixHD",
    "CycleGAN",
)


def common_emd(
    *,
    name: str,
    model_type: str,
    model_kind: str,
    model_name: str,
    backbone: str,
    classes: list[ClassEntry],
    bands: int,
    export: ExportInfo,
    tile_size: tuple[int, int],
    result: FitResult,
    monitored: str,
    normalization: dict[str, Any],
    is_imagenet: bool,
) -> dict[str, Any]:
    """The keys every family writes; the family adds its metrics and its own keys."""
    function = inference.function_for(model_kind, model_name)
    emd: dict[str, Any] = {
        "Framework": "PyTorch",
        "ModelConfiguration": f"geotrain.{model_type.lower()}",
        "ModelType": model_kind,
        "ModelFile": f"{name}.pth",
        "ModelName": model_name,
        "ModelFormat": "NCHW",
        "ImageHeight": tile_size[0],
        "ImageWidth": tile_size[1],
        "ExtractBands": export.extract_bands or list(range(bands)),
        "Classes": [{"Value": c.value, "Name": c.name, "Color": list(c.color)} for c in classes],
        "ImageSpaceUsed": export.image_space,
        "MinCellSize": export.min_cell_size,
        "MaxCellSize": export.max_cell_size,
        "LearningRate": f"{result.lr:.4e}",
        "BatchSize": result.batch_size,
        "backend": "pytorch",
        "ModelParameters": {"backbone": backbone.lower(), "backend": "pytorch", "in_channels": bands},
        "IsMultispectral": not is_imagenet,
        "IsImageNetNormalization": is_imagenet,
        "NormalizationStats": normalization,
        "resize_to": None,
        "BestEpoch": result.best_epoch,
        "EpochsRun": len(result.history),
        "GeotrainVersion": geotrain.__version__,
        "GeotrainEmdVersion": GEOTRAIN_EMD_VERSION,
    }
    if function is not None:
        emd["InferenceFunction"] = function
    if model_kind in TILED:
        emd["ModelPadding"] = tile_size[0] // 4
    if result.best_score is not None:
        emd[f"monitored_{monitored}"] = result.best_score
    return emd
