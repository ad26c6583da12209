"""Where a trained package is written: ``<folder>/<last part of the folder>.dlpk`` in a file share."""

from __future__ import annotations

from pathlib import PurePosixPath

from geotrain.config import DEFAULT_FILE_SHARE, Settings
from geotrain.stores import StorePath, StorePathError, resolve
from geotrain.task.params import OutputName


def package_location(output: OutputName, settings: Settings) -> StorePath:
    """The .dlpk's data-store path. Raises StorePathError for a path outside the file shares."""
    if output.uri is not None:
        folder = resolve(output.uri, settings.stores, kinds=("fileShares",))
        if folder.relative.suffix.lower() == ".dlpk":
            return folder
        if folder.relative == PurePosixPath("."):
            raise StorePathError(f"give a folder inside the file share, e.g. {folder.store}/models/<name>")
        return resolve(f"{folder.uri}/{folder.relative.name}.dlpk", settings.stores, kinds=("fileShares",))
    assert output.name is not None
    return resolve(f"{DEFAULT_FILE_SHARE}/models/{output.name}/{output.name}.dlpk", settings.stores)
