"""Every exported format read as ArcGIS writes it: what each reader yields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geotrain.training.data.export import data_kind, read_export
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import Scan, scan
from tests import formats

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "kitti-phragmites-6band"


def _scan(root: Path) -> tuple[str, Scan[Any]]:
    export = read_export(root)
    reader = reader_for(export)
    result = scan(export, reader.load)
    assert not result.bad, result.bad
    return reader.kind, result


def test_pascal_voc_boxes_clipped_and_classes_by_value(tmp_path: Path) -> None:
    kind, result = _scan(formats.pascal_voc(tmp_path / "voc"))
    assert kind == "PASCAL_VOC_rectangles" and len(result.items) == 4  # sidecars are not chips
    image, target = result.sample(0)
    assert image.shape == (3, 48, 48) and image.dtype == np.uint8 and result.normalization.imagenet
    assert target["labels"].tolist() == [1, 2] and target["boxes"].dtype == np.float32
    assert target["boxes"][0].tolist() == pytest.approx([2.0, 3.0, 12.5, 11.0])
    assert target["boxes"][1][3] == 48.0  # clipped to the chip


def test_kitti_multispectral_and_missing_chips(tmp_path: Path) -> None:
    root = formats.kitti(tmp_path / "kitti")
    export = read_export(root)
    assert len(export.items) == 4 and len(export.missing) == 2
    kind, result = _scan(root)
    image, target = result.sample(0)
    assert kind == "KITTI_rectangles" and image.shape == (6, 32, 32) and image.dtype == np.uint16
    assert target["labels"].tolist() == [2, 1]
    assert target["boxes"][0].tolist() == pytest.approx([4.5, 7.25, 28.0, 30.1])
    assert not result.normalization.imagenet and result.normalization.mean.shape == (6,)


def test_shared_real_kitti_export_reads(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    kind, result = _scan(SHARED)
    assert kind == "KITTI_rectangles" and len(result.items) == 50
    image, target = result.sample(0)
    assert image.shape == (6, 32, 32) and image.dtype == np.uint16
    assert target["boxes"].shape[1] == 4 and all(1 <= v <= 7 for v in target["labels"].tolist())


def test_labeled_tiles_variable_size_class_by_value_or_name(tmp_path: Path) -> None:
    kind, result = _scan(formats.labeled_tiles(tmp_path / "lt"))
    assert kind == "Labeled_Tiles"
    sizes = {result.sample(i)[0].shape[1] for i in range(4)}
    assert sizes == {24, 28, 32, 36}
    assert [int(result.sample(i)[1]) for i in range(4)] == [0, 1, 1, 0]  # "1", "2", "Pine", "1" -> indices


def test_multilabeled_tiles_multi_hot(tmp_path: Path) -> None:
    kind, result = _scan(formats.labeled_tiles(tmp_path / "mlt", multi=True))
    assert kind == "MultiLabeled_Tiles"
    assert result.sample(1)[1].tolist() == [1.0, 1.0, 0.0] and result.sample(0)[1].dtype == np.float32


def test_imagenet_class_from_folder(tmp_path: Path) -> None:
    kind, result = _scan(formats.imagenet(tmp_path / "inet"))
    assert kind == "Imagenet" and sorted(int(result.sample(i)[1]) for i in range(4)) == [0, 0, 1, 1]


def test_rcnn_masks_instances_across_bands_and_classes(tmp_path: Path) -> None:
    kind, result = _scan(formats.rcnn_masks(tmp_path / "rcnn"))
    assert kind == "RCNN_Masks"
    first = next(t for item, (_, t) in zip(result.items, (result.sample(i) for i in range(3)), strict=True)
                 if len(item.masks) == 2)  # fmt: skip
    assert first["masks"].shape == (4, 32, 32) and first["masks"].dtype == np.uint8
    assert sorted(first["labels"].tolist()) == [1, 1, 1, 2]
    palm_boxes = first["boxes"][first["labels"] == 1].tolist()
    assert [2.0, 2.0, 10.0, 10.0] in palm_boxes and [6.0, 6.0, 14.0, 14.0] in palm_boxes


def test_change_detection_before_after_label(tmp_path: Path) -> None:
    kind, result = _scan(formats.change_detection(tmp_path / "cd"))
    image, target = result.sample(0)
    assert kind == "ChangeDetection" and image.shape == target["image2"].shape == (4, 32, 32)
    assert set(np.unique(target["label"]).tolist()) == {0, 2}  # value 2 (Pine) is index 2


def test_pix2pix_pairs_and_superresolution_images(tmp_path: Path) -> None:
    kind, result = _scan(formats.export_tiles(tmp_path / "p2p", second=True))
    image, target = result.sample(0)
    assert kind == "Pix2Pix" and image.shape == (3, 32, 32) and target.shape == (1, 32, 32)
    kind, result = _scan(formats.export_tiles(tmp_path / "sr", second=False))
    assert kind == "SuperResolution" and result.sample(0)[1] is None


def test_cyclegan_two_domains(tmp_path: Path) -> None:
    export = read_export(formats.cyclegan(tmp_path / "cg"))
    assert export.metadata_format == "CycleGAN" and data_kind(export) == "CycleGAN"
    assert len(export.items) == 3 and len(export.items_b) == 2


def test_panoptic_semantic_and_instances(tmp_path: Path) -> None:
    kind, result = _scan(formats.panoptic(tmp_path / "pan"))
    _, target = result.sample(0)
    assert kind == "Panoptic_Segmentation" and target["masks"].shape == (1, 32, 32)
    assert set(np.unique(target["semantic"]).tolist()) == {0, 1, 3}  # values 1 and 5 -> indices 1 and 3


def test_a_box_of_an_unknown_class_names_the_label_file(tmp_path: Path) -> None:
    root = formats.pascal_voc(tmp_path / "voc", chips=2)
    bad = sorted((root / "labels").glob("*.xml"))[0]
    bad.write_text(bad.read_text().replace("<name>1</name>", "<name>42</name>"))
    export = read_export(root)
    result = scan(export, reader_for(export).load)
    assert len(result.bad) == 1 and bad.name in str(result.bad[0]) and "'42'" in str(result.bad[0])


def test_mrf_chips_with_their_index_and_data_files(tmp_path: Path) -> None:
    from tests.exports import write_classified_tiles

    root = write_classified_tiles(tmp_path / "mrf")
    lines = []
    for tif in sorted((root / "images").glob("*.tif")):
        for folder in ("images", "labels"):
            source = root / folder / tif.name
            data = rasterio_read(source)
            formats.raster(source.with_suffix(".mrf"), data, driver="MRF")
            source.unlink()
        lines.append(f"images\\{tif.stem}.mrf  labels\\{tif.stem}.mrf ")
    (root / "map.txt").write_text("\r\n".join(lines))
    assert any(p.suffix == ".idx" for p in (root / "labels").iterdir())
    kind, result = _scan(root)
    image, label = result.sample(0)
    assert kind == "Classified_Tiles" and image.shape == (4, 32, 32) and image.dtype == np.uint16
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3} and label.dtype == np.uint8


def rasterio_read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        data: np.ndarray = src.read()
    return data


def test_extract_bands_from_a_real_list_selects_and_orders_bands(tmp_path: Path) -> None:
    import json

    from tests.exports import ExportSpec, write_classified_tiles

    root = write_classified_tiles(tmp_path / "eb", ExportSpec(chips=2, bands=4))
    emd = json.loads((root / "esri_model_definition.emd").read_text())
    emd["ExtractBands"] = [3, 0, 1]
    (root / "esri_model_definition.emd").write_text(json.dumps(emd))
    export = read_export(root)
    assert export.extract_bands == [3, 0, 1] and export.num_bands == 3
    full = rasterio_read(export.items[0].image)
    _, result = _scan(root)
    image, _ = result.sample(0)
    assert image.shape[0] == 3 and np.array_equal(image, full[[3, 0, 1]])


def test_imagenet_class_folders_named_with_spaces_are_read_from_map_txt(tmp_path: Path) -> None:
    """DEEPSORT's identity folders may carry the class names, spaces and all: a map.txt line is one path."""
    root = tmp_path / "ids"
    rng = np.random.default_rng(0)
    lines = []
    for i, name in enumerate(["car 1", "car 1", "truck 7"]):
        formats.raster(root / "images" / name / f"{i:012d}.tif", rng.integers(0, 200, (3, 16, 16)).astype("uint8"))
        lines.append(f"images\\{name}\\{i:012d}.tif")
    formats.metadata(root, "Imagenet", 3, 16, 3, classes=[(1, "car 1"), (2, "truck 7")])
    formats.map_txt(root, lines)
    export = read_export(root)
    assert not export.missing
    assert sorted(item.class_name or "" for item in export.items) == ["car 1", "car 1", "truck 7"]
