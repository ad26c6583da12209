"""``pretrained_model``: the geotrain package a job fine-tunes. Checked at submit without torch: the
package's archive and EMD, never its weights (the worker loads those, tensors only)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import Any

from geotrain.config import Settings
from geotrain.dlpk.archive import PackageError, read_emd
from geotrain.errors import ParameterError
from geotrain.stores import StorePath, StorePathError, resolve
from geotrain.task.params import TrainParams
from geotrain.training.data.export import ExportInfo

NAME = "pretrained_model"


@dataclass(frozen=True)
class Pretrained:
    location: StorePath
    emd: dict[str, Any]

    @property
    def backbone(self) -> str:
        """The package's backbone as a backbone_model keyword."""
        return str(self.emd["ModelParameters"]["backbone"]).upper()


def locate(params: TrainParams, settings: Settings) -> Pretrained | None:
    """The package named by ``pretrained_model``, opened and checked for safety, or None when none is."""
    uri = params.pretrained_model.get("uri")
    if not uri:
        return None
    try:
        where = resolve(uri, settings.stores)
    except StorePathError as exc:
        raise ParameterError(NAME, f"{exc}.") from None
    path = where.local
    if path.suffix.lower() != ".dlpk":
        raise ParameterError(NAME, f"'{uri}' is not a .dlpk; give the package file a training job wrote.")
    if not path.is_file():
        raise ParameterError(NAME, f"there is no package at '{uri}'.")
    try:
        _, emd = read_emd(path)
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (PackageError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError(NAME, f"'{uri}' cannot be used: {exc}.") from None
    if not isinstance(emd, dict) or str(emd.get("ModelFile", "")) not in names:
        raise ParameterError(NAME, f"'{uri}' has no weights file named by its EMD's ModelFile.")
    return Pretrained(where, emd)


def check(params: TrainParams, settings: Settings, export: ExportInfo) -> Pretrained | None:
    """``locate``, and that the package is a geotrain model of the requested type, backbone and bands."""
    found = locate(params, settings)
    if found is None:
        return None
    uri, emd = found.location.uri, found.emd
    configuration = str(emd.get("ModelConfiguration", ""))
    if not configuration.startswith("geotrain."):
        raise ParameterError(
            NAME,
            f"'{uri}' was not trained by geotrain (its EMD's ModelConfiguration is '{configuration}'); geotrain "
            "fine-tunes only its own packages, whose network it knows.",
        )
    trained = configuration.removeprefix("geotrain.").upper()
    if trained != params.model_type:
        raise ParameterError(NAME, f"'{uri}' is a {trained} model; this job trains {params.model_type}.")
    parameters = emd.get("ModelParameters") or {}
    if params.backbone_model and params.backbone_model != found.backbone:
        raise ParameterError(
            "backbone_model",
            f"'{params.backbone_model}' differs from the backbone of the pretrained model ({found.backbone}); "
            f"leave it empty or give {found.backbone}.",
        )
    bands = parameters.get("in_channels")
    if bands is not None and export.num_bands is not None and int(bands) != export.num_bands:
        raise ParameterError(
            NAME, f"'{uri}' was trained on {bands}-band chips; the export's chips have {export.num_bands} bands."
        )
    return found
