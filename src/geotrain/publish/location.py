"""Where a trained package is written: ``<folder>/<last part of the folder>.dlpk`` in a file share, for an
``output_name`` given as a data-store ``uri``. A ``name`` makes a portal item instead (``publish.portal``)."""

from __future__ import annotations

from pathlib import PurePosixPath

from geotrain.config import Settings
from geotrain.stores import StorePath, StorePathError, resolve
from geotrain.task.params import OutputName


def package_location(output: OutputName, settings: Settings) -> StorePath | None:
    """The .dlpk's data-store path; None for an item output. Raises StorePathError for a path outside the
    file shares."""
    if output.uri is None:
        return None
    folder = resolve(output.uri, settings.stores, kinds=("fileShares",))
    if folder.relative.suffix.lower() == ".dlpk":
        return folder
    if folder.relative == PurePosixPath("."):
        raise StorePathError(f"give a folder inside the file share, e.g. {folder.store}/models/<name>")
    return resolve(f"{folder.uri}/{folder.relative.name}.dlpk", settings.stores, kinds=("fileShares",))
