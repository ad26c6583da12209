"""``pretrained_model``: the geotrain package a job fine-tunes. Checked at submit without torch: the
package's archive and EMD, never its weights (the worker loads those, tensors only)."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geotrain.config import Settings
from geotrain.dlpk.archive import PackageError, read_emd
from geotrain.errors import ParameterError
from geotrain.stores import StorePathError, resolve
from geotrain.task import catalog
from geotrain.task.params import TrainParams
from geotrain.training.data.export import ExportInfo

NAME = "pretrained_model"
# a portal item's id in the URLs clients give for one: …/content/items/<id>[/data], …/item.html?id=<id>
_ITEM_URL = re.compile(r"(?:/content/items/|[?&]id=)([0-9a-fA-F]{32})(?:[/?&#]|$)")

ItemSource = Callable[[str], Path | None]
"""The local file of a portal item the submitter may read, by the item's id; None when there is none."""


def item_id_of(url: str) -> str | None:
    found = _ITEM_URL.search(url)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Pretrained:
    local: Path
    label: str  # how messages name it: its data-store path or its portal item
    emd: dict[str, Any]

    @property
    def backbone(self) -> str:
        """The package's backbone as a backbone_model keyword."""
        return str(self.emd["ModelParameters"]["backbone"]).upper()


def _source(params: TrainParams, settings: Settings, items: ItemSource | None) -> tuple[Path, str] | None:
    """The local file ``pretrained_model`` names, and how to name it in messages."""
    given = params.pretrained_model
    if given.get("uri"):
        uri = given["uri"]
        try:
            path = resolve(uri, settings.stores).local
        except StorePathError as exc:
            raise ParameterError(NAME, f"{exc}.") from None
        if path.suffix.lower() != ".dlpk":
            raise ParameterError(NAME, f"'{uri}' is not a .dlpk; give the package file a training job wrote.")
        if not path.is_file():
            raise ParameterError(NAME, f"there is no package at '{uri}'.")
        return path, f"'{uri}'"
    return item_file(given, items, NAME)


def item_file(given: dict[str, Any], items: ItemSource | None, param: str) -> tuple[Path, str] | None:
    """The local file of the portal item ``given`` names (``{"itemId"}``, or an item's ``{"url"}``) and how
    messages name it; None when it names no item, or when ``items`` is None (an external portal's item,
    which the worker fetches). Raises ParameterError for a URL of no item and an item the caller may not read."""
    item_id = given.get("itemId") or (item_id_of(given["url"]) if given.get("url") else None)
    if given.get("url") and item_id is None:
        raise ParameterError(
            param,
            f"'{given['url']}' is not a portal item's URL (…/sharing/rest/content/items/<itemId>); give the itemId.",
        )
    if item_id is None or items is None:
        return None
    fetched = items(str(item_id))
    if fetched is None:
        raise ParameterError(param, f"the portal has no Deep Learning Package item '{item_id}' that you may read.")
    return fetched, f"item {item_id}"


def locate(params: TrainParams, settings: Settings, items: ItemSource | None = None) -> Pretrained | None:
    """The package named by ``pretrained_model``, opened and checked for safety, or None when none is (or when
    it is an item of an external portal and ``items`` is None)."""
    source = _source(params, settings, items)
    if source is None:
        return None
    return open_package(*source)


def open_package(path: Path, label: str) -> Pretrained:
    """The package at ``path`` (named ``label`` in messages), its archive and EMD checked for safety."""
    try:
        _, emd = read_emd(path)
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (PackageError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParameterError(NAME, f"{label} cannot be used: {exc}.") from None
    if not isinstance(emd, dict) or str(emd.get("ModelFile", "")) not in names:
        raise ParameterError(NAME, f"{label} has no weights file named by its EMD's ModelFile.")
    return Pretrained(path, label, emd)


def inherited(params: TrainParams, found: Pretrained | None) -> TrainParams:
    """``params`` with what a request fine-tuning ``found`` leaves out taken from the package: its backbone and,
    for the OpenMMLab model types, its model."""
    if found is None:
        return params
    update: dict[str, Any] = {}
    if params.backbone_model is None:
        update["backbone_model"] = found.backbone
    model = (found.emd.get("ModelParameters") or {}).get("model")
    if params.model_type in catalog.OPENMMLAB_DEFAULT_MODEL and model is not None and "model" not in params.arguments:
        update["arguments"] = {**params.arguments, "model": model}
    return params.model_copy(update=update) if update else params


def check(
    params: TrainParams, settings: Settings, export: ExportInfo, items: ItemSource | None = None
) -> Pretrained | None:
    """``locate``, and that the package is a geotrain model of the requested type, backbone and bands."""
    found = locate(params, settings, items)
    if found is None:
        return None
    uri, emd = found.label, found.emd
    configuration = str(emd.get("ModelConfiguration", ""))
    if not configuration.startswith("geotrain."):
        raise ParameterError(
            NAME,
            f"{uri} was not trained by geotrain (its EMD's ModelConfiguration is '{configuration}'); geotrain "
            "fine-tunes only its own packages, whose network it knows.",
        )
    trained = configuration.removeprefix("geotrain.").upper()
    if trained != params.model_type:
        raise ParameterError(NAME, f"{uri} is a {trained} model; this job trains {params.model_type}.")
    parameters = emd.get("ModelParameters") or {}
    if params.backbone_model and params.backbone_model != found.backbone:
        raise ParameterError(
            "backbone_model",
            f"'{params.backbone_model}' differs from the backbone of the pretrained model ({found.backbone}); "
            f"leave it empty or give {found.backbone}.",
        )
    model = parameters.get("model")
    given = params.arguments.get("model")
    if (
        params.model_type in catalog.OPENMMLAB_DEFAULT_MODEL
        and model is not None
        and given is not None
        and given != model
    ):
        raise ParameterError(
            "arguments",
            f"'model' = {given!r} differs from the OpenMMLab model of the pretrained model ({model!r}); leave it "
            f"out or give {model!r}.",
        )
    bands = parameters.get("in_channels")
    if bands is not None and export.num_bands is not None and int(bands) != export.num_bands:
        raise ParameterError(
            NAME, f"{uri} was trained on {bands}-band chips; the export's chips have {export.num_bands} bands."
        )
    return found
