"""Open a .dlpk (a zip) safely, without torch: the API inspects packages, the worker loads them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["MAX_UNPACKED_BYTES", "PackageError", "extract", "read_emd", "safe_members"]


class PackageError(ValueError):
    pass


def safe_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every member, refusing absolute paths, '..' and links: nothing may land outside the target."""
    members = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":"):
            raise PackageError(f"the package member '{info.filename}' would be written outside its folder")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise PackageError(f"the package member '{info.filename}' is a symbolic link")
        members.append(info)
    return members


def read_emd(path: Path) -> tuple[str, dict[str, Any]]:
    """The name and content of the single .emd in a package."""
    with zipfile.ZipFile(path) as zf:
        emds = [m for m in safe_members(zf) if m.filename.lower().endswith(".emd") and "/" not in m.filename]
        if len(emds) != 1:
            raise PackageError(f"a package must hold exactly one .emd at its root; found {len(emds)}")
        return emds[0].filename, json.loads(zf.read(emds[0]).decode("utf-8-sig"))


# an archive whose members add up to more than this is refused rather than unpacked
MAX_UNPACKED_BYTES = 8 * 1024**3


def extract(path: Path, target: Path) -> Path:
    """Unpack a package into ``target`` (created), refusing members that would land outside it, links and
    archives that unpack to more than ``MAX_UNPACKED_BYTES``; returns the path of its .emd."""
    emd_name, _ = read_emd(path)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as zf:
        members = safe_members(zf)
        if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise PackageError(f"the package unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        zf.extractall(target, members)
    return target / emd_name
