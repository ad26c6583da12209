"""A trained package published as a "Deep Learning Package" item: in the embedded portal (this server's own
database and files), or in an ArcGIS portal through the ``arcgis`` package (``Folder.add``, which uploads in
parts). The result value is what ArcGIS gives for ``out_item``: the item's id, url, title and type."""

from __future__ import annotations

import html
import json
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from geotrain.config import Settings
from geotrain.errors import TrainingError
from geotrain.portal.content import word_list
from geotrain.task.params import OutputName

if TYPE_CHECKING:
    from geotrain.portal.content import Content
    from geotrain.task.pretrained import ItemSource

ITEM_TYPE = "Deep Learning Package"
# the size of the parts a package is uploaded in: ArcGIS's least part size, so a part that fails costs little
# to send again, and the parts go several at a time
PART_BYTES = 5 * 1024 * 1024
TYPE_KEYWORDS = ("Deep Learning", "Raster")


@dataclass(frozen=True)
class ItemSpec:
    """What the item will say about the package: given in ``output_name``'s ``itemProperties`` or made up from
    the package's EMD."""

    title: str
    folder: str | None
    tags: list[str]
    type_keywords: list[str]
    description: str | None
    snippet: str | None
    properties: dict[str, Any] = field(default_factory=dict)

    def portal_fields(self) -> dict[str, Any]:
        return {"title": self.title, "type": ITEM_TYPE, "tags": self.tags, "type_keywords": self.type_keywords,
                "description": self.description, "snippet": self.snippet,
                "properties": self.properties or None}  # fmt: skip


def _emd_of(package: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(package) as zf:
            name = next(n for n in zf.namelist() if n.lower().endswith(".emd") and "/" not in n)
            found = json.loads(zf.read(name))
    except (OSError, StopIteration, ValueError, zipfile.BadZipFile):
        return {}
    return found if isinstance(found, dict) else {}


def describe(emd: dict[str, Any]) -> str:
    """The HTML description arcgis.learn gives the items it publishes: model, backbone, learning rate, score."""
    rows: list[tuple[str | None, Any]] = [(None, emd.get("ModelName") or emd.get("ModelType") or "Deep learning model")]
    configuration = emd.get("ModelConfiguration")
    backbone = emd.get("backbone") or (configuration if isinstance(configuration, str) else None)
    if backbone:
        rows.append(("Backbone", backbone))
    if emd.get("LearningRate") is not None:
        rows.append(("Learning Rate", emd["LearningRate"]))
    for key, label in (("accuracy", "Accuracy"), ("average_precision_score", "Average Precision Score")):
        if emd.get(key) is not None:
            rows.append((label, emd[key]))
    return "".join(
        f"<p><b>{html.escape(str(value))}</b></p>" if label is None else
        f"<p><b>{label}:</b> {html.escape(str(value))}</p>" for label, value in rows
    )  # fmt: skip


def item_spec(output: OutputName, package: Path, model_type: str) -> ItemSpec:
    assert output.name is not None
    given = output.item_properties
    emd = _emd_of(package)
    keywords = list(dict.fromkeys([*TYPE_KEYWORDS, *word_list(given.get("typeKeywords"))]))
    properties = given.get("properties") if isinstance(given.get("properties"), dict) else {}
    return ItemSpec(
        title=str(given.get("title") or output.name),
        folder=output.folder_id or (str(given["folderId"]) if given.get("folderId") else None),
        tags=word_list(given.get("tags")) or ["deep learning", model_type.lower()],
        type_keywords=keywords,
        description=str(given["description"]) if given.get("description") else describe(emd),
        snippet=str(given["snippet"]) if given.get("snippet") else f"{model_type} model trained by geotrain",
        properties=properties or {},
    )


class Publisher(Protocol):
    def existing(self, owner: str, title: str) -> str | None:
        """The id of the owner's Deep Learning Package item of this title, if there is one."""

    def folder_missing(self, owner: str, folder: str) -> bool:
        """Whether the owner lacks this folder (by id or title)."""

    def fetch(self, user: str, item_id: str, folder: Path) -> Path | None:
        """The local file of a Deep Learning Package item ``user`` may read (downloaded into ``folder`` when
        the portal is another server's); None when there is no such item."""

    def publish(self, owner: str, package: Path, spec: ItemSpec, replace: str | None) -> dict[str, Any]:
        """Add the package as an item (or as the new file of item ``replace``); the out_item value."""


class EmbeddedPortal:
    def __init__(self, content: Content) -> None:
        self.content = content

    def existing(self, owner: str, title: str) -> str | None:
        found = self.content.items.named(owner, title, ITEM_TYPE)
        return found.id if found is not None else None

    def folder_missing(self, owner: str, folder: str) -> bool:
        return self.content.items.folder(owner, folder) is None

    def fetch(self, user: str, item_id: str, folder: Path) -> Path | None:
        found = self.content.items.get(item_id, user)
        if found is None or found.type != ITEM_TYPE:
            return None
        return self.content.data_path(found)

    def publish(self, owner: str, package: Path, spec: ItemSpec, replace: str | None) -> dict[str, Any]:
        folder_id = None
        if spec.folder is not None:
            folder = self.content.items.folder(owner, spec.folder)
            if folder is None:
                raise TrainingError(f"output_name: the folder '{spec.folder}' of '{owner}' does not exist.")
            folder_id = folder.id
        replacing = self.content.items.owned(replace, owner) if replace else None
        item = self.content.add_file(owner, {**spec.portal_fields(), "folder_id": folder_id}, package, replacing)
        # the url is this server's, which the API knows and the training process does not: it adds it
        return {"itemId": item.id, "title": item.title, "type": item.type, "name": item.name,
                "folderId": item.folder_id}  # fmt: skip


class ExternalPortal:
    """An ArcGIS portal, reached with configured credentials or the submitter's own token."""

    def __init__(self, settings: Settings, token: str | None) -> None:
        self.settings = settings
        self.token = token

    @cached_property
    def _signed_in(self) -> Any:
        """One sign-in for the job: finding the item to replace, fetching the pretrained one, publishing."""
        try:
            from arcgis.gis import GIS
        except ImportError:
            raise TrainingError(
                "Publishing to the portal needs the arcgis package on the worker: pip install arcgis==2.4.4"
            ) from None
        s = self.settings
        try:
            if s.portal_username:
                return GIS(s.portal_url, s.portal_username, s.portal_password, verify_cert=s.portal_verify)
            if self.token:
                return GIS(s.portal_url, token=self.token, verify_cert=s.portal_verify)
        except Exception as exc:  # arcgis raises plain Exceptions for sign-in failures
            raise TrainingError(f"Signing in to the portal {s.portal_url} failed: {exc}") from None
        raise TrainingError(
            f"No way to sign in to the portal {s.portal_url}: set GEOTRAIN_PORTAL_USERNAME and "
            "GEOTRAIN_PORTAL_PASSWORD, or run with GEOTRAIN_AUTH=portal so jobs carry their submitter's token."
        )

    def existing(self, owner: str, title: str) -> str | None:
        gis = self._signed_in
        escaped = title.replace('"', "")
        for found in gis.content.search(f'owner:"{owner}" AND title:"{escaped}"', item_type=ITEM_TYPE):
            if found.title.lower() == title.lower() and found.type == ITEM_TYPE:
                return str(found.id)
        return None

    def folder_missing(self, owner: str, folder: str) -> bool:
        return False  # made when the package is added, as arcgis.learn does

    def fetch(self, user: str, item_id: str, folder: Path) -> Path | None:
        item = self._signed_in.content.get(item_id)
        if item is None or item.type != ITEM_TYPE:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return Path(item.download(save_path=str(folder)))
        except Exception as exc:
            raise TrainingError(
                f"pretrained_model: downloading item {item_id} from {self.settings.portal_url} failed: {exc}"
            ) from None

    def publish(self, owner: str, package: Path, spec: ItemSpec, replace: str | None) -> dict[str, Any]:
        from arcgis.gis import ItemProperties

        gis = self._signed_in
        properties = ItemProperties(
            title=spec.title, item_type=ITEM_TYPE, tags=spec.tags, type_keywords=spec.type_keywords,
            description=spec.description, snippet=spec.snippet, properties=spec.properties or None,
        )  # fmt: skip
        try:
            if replace is not None:
                item = gis.content.get(replace)
                if item is None:
                    raise TrainingError(f"output_name: the item {replace} to replace is gone from {gis.url}.")
                item.update(item_properties=properties, data=str(package))
            else:
                folder = gis.content.folders.get(spec.folder, owner=owner) if spec.folder else None
                if spec.folder and folder is None:
                    folder = gis.content.folders.create(spec.folder, owner=owner)
                folder = folder or gis.content.folders.get(owner=owner)
                size = min(PART_BYTES, max(package.stat().st_size, 1))
                item = folder.add(item_properties=properties, file=str(package), upload_file_size=size).result()
        except TrainingError:
            raise
        except Exception as exc:
            raise TrainingError(f"Adding the package to the portal {self.settings.portal_url} failed: {exc}") from None
        return {"itemId": item.id, "url": f"{gis._portal.resturl}content/items/{item.id}", "title": item.title,
                "type": item.type, "name": item.name, "folderId": item.ownerFolder}  # fmt: skip


def item_source(portal: Publisher | None, user: str, folder: Path) -> ItemSource | None:
    """The Deep Learning Package items ``user`` may read in ``portal``, as ``pretrained_model`` and
    QueryDeepLearningModelInfo's ``model`` look them up by id (an external portal's land in ``folder``)."""
    if portal is None:
        return None
    return lambda item_id: portal.fetch(user, item_id, folder)


def publisher(settings: Settings, content: Content | None, token: str | None) -> Publisher:
    if settings.portal_url:
        return ExternalPortal(settings, token)
    assert content is not None
    return EmbeddedPortal(content)
