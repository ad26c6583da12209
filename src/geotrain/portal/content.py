"""The embedded portal's content: items in SQL (``jobs.items``) and their files under ``GEOTRAIN_HOME/items``.

A file is written aside and renamed into place, so a reader never sees half of one; a multipart upload keeps
its parts as numbered files until ``commit`` joins them in part order, whatever order they came in."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from geotrain.errors import GeotrainError, NotFound
from geotrain.jobs.items import ItemRecord, Items, new_id

DLPK_TYPE = "Deep Learning Package"
MAX_PARTS = 10_000
_FILENAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")
_ASIDE = re.compile(r"^\.[0-9a-f]{32}\.part$")


def _aside_name() -> str:
    """Where a file is written before it is renamed into place."""
    return f".{new_id()}.part"


class Forbidden(GeotrainError):
    """You do not have permissions to access this resource or perform this operation."""

    code = 403


def item_not_found(item_id: str) -> NotFound:
    # the same answer for an item that does not exist and one the caller may not see: ids are not probed
    return NotFound("Item does not exist or is inaccessible.", [f"Item '{item_id}'."])


def word_list(value: Any) -> list[str]:
    """Tags and typeKeywords as clients give them: a comma-separated text, a JSON list, or a list."""
    if isinstance(value, str) and value.strip().startswith("["):
        with suppress(json.JSONDecodeError):
            value = json.loads(value)
    if isinstance(value, str):
        return [w.strip() for w in value.split(",") if w.strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return []


def safe_filename(name: str) -> str:
    """The last part of a client's file name, refused when it is empty, a dot path or holds control bytes."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", "..") or not _FILENAME.match(base):
        raise GeotrainError("Unable to add item.", [f"'{name}' is not a usable file name."])
    return base


class Content:
    def __init__(self, items: Items, root: Path) -> None:
        self.items = items
        self.root = root

    def folder_of(self, item_id: str) -> Path:
        return self.root / item_id

    def data_path(self, item: ItemRecord) -> Path | None:
        if item.name is None or item.status != "completed":
            return None
        path = self.folder_of(item.id) / item.name
        return path if path.is_file() else None

    # ---- adding
    def add(self, owner: str, fields: dict[str, Any], data: IO[bytes] | None, filename: str | None) -> ItemRecord:
        """An item, with its file when ``data`` is given, complete at once."""
        name = safe_filename(filename) if filename else None
        record = self.items.create(owner, {**fields, "name": name}, status="processing" if data else "completed")
        if data is None or name is None:
            return record
        try:
            size = self._write(self.folder_of(record.id) / name, data)
        except BaseException:
            self.items.delete(record.id, owner)
            shutil.rmtree(self.folder_of(record.id), ignore_errors=True)
            raise
        done = self.items.update(record.id, owner, {}, size=size, status="completed")
        assert done is not None
        return done

    def add_file(self, owner: str, fields: dict[str, Any], path: Path, replacing: ItemRecord | None) -> ItemRecord:
        """Move a local file (a job's package) in as an item, or as the new file of ``replacing``."""
        name = safe_filename(path.name)
        if replacing is None:
            record = self.items.create(owner, {**fields, "name": name}, status="processing")
        else:
            record = replacing
        folder = self.folder_of(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        aside = folder / _aside_name()
        shutil.move(path, aside)
        aside.replace(folder / name)
        self._keep_only(record.id, name)
        done = self.items.update(record.id, owner, {**fields, "name": name}, size=(folder / name).stat().st_size,
                                 status="completed")  # fmt: skip
        assert done is not None
        return done

    def start_multipart(self, owner: str, fields: dict[str, Any], filename: str) -> ItemRecord:
        return self.items.create(owner, {**fields, "name": safe_filename(filename)}, status="partial")

    def start_replacement(self, item: ItemRecord, filename: str) -> ItemRecord:
        """A new file for an item, in parts (``update`` with ``multipart=true``): the old one stays until the
        commit."""
        shutil.rmtree(self._parts(item.id), ignore_errors=True)
        done = self.items.update(item.id, item.owner, {}, status="partial", name=safe_filename(filename))
        assert done is not None
        return done

    def add_part(self, item: ItemRecord, number: int, data: IO[bytes]) -> None:
        if item.status != "partial":
            raise GeotrainError("Unable to add part.", ["The item is not a multipart upload in progress."])
        if not 1 <= number <= MAX_PARTS:
            raise GeotrainError("Unable to add part.", [f"partNum must be 1 to {MAX_PARTS}."])
        # re-sending a part number replaces that part
        self._write(self._parts(item.id) / f"{number:05d}", data)

    def commit(self, item: ItemRecord, fields: dict[str, Any]) -> ItemRecord:
        """Join the parts in part order into the item's file."""
        if item.status != "partial":
            raise GeotrainError("Unable to commit.", ["The item is not a multipart upload in progress."])
        parts = sorted(self._parts(item.id).glob("[0-9]*"))
        if not parts or item.name is None:
            raise GeotrainError("Unable to commit.", ["No parts were added."])
        target = self.folder_of(item.id) / item.name
        with self._aside(target) as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        shutil.rmtree(self._parts(item.id), ignore_errors=True)
        self._keep_only(item.id, item.name)  # the file a replacement replaced goes
        done = self.items.update(item.id, item.owner, fields, size=target.stat().st_size, status="completed")
        assert done is not None
        return done

    def replace_data(self, item: ItemRecord, data: IO[bytes], filename: str | None) -> ItemRecord:
        name = safe_filename(filename) if filename else (item.name or "data")
        size = self._write(self.folder_of(item.id) / name, data)
        self._keep_only(item.id, name)
        done = self.items.update(item.id, item.owner, {"name": name}, size=size, status="completed")
        assert done is not None
        return done

    def delete(self, item: ItemRecord) -> None:
        self.items.delete(item.id, item.owner)
        shutil.rmtree(self.folder_of(item.id), ignore_errors=True)

    # ---- files
    def _parts(self, item_id: str) -> Path:
        return self.folder_of(item_id) / "parts"

    def _keep_only(self, item_id: str, name: str) -> None:
        """Remove the item's files but ``name`` (an earlier file of another name), leaving files being
        written aside alone."""
        for old in self.folder_of(item_id).iterdir():
            if old.is_file() and old.name != name and not _ASIDE.match(old.name):
                old.unlink()

    @contextmanager
    def _aside(self, target: Path) -> Iterator[IO[bytes]]:
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = target.with_name(_aside_name())
        try:
            with aside.open("wb") as out:
                yield out
            aside.replace(target)
        finally:
            aside.unlink(missing_ok=True)

    def _write(self, target: Path, data: IO[bytes]) -> int:
        with self._aside(target) as out:
            shutil.copyfileobj(data, out, 1 << 20)
        return target.stat().st_size
