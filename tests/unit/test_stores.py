"""Request paths resolve only inside registered data stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geotrain.stores import StorePathError, resolve


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "chips" / "exp").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "chips" / "link_out")
    os.symlink(tmp_path / "chips" / "exp", tmp_path / "chips" / "link_in")
    return {"/fileShares/chips": tmp_path / "chips", "/rasterStores/rs": tmp_path / "rs"}


def test_store_path_maps_to_local_folder(stores: dict[str, Path]) -> None:
    hit = resolve("/fileShares/chips/exp", stores)
    assert hit.local == (stores["/fileShares/chips"] / "exp").resolve() and hit.uri == "/fileShares/chips/exp"


def test_backslashes_and_case_of_the_store_name(stores: dict[str, Path]) -> None:
    assert resolve("\\FILESHARES\\chips\\exp", stores).local.name == "exp"


def test_symlink_inside_the_store_is_fine(stores: dict[str, Path]) -> None:
    assert resolve("/fileShares/chips/link_in", stores).local.name == "exp"


@pytest.mark.parametrize(
    "path",
    [
        "/fileShares/chips/../outside",
        "/fileShares/chips/link_out",
        "/etc/passwd",
        "C:\\chips",
        "\\\\srv\\share\\x",
        "/fileShares/chips/exp\x00",
        "/fileShares/other/x",
        "relative/x",
    ],
)
def test_escapes_are_refused(stores: dict[str, Path], path: str) -> None:
    with pytest.raises(StorePathError):
        resolve(path, stores)


def test_kinds_limit_the_store_type(stores: dict[str, Path]) -> None:
    with pytest.raises(StorePathError, match="fileShares"):
        resolve("/rasterStores/rs/x", stores, kinds=("fileShares",))
