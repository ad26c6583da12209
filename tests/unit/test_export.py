"""Reading exports as ArcGIS writes them, quirks included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from geotrain.training.data.export import ExportError, merge_exports, read_export
from tests.exports import ExportSpec, write_classified_tiles

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "kitti-phragmites-6band"


def test_placeholder_emd_crlf_map_and_unsorted_lines(tmp_path: Path) -> None:
    root = write_classified_tiles(tmp_path / "e", ExportSpec(chips=5))
    info = read_export(root)
    assert info.metadata_format == "Classified_Tiles"
    assert info.tile_size == (32, 32) and info.num_bands == 4  # from the stats file: the EMD has "e.g. 256"
    assert [(c.value, c.name) for c in info.classes] == [(3, "Water"), (7, "Building"), (9, "Road")]
    assert info.classes[1].color is None  # [-1,-1,-1] means none
    assert len(info.items) == 5 and all(i.label is not None and i.label.is_file() for i in info.items)


def test_missing_chips_listed_in_map_are_counted_not_fatal(tmp_path: Path) -> None:
    root = write_classified_tiles(tmp_path / "e", ExportSpec(chips=4))
    next(iter((root / "images").glob("*.tif"))).unlink()
    info = read_export(root)
    assert len(info.items) == 3 and len(info.missing) == 1


def test_shared_real_kitti_export(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    info = read_export(SHARED)
    assert info.metadata_format == "KITTI_rectangles" and info.num_bands == 6 and info.tile_size == (32, 32)
    assert len(info.classes) == 7 and info.classes[6].name == "Phragmites"
    assert len(info.items) == 50 and len(info.missing) == 256


def test_not_an_export(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(ExportError, match="metadata format"):
        read_export(tmp_path / "x")


def test_band_stats_from_running_moments(tmp_path: Path) -> None:
    root = write_classified_tiles(tmp_path / "e", ExportSpec(chips=2, bands=2, values=(1,), absent=None))
    stats = json.loads((root / "esri_accumulated_stats.json").read_text())
    stats["BandStatsState"] = [{"Min": 0, "Max": 9, "Mean": 0, "StdDev": 0, "M1": 4.0, "M2": 400.0, "Num": 100}] * 2
    (root / "esri_accumulated_stats.json").write_text(json.dumps(stats))
    info = read_export(root)
    assert info.band_stats is not None and info.band_stats.mean == [4.0, 4.0] and info.band_stats.std == [2.0, 2.0]


def test_merging_folders_of_different_formats_is_refused(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    a = read_export(write_classified_tiles(tmp_path / "a", ExportSpec(chips=2)))
    b = read_export(shutil.copytree(SHARED, tmp_path / "b"))
    with pytest.raises(ExportError, match="one metadata format"):
        merge_exports([a, b])


def test_merging_two_classified_exports_unions_classes(tmp_path: Path) -> None:
    a = read_export(write_classified_tiles(tmp_path / "a", ExportSpec(chips=2, values=(3,), absent=None)))
    b = read_export(write_classified_tiles(tmp_path / "b", ExportSpec(chips=3, values=(7,), absent=None)))
    merged = merge_exports([a, b])
    assert [c.value for c in merged.classes] == [3, 7] and len(merged.items) == 5


def test_class_map_keeps_noncontiguous_values_apart() -> None:
    from geotrain.training.data.classified_tiles import ClassMap

    cmap = ClassMap([7, 3, 9])
    label = np.array([[0, 3, 7], [9, 5, 300]])
    assert cmap.encode(label).tolist() == [[0, 1, 2], [3, 0, 0]] and cmap.num_classes == 4
