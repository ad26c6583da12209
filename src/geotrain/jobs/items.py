"""The embedded portal's items and folders in SQL. Files are ``portal.content``'s concern; who may see what
is decided here, in the queries, so no caller can forget it."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, delete, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from geotrain.jobs.accounts import ANONYMOUS
from geotrain.jobs.tables import Folder, Item

# fields a caller may set on an item (the rest are the portal's)
EDITABLE = ("title", "type", "name", "type_keywords", "tags", "description", "snippet", "properties", "folder_id")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ItemRecord:
    id: str
    owner: str
    folder_id: str | None
    title: str
    type: str
    name: str | None
    type_keywords: tuple[str, ...]
    tags: tuple[str, ...]
    description: str | None
    snippet: str | None
    properties: dict[str, Any] | None
    access: str
    size: int
    status: str
    status_message: str | None
    created_at: dt.datetime
    modified_at: dt.datetime

    @classmethod
    def of(cls, row: Item) -> ItemRecord:
        return cls(
            row.id, row.owner, row.folder_id, row.title, row.type, row.name, tuple(row.type_keywords or ()),
            tuple(row.tags or ()), row.description, row.snippet, row.properties, row.access, row.size, row.status,
            row.status_message, row.created_at, row.modified_at,
        )  # fmt: skip


@dataclass(frozen=True)
class FolderRecord:
    id: str
    owner: str
    title: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Query:
    """A search: every field given must match (title and tags as words, the rest exactly, case aside)."""

    owner: str | None = None
    type: str | None = None
    title: str | None = None
    id: str | None = None
    tags: str | None = None
    text: str | None = None  # free text: title, tags, snippet, description


def readable_by(user: str) -> ColumnElement[bool]:
    """Items ``user`` may see: their own, and those shared with everyone (public) or the organization (org).
    Anonymous callers see public items only; ``shared`` (groups) needs groups, which this portal does not
    have, so such items stay their owner's."""
    if user == ANONYMOUS:
        return or_(Item.owner == user, Item.access == "public")
    return or_(Item.owner == user, Item.access.in_(("public", "org")))


class Items:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    # ---- items
    def create(self, owner: str, fields: dict[str, Any], *, status: str = "completed", size: int = 0) -> ItemRecord:
        with self._sessions.begin() as session:
            given = {"type_keywords": [], "tags": [], **_editable(fields)}
            row = Item(id=new_id(), owner=owner, status=status, size=size, access="private", **given)
            session.add(row)
            session.flush()
            return ItemRecord.of(row)

    def get(self, item_id: str, user: str) -> ItemRecord | None:
        """The item, when ``user`` may read it (None when it does not exist or is another's private item)."""
        with self._sessions() as session:
            row = session.scalars(select(Item).where(Item.id == item_id, readable_by(user))).first()
            return ItemRecord.of(row) if row is not None else None

    def owned(self, item_id: str, owner: str) -> ItemRecord | None:
        with self._sessions() as session:
            row = session.scalars(select(Item).where(Item.id == item_id, Item.owner == owner)).first()
            return ItemRecord.of(row) if row is not None else None

    def named(self, owner: str, title: str, type_: str) -> ItemRecord | None:
        """The owner's newest item of this title and type (how an output name finds the item it replaces)."""
        with self._sessions() as session:
            row = session.scalars(
                select(Item)
                .where(Item.owner == owner, func.lower(Item.title) == title.lower(), Item.type == type_)
                .order_by(Item.created_at.desc())
            ).first()
            return ItemRecord.of(row) if row is not None else None

    def update(self, item_id: str, owner: str, fields: dict[str, Any], **portal: Any) -> ItemRecord | None:
        """Change the owner's item; ``portal`` sets the portal's own fields (size, status, access...)."""
        with self._sessions.begin() as session:
            row = session.scalars(select(Item).where(Item.id == item_id, Item.owner == owner)).first()
            if row is None:
                return None
            for key, value in {**_editable(fields), **portal}.items():
                setattr(row, key, value)
            row.modified_at = dt.datetime.now(dt.UTC)
            session.flush()
            return ItemRecord.of(row)

    def delete(self, item_id: str, owner: str) -> ItemRecord | None:
        with self._sessions.begin() as session:
            row = session.scalars(select(Item).where(Item.id == item_id, Item.owner == owner)).first()
            if row is None:
                return None
            record = ItemRecord.of(row)
            session.delete(row)
            return record

    def in_folder(self, owner: str, folder_id: str | None) -> list[ItemRecord]:
        with self._sessions() as session:
            where = Item.folder_id.is_(None) if folder_id is None else Item.folder_id == folder_id
            rows = session.scalars(select(Item).where(Item.owner == owner, where).order_by(Item.created_at))
            return [ItemRecord.of(r) for r in rows]

    def search(self, query: Query, user: str, start: int, num: int, sort: str = "created",
               descending: bool = False) -> tuple[int, list[ItemRecord]]:  # fmt: skip
        """(total, one page) of the items ``user`` may read that match ``query``."""
        conditions: list[ColumnElement[bool]] = [readable_by(user)]
        if query.owner is not None:
            conditions.append(func.lower(Item.owner) == query.owner.lower())
        if query.type is not None:
            conditions.append(func.lower(Item.type) == query.type.lower())
        if query.id is not None:
            conditions.append(Item.id == query.id)
        if query.title is not None:
            conditions.append(_contains(Item.title, query.title))
        if query.tags is not None:
            conditions.append(_contains(Item.tags, query.tags))
        if query.text is not None:
            conditions.append(or_(*(_contains(c, query.text) for c in (Item.title, Item.tags, Item.snippet,
                                                                        Item.description))))  # fmt: skip
        order = {"title": Item.title, "modified": Item.modified_at, "type": Item.type, "owner": Item.owner}.get(
            sort.lower(), Item.created_at
        )
        with self._sessions() as session:
            where = and_(*conditions)
            total = session.scalar(select(func.count()).select_from(Item).where(where)) or 0
            rows = session.scalars(
                select(Item).where(where).order_by(order.desc() if descending else order, Item.id)
                .offset(max(start - 1, 0)).limit(num)
            )  # fmt: skip
            return int(total), [ItemRecord.of(r) for r in rows]

    # ---- folders
    def folders(self, owner: str) -> list[FolderRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(Folder).where(Folder.owner == owner).order_by(Folder.title))
            return [FolderRecord(r.id, r.owner, r.title, r.created_at) for r in rows]

    def folder(self, owner: str, id_or_title: str) -> FolderRecord | None:
        with self._sessions() as session:
            row = session.scalars(
                select(Folder).where(Folder.owner == owner, or_(Folder.id == id_or_title, Folder.title == id_or_title))
            ).first()
            return FolderRecord(row.id, row.owner, row.title, row.created_at) if row is not None else None

    def create_folder(self, owner: str, title: str) -> FolderRecord | None:
        """A new folder; None when the owner has one of that title."""
        try:
            with self._sessions.begin() as session:
                row = Folder(id=new_id(), owner=owner, title=title)
                session.add(row)
                session.flush()
                return FolderRecord(row.id, row.owner, row.title, row.created_at)
        except IntegrityError:
            return None

    def delete_folder(self, owner: str, folder_id: str) -> list[ItemRecord] | None:
        """Remove the folder and its items (as ArcGIS does); the removed items, or None when it is unknown."""
        with self._sessions.begin() as session:
            row = session.scalars(select(Folder).where(Folder.owner == owner, Folder.id == folder_id)).first()
            if row is None:
                return None
            items = list(session.scalars(select(Item).where(Item.owner == owner, Item.folder_id == folder_id)))
            removed = [ItemRecord.of(i) for i in items]
            session.execute(delete(Item).where(Item.owner == owner, Item.folder_id == folder_id))
            session.delete(row)
            return removed


def _editable(fields: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in fields.items() if k in EDITABLE}
    for listed in ("tags", "type_keywords"):
        if listed in kept and kept[listed] is None:
            kept[listed] = []
    return kept


def _contains(column: Any, words: str) -> ColumnElement[bool]:
    """Every word of ``words`` appears in the column (case aside); JSON lists are searched as their text."""
    terms = [w for w in words.lower().split() if w]
    if not terms:
        return true()
    text = func.lower(cast(column, String))
    return and_(*(text.contains(t, autoescape=True) for t in terms))
