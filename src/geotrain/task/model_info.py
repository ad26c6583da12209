"""QueryDeepLearningModelInfo: a model's settings read from its package (or EMD) without running it."""

from __future__ import annotations

import json
import zipfile
from typing import Any

from geotrain.config import Settings
from geotrain.dlpk.archive import PackageError, read_emd
from geotrain.errors import ParameterError
from geotrain.stores import StorePathError, resolve
from geotrain.task.pretrained import ItemSource, item_file

TASK = "QueryDeepLearningModelInfo"
INPUT = "model"
RESULT = "outModelInfo"

# the EMD keys that describe how to run a model, in the order ArcGIS writes them
INFO_KEYS = (
    "Framework", "ModelConfiguration", "ModelType", "ModelName", "InferenceFunction", "ModelFile", "ExtractBands",
    "ImageHeight", "ImageWidth", "ImageSpaceUsed", "MinCellSize", "MaxCellSize", "SupportsVariableTileSize",
    "IsMultispectral", "Classes", "ModelParameters", "backend",
)  # fmt: skip


def model_arguments(emd: dict[str, Any]) -> list[dict[str, Any]]:
    """The arguments the model's inference function takes beyond the raster and the model (what the
    Classify/Detect tools list), with their defaults; the same as its getParameterInfo gives (tested)."""
    if emd.get("ModelType") == "ImageClassification" and str(emd.get("ModelConfiguration", "")).startswith("geotrain."):
        return [
            {"name": "padding", "dataType": "numeric", "value": int(emd.get("ImageHeight", 256)) // 4},
            {"name": "batch_size", "dataType": "numeric", "value": 4},
        ]
    return []


def _emd_of(value: str, settings: Settings, items: ItemSource | None) -> dict[str, Any]:
    text = value.strip()
    try:
        given = json.loads(text) if text.startswith("{") else {"uri": text}
    except json.JSONDecodeError as exc:
        raise ParameterError(INPUT, f"not valid JSON ({exc.msg} at position {exc.pos}).") from None
    if not isinstance(given, dict):
        raise ParameterError(INPUT, 'expected {"uri": "/fileShares/.../model.dlpk"} or a model definition.')
    if "ModelType" in given:  # the whole model definition as JSON
        return given
    if given.get("itemId") or given.get("url"):
        # this task reads only this server's items: with none to read, an item is one the caller may not read
        found = item_file(given, items or (lambda item_id: None), INPUT)
        assert found is not None
        local, uri = found
    else:
        named = given.get("uri")
        if not isinstance(named, str) or not named:
            raise ParameterError(INPUT, 'expected {"uri": "/fileShares/.../model.dlpk"} or a model definition.')
        uri = named
        try:
            local = resolve(uri, settings.stores).local
        except StorePathError as exc:
            raise ParameterError(INPUT, f"{exc}.") from None
        if not local.is_file():
            raise ParameterError(INPUT, f"there is no model at '{uri}'.")
    try:
        if local.suffix.lower() == ".emd":
            emd = json.loads(local.read_text(encoding="utf-8-sig"))
        elif local.suffix.lower() == ".dlpk":
            _, emd = read_emd(local)
        else:
            raise ParameterError(INPUT, f"'{uri}' is neither a .dlpk nor an .emd.")
    except (PackageError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError(INPUT, f"'{uri}' cannot be read: {exc}.") from None
    if not isinstance(emd, dict):
        raise ParameterError(INPUT, f"'{uri}' holds no model definition.")
    return emd


def model_info(value: str, settings: Settings, items: ItemSource | None = None) -> dict[str, Any]:
    """The ``outModelInfo`` value: ``{"modelInfo": <JSON text>}``, as the ``arcgis`` client reads it.
    ``items``: the portal items the caller may read, for ``{"itemId"}`` and ``{"url"}`` models."""
    if not value.strip():
        raise ParameterError(INPUT, "a model is required.")
    emd = _emd_of(value, settings, items)
    info = {key: emd[key] for key in INFO_KEYS if key in emd}
    info["ModelArguments"] = model_arguments(emd)
    return {"modelInfo": json.dumps(info)}
