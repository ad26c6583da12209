"""`geotrain inspect` on every format: counts, sizes, bands, classes and problems."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from geotrain.training.data.inspect import inspect
from tests import formats
from tests.exports import ExportSpec, write_classified_tiles

CASES: dict[str, tuple[Callable[[Path], Path], str, int, int, str]] = {
    # builder, kind, readable chips, bands, data type
    "classified": (lambda p: write_classified_tiles(p, ExportSpec(chips=3)), "Classified_Tiles", 3, 4, "uint16"),
    "voc": (formats.pascal_voc, "PASCAL_VOC_rectangles", 4, 3, "uint8"),
    "kitti": (formats.kitti, "KITTI_rectangles", 4, 6, "uint16"),
    "labeled": (formats.labeled_tiles, "Labeled_Tiles", 4, 3, "uint8"),
    "multilabeled": (lambda p: formats.labeled_tiles(p, multi=True), "MultiLabeled_Tiles", 4, 3, "uint8"),
    "imagenet": (formats.imagenet, "Imagenet", 4, 3, "uint8"),
    "rcnn": (formats.rcnn_masks, "RCNN_Masks", 3, 3, "uint8"),
    "pix2pix": (lambda p: formats.export_tiles(p, second=True), "Pix2Pix", 3, 3, "uint8"),
    "superres": (lambda p: formats.export_tiles(p, second=False), "SuperResolution", 3, 3, "uint8"),
    "change": (formats.change_detection, "ChangeDetection", 3, 4, "uint16"),
    "cyclegan": (formats.cyclegan, "CycleGAN", 3, 3, "uint8"),
    "panoptic": (formats.panoptic, "Panoptic_Segmentation", 2, 3, "uint8"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_inspect_reports_each_format(tmp_path: Path, case: str) -> None:
    build, kind, readable, bands, dtype = CASES[case]
    report = inspect(build(tmp_path / case))
    assert (report.kind, report.chips_readable, report.bands, report.data_type) == (kind, readable, bands, dtype)
    assert sum(report.chip_sizes.values()) == readable


def test_inspect_counts_features_per_class_and_names_problems(tmp_path: Path) -> None:
    root = formats.pascal_voc(tmp_path / "voc")
    bad = sorted((root / "images").glob("*.jpg"))[1]
    bad.write_bytes(b"not a jpeg")
    report = inspect(root)
    assert [(c.name, c.chips, c.features) for c in report.classes] == [("Palm", 3, 3), ("Pine", 3, 3), ("Oak", 0, 0)]
    assert any(bad.name in p for p in report.problems)
    assert any("Oak" in p and "absent" in p for p in report.problems)


def test_inspect_command_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geotrain.cli import main

    root = formats.kitti(tmp_path / "kitti")
    run = [sys.executable, "-m", "geotrain.cli", "inspect", str(root)]
    text = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "KITTI_rectangles" in text and "4 readable of 6 listed" in text and "6 x uint16" in text
    assert "2 chip(s) listed in map.txt are missing" in text
    # the same command in this process (the one above shows the real entry point): machine-readable
    assert main(["inspect", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chips_readable"] == 4 and data["classes"][1] == {"value": 2, "name": "Pine", "chips": 4, "features": 4}


def test_inspect_command_on_a_folder_that_is_no_export(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "geotrain.cli", "inspect", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "metadata format" in out.stderr


def test_inspect_shows_what_transforms_json_would_apply_or_why_it_cannot(tmp_path: Path) -> None:
    root = formats.pascal_voc(tmp_path / "voc")
    assert inspect(root).transforms_file == "none"
    (root / "transforms.json").write_text('{"Training": {"flip_lr": {"p": 0.5}}, "Validation": {}}')
    assert inspect(root).transforms_file == "transforms.json: training flip_lr; validation none"
    (root / "transforms.json").write_text('{"Training": {"warp": {}}}')
    report = inspect(root)
    assert report.transforms_file == "transforms.json (unusable)"
    assert any("unknown transform 'warp'" in p for p in report.problems)
