"""Data-store paths (``/fileShares/<name>/...``) resolved to local directories, never outside them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")


class StorePathError(ValueError):
    pass


@dataclass(frozen=True)
class StorePath:
    store: str  # the registered prefix, e.g. "/fileShares/chips"
    relative: PurePosixPath
    local: Path

    @property
    def uri(self) -> str:
        rel = self.relative.as_posix()
        return self.store if rel == "." else f"{self.store}/{rel}"


def resolve(path: str, stores: dict[str, Path], *, kinds: tuple[str, ...] = ()) -> StorePath:
    """Map a data-store path to a local path inside that store.

    Refuses NUL bytes, drive letters, UNC and plain local paths, ``..`` segments, and anything that
    (through symlinks) resolves outside the store's directory. ``kinds`` limits the store types
    (e.g. ``("fileShares",)``).
    """
    if "\x00" in path:
        raise StorePathError("the path contains a NUL byte")
    text = path.strip().replace("\\", "/")
    if _DRIVE.match(text) or text.startswith("//"):
        raise StorePathError("local drive and UNC paths are not allowed; use a registered data-store path")
    if not text.startswith("/"):
        text = "/" + text
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StorePathError("'..' is not allowed in a data-store path")
    match = _match_store(parts, stores)
    if match is None:
        raise StorePathError(f"it is not inside a registered data store ({', '.join(sorted(stores))})")
    prefix, depth = match
    if kinds and prefix.split("/")[1] not in kinds:
        raise StorePathError(f"it must be inside a {' or '.join(kinds)} data store")
    root = stores[prefix].resolve()
    relative = PurePosixPath(*parts[depth:]) if len(parts) > depth else PurePosixPath(".")
    local = (root / relative).resolve()
    if not local.is_relative_to(root):
        raise StorePathError("it leaves its data store (through a symbolic link)")
    return StorePath(prefix, relative, local)


def _match_store(parts: list[str], stores: dict[str, Path]) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    lowered = [p.lower() for p in parts]
    for prefix in stores:
        pparts = [p.lower() for p in prefix.split("/") if p]
        if lowered[: len(pparts)] == pparts and (best is None or len(pparts) > best[1]):
            best = (prefix, len(pparts))
    return best
