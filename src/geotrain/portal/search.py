"""The portal search syntax, as far as clients use it to find items: ``field:value`` and ``field:"two words"``
terms joined by AND (or by spaces), plus free words. Fields this portal has no notion of (``orgid``,
``accountid``, ``access``...) narrow nothing: every item here belongs to the one organization."""

from __future__ import annotations

import re

from geotrain.errors import ParameterError
from geotrain.jobs.items import Query

_TERM = re.compile(r'(-?)(?:(\w+):)?(?:"([^"]*)"|(\S+))')
_FIELDS = {"owner": "owner", "type": "type", "title": "title", "id": "id", "tags": "tags", "tag": "tags"}
_IGNORED = {"orgid", "accountid", "access", "typekeywords", "group", "created", "modified", "culture"}


def _ungrouped(q: str) -> str:
    """The query without its grouping parentheses (those outside quotes): every term is ANDed here anyway."""
    out, quoted = [], False
    for ch in q:
        quoted ^= ch == '"'
        out.append(" " if ch in "()" and not quoted else ch)
    return "".join(out)


def parse(q: str) -> Query:
    found: dict[str, str] = {}
    words: list[str] = []
    for negated, field, quoted, bare in _TERM.findall(_ungrouped(q or "")):
        value = quoted if quoted or bare == "" else bare
        if field == "" and value.upper() in ("AND", "OR", "NOT", ""):
            continue
        if negated:
            continue  # exclusions narrow a result this portal's few items do not need narrowed
        key = field.lower()
        if key in _FIELDS:
            name = _FIELDS[key]
            if name in found and found[name].lower() != value.lower():
                raise ParameterError("q", f"{key} is given twice with different values; give it once")
            found[name] = value
        elif key in _IGNORED:
            continue
        elif key:
            raise ParameterError("q", f"'{key}:' is not a field this portal searches (owner, type, title, id, tags)")
        else:
            words.append(value)
    return Query(
        owner=found.get("owner"), type=found.get("type"), title=found.get("title"), id=found.get("id"),
        tags=found.get("tags"), text=" ".join(words) or None,
    )  # fmt: skip
