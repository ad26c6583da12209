"""Training runs on the range of chips real exports hold: band counts, data types, sizes, file formats."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geotrain.config import Settings
from geotrain.task import submission
from geotrain.task.params import parse
from geotrain.training.run import Progress, train
from tests import formats
from tests.conftest import in_share, in_share_json
from tests.exports import ExportSpec, write_classified_tiles, write_road_tiles, write_translation_tiles


def _to_jpeg_and_png(root: Path) -> None:
    lines = []
    for tif in sorted((root / "images").glob("*.tif")):
        with rasterio.open(tif) as src:
            image = src.read()
        with rasterio.open(root / "labels" / tif.name) as src:
            label = src.read()
        h, w = label.shape[1:]
        with rasterio.open(tif.with_suffix(".jpg"), "w", driver="JPEG", width=w, height=h, count=3, dtype="uint8") as d:
            d.write(image)
        with rasterio.open(
            (root / "labels" / tif.stem).with_suffix(".png"),
            "w",
            driver="PNG",
            width=w,
            height=h,
            count=1,
            dtype="uint8",
        ) as d:
            d.write(label)
        tif.unlink()
        (root / "labels" / tif.name).unlink()
        lines.append(f"images\\{tif.stem}.jpg labels\\{tif.stem}.png")
    (root / "map.txt").write_text("\n".join(lines) + "\n")


CASES = {
    "one_band_50px": ExportSpec(bands=1, dtype="uint8", size=50, values=(1, 2), absent=None, chips=5),
    "twelve_band_float_deflate": ExportSpec(
        bands=12, dtype="float32", size=40, values=(10, 200), absent=None, compress="deflate", chips=5
    ),
    "background_class_0": ExportSpec(bands=2, dtype="uint16", size=48, values=(0, 255), absent=None, chips=4),
    "jpeg_png": ExportSpec(bands=3, dtype="uint8", values=(1, 2), absent=None, compress=None, chips=5),
}  # fmt: skip


def _train(tmp_path: Path, form: dict[str, str], check_packages: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Check and train a request in this process on the exports under tmp_path/chips; the EMD and messages.
    The package check (an interpreter importing torch per job) runs where a test asks for it; the server's
    jobs run it as deployed."""
    settings = Settings(
        home=tmp_path / "home", data_stores={"/fileShares/c": tmp_path / "chips"}, check_packages=check_packages
    )
    settings.ensure_dirs()
    params = parse(form)
    submission.check(params, settings)
    messages: list[str] = []
    result = train(params, settings, tmp_path / "work", Progress(messages.append, messages.append, lambda p, t: None))
    package = settings.stores["/fileShares/geotrain"] / result["uri"].removeprefix("/fileShares/geotrain/")
    with zipfile.ZipFile(package) as zf:
        (emd_name,) = [n for n in zf.namelist() if n.endswith(".emd")]
        emd: dict[str, Any] = json.loads(zf.read(emd_name))
    return emd, messages


CUSTOM = {
    "one_band_50px": {
        "data_augmentation": "CUSTOM",
        "augmentation_parameters": '[["rotate", "30;0.5"], ["zoom", "(1.0,1.2);0.5"], ["crop", "40;1;(0,1);(0,1)"],'
        ' ["brightness", "(0.4,0.6);1"], ["contrast", "(0.75,1.5);1"], ["dihedral_affine", "0.5"]]',
    }
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_runs_on_real_world_chip_shapes(tmp_path: Path, case: str) -> None:
    root = write_classified_tiles(tmp_path / "chips" / case, CASES[case])
    if case == "jpeg_png":
        _to_jpeg_and_png(root)
    emd, _ = _train(
        tmp_path,
        {"in_folder": f"/fileShares/c/{case}", "output_name": json.dumps(in_share(case)), "model_type": "UNET",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "1",
         "arguments": '{"focal_loss": "True", "dice_loss_fraction": "0.3", "class_balancing": "True", "mixup": "True"}',
         **CUSTOM.get(case, {})},
    )  # fmt: skip
    spec = CASES[case]
    assert emd["ExtractBands"] == list(range(spec.bands))
    assert emd["ImageHeight"] == (40 if case in CUSTOM else spec.size)
    assert [c["Value"] for c in emd["Classes"]] == list(spec.values)
    background = set() if 0 in spec.values else {"NoData"}
    assert set(json.loads(emd["per_class_metrics"])) == {c["Name"] for c in emd["Classes"]} | background
    assert emd["IsImageNetNormalization"] == (spec.bands == 3 and spec.dtype == "uint8")
    assert len(emd["NormalizationStats"]["band_mean_values"]) == spec.bands
    assert np.isfinite(float(emd["accuracy"]))


def test_fasterrcnn_on_pascal_voc_jpeg_chips_with_a_crop(tmp_path: Path) -> None:
    from tests import formats

    formats.pascal_voc(tmp_path / "chips" / "voc", chips=6, size=48)
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/voc", "output_name": in_share_json("voc"), "model_type": "FASTERRCNN",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "chip_size": "40", "monitor": "AVERAGE_PRECISION", "validation_percent": "34", "resize_to": "96"},
    )  # fmt: skip
    assert emd["ImageHeight"] == 40 and emd["ModelParameters"]["input_size"] == 96
    assert emd["InferenceFunction"] == "GeotrainObjectDetector.py"
    assert "monitored_average_precision" in emd and set(emd["average_precision_score"]) == {"Palm", "Pine", "Oak"}
    assert any(i.startswith("Classes declared in the export but with no box: Oak") for i in infos)


def test_fasterrcnn_takes_its_transforms_from_the_folders_transforms_json(tmp_path: Path) -> None:
    from tests import formats

    root = formats.pascal_voc(tmp_path / "chips" / "voc", chips=6, size=48)
    (root / "transforms.json").write_text(
        json.dumps(
            {
                "Training": {
                    "rotate": {"degrees": 15, "p": 0.5},
                    "dihedral_affine": {"p": 0.5},
                    "crop": {"size": 40, "row_pct": [0, 1], "col_pct": "0, 1"},
                    "brightness": {"change": "0.45, 0.55"},
                },
                "Validation": {"crop": {"size": 40}},
            }
        )
    )
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/voc", "output_name": in_share_json("voc"), "model_type": "FASTERRCNN",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "data_augmentation": "FILE", "validation_percent": "34"},
    )  # fmt: skip
    assert emd["ImageHeight"] == 40  # the file's crop is the training chip size
    assert (
        "Augmentation from transforms.json: training rotate, dihedral_affine, crop, brightness; validation crop."
        in infos
    )


def test_feature_classifier_applies_custom_transforms_mixup_and_oversampling(tmp_path: Path) -> None:
    from tests import formats

    formats.labeled_tiles(tmp_path / "chips" / "lt", chips=6)
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/lt", "output_name": in_share_json("lt"), "model_type": "FEATURE_CLASSIFIER",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "validation_percent": "34", "data_augmentation": "CUSTOM",
         "arguments": '{"mixup": "True", "oversample": "True"}',
         "augmentation_parameters": '[["crop", "24;1;(0,1);(0,1)"], ["rotate", "(-20,20);0.5"], ["flip_lr", "0.5"]]'},
    )  # fmt: skip
    assert emd["ImageHeight"] == 24
    assert "Augmentation from augmentation_parameters: training crop, rotate, flip_lr; validation none." in infos
    assert any(i.startswith("oversample: chips of rare classes are drawn more often") for i in infos)


def test_several_input_folders_train_as_one(tmp_path: Path) -> None:
    write_classified_tiles(tmp_path / "chips" / "a", ExportSpec(chips=3, values=(3,), absent=None))
    write_classified_tiles(tmp_path / "chips" / "b", ExportSpec(chips=3, values=(7,), absent=None, seed=1))
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/a,/fileShares/c/b", "output_name": in_share_json("ab"), "model_type": "UNET",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001"},
    )  # fmt: skip
    assert [c["Value"] for c in emd["Classes"]] == [3, 7]
    assert "Training on 5 chips, validating on 1 (10%)." in infos
    assert emd["BatchSize"] == 2 and emd["ModelPadding"] == emd["ImageHeight"] // 4


@pytest.mark.parametrize("multi", [False, True])
def test_feature_classifier_on_variable_size_labeled_tiles(tmp_path: Path, multi: bool) -> None:
    from tests import formats

    formats.labeled_tiles(tmp_path / "chips" / "lt", multi=multi, chips=6)
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/lt", "output_name": in_share_json("lt"), "model_type": "FEATURE_CLASSIFIER",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "weight_init_scheme": "ALL_RANDOM", "validation_percent": "34"},
        check_packages=True,  # the package's own function, apart from geotrain, classifies chips alike
    )  # fmt: skip
    assert emd["ModelType"] == "ObjectClassification" and emd["ModelName"] == "FeatureClassifier"
    assert emd["InferenceFunction"] == "GeotrainObjectClassifier.py"
    (checked,) = [i for i in infos if i.startswith("Checked the package:")]
    assert "classifies 2 validation chip(s) as the trained model does" in checked, checked
    assert emd["IsMultiLabel"] is multi and emd["CropSizeFixed"] == 0 and emd["ImageHeight"] == 32
    assert emd["BatchSize"] == 2 and "ModelPadding" not in emd  # objects are classified whole, not tiled
    assert set(json.loads(emd["per_class_metrics"])) == {"Palm", "Pine", "Oak"}
    assert any(i.startswith("Classes declared in the export but with no chip: Oak") for i in infos)


def test_a_few_unreadable_chips_warn_and_the_job_goes_on(tmp_path: Path) -> None:
    root = write_classified_tiles(tmp_path / "chips" / "few_bad", ExportSpec(chips=12))
    bad = sorted((root / "images").glob("*.tif"))[5]
    bad.write_bytes(b"not a tiff")
    _, messages = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/few_bad", "output_name": in_share_json("few_bad"), "model_type": "UNET",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001"},
    )  # fmt: skip
    warned = [m for m in messages if "cannot be read" in m]
    assert len(warned) == 1 and bad.name in warned[0] and "1 of 12" in warned[0] and "skipped" in warned[0]
    assert "Training on 10 chips, validating on 1 (10%)." in messages


@pytest.mark.parametrize(
    ("model_type", "extra", "model_name"),
    [
        ("RETINANET", {"arguments": '{"scales": "[1, 0.8, 0.63]", "ratios": "[0.5, 1, 2]"}'}, "RetinaNet"),
        ("SSD", {"arguments": '{"grids": "[4, 2]", "zooms": "[0.7, 1.0]", "ratios": "[[1.0, 1.0], [1.0, 0.5]]",'
                              ' "location_loss_factor": "0.6", "focal_loss": "True", "bias": "-3"}'},
         "SingleShotDetector"),
        # YOLOV3 (pretrained_backbone False, COCO anchors for too few boxes) trains over HTTP in tests/e2e
        ("DETREG", {"arguments": '{"queries": "12"}'}, "DETReg"),
    ],
)  # fmt: skip
def test_other_detectors_train_on_pascal_voc(
    tmp_path: Path, model_type: str, extra: dict[str, str], model_name: str
) -> None:
    from tests import formats

    formats.pascal_voc(tmp_path / "chips" / "voc", chips=6, size=48)
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/voc", "output_name": in_share_json("voc"), "model_type": model_type,
         "backbone_model": "RESNET18", "max_epochs": "1",
         "learning_rate": "0.001", "batch_size": "2", "monitor": "AVERAGE_PRECISION", "validation_percent": "34",
         **extra},
        # RetinaNet gives many detections above the check's threshold after one epoch: the package's own
        # function, apart from geotrain, must give the same ones
        check_packages=model_type in ("RETINANET", "DETREG"),
    )  # fmt: skip
    assert emd["ModelType"] == "ObjectDetection" and emd["ModelName"] == model_name
    assert any(i.startswith("Epoch 1/1: train_loss") and "average_precision" in i for i in infos)
    assert set(emd["average_precision_score"]) == {"Palm", "Pine", "Oak"}
    if model_type == "SSD":
        assert emd["Grids"] == [4, 2] and emd["Zooms"] == [0.7, 1.0] and emd["Ratios"] == [[1.0, 1.0], [1.0, 0.5]]
    elif model_type == "DETREG":
        assert emd["ModelParameters"]["queries"] == 12 and emd["ModelParameters"]["input_size"] == 128
        assert any(i.startswith("Checked the package") for i in infos), infos
    else:
        assert (
            emd["ModelParameters"]["scales"] == [1, 0.8, 0.63]
            and emd["InferenceFunction"] == "GeotrainObjectDetector.py"
        )
        (checked,) = [i for i in infos if i.startswith("Checked the package:")]
        match = re.search(r"gives the trained model's (\d+) detections", checked)
        assert match is not None and int(match.group(1)) > 0, checked


def test_maskrcnn_trains_on_rcnn_masks_and_scores_masks(tmp_path: Path) -> None:
    from tests import formats

    formats.rcnn_masks(tmp_path / "chips" / "rcnn", chips=4, size=32)
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/rcnn", "output_name": in_share_json("rcnn"), "model_type": "MASKRCNN",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2",
         "validation_percent": "50", "arguments": '{"box_detections_per_img": "20", "rpn_nms_thresh": "0.6"}',
         "data_augmentation": "CUSTOM", "augmentation_parameters": '[["rotate", "20;1"], ["flip_lr", "0.5"]]'},
    )  # fmt: skip
    assert emd["ModelType"] == "InstanceDetection" and emd["ModelName"] == "MaskRCNN"
    assert "Augmentation from augmentation_parameters: training rotate, flip_lr; validation none." in infos
    assert emd["MaskRCNNkwargs"] == {"box_detections_per_img": 20, "rpn_nms_thresh": 0.6}
    assert np.isfinite(float(emd["mAP"]))


def test_an_image_captioner_on_16_bit_4_band_chips_passes_its_package_check(tmp_path: Path) -> None:
    """The package's function, run apart from geotrain, captions validation chips word for word as the trained
    network does, with the same confidence; a tile without a caption is left out, not counted unreadable."""
    root = formats.captions(tmp_path / "chips" / "captions", chips=8, bands=4, dtype="uint16")
    # a tile exported without a feature (ALL_TILES): no caption, left out
    (root / "labels" / "000000000007.xml").write_text("<annotation></annotation>")
    emd, messages = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/captions", "output_name": json.dumps({"uri": "/fileShares/geotrain/m/cap"}),
         "model_type": "IMAGECAPTIONER", "backbone_model": "RESNET18", "max_epochs": "2", "learning_rate": "0.003",
         "validation_percent": "25"},
        check_packages=True,
    )  # fmt: skip
    assert emd["ExtractBands"] == [0, 1, 2, 3] and emd["IsMultispectral"] is True
    assert "1 chip(s) without a caption (tiles with no feature) are left out." in messages
    assert any(m.startswith("Checked the package: its inference function") for m in messages), messages


def test_deepsort_with_reid_v2_on_4_band_crops_passes_its_package_check(tmp_path: Path) -> None:
    """The wider re-identification network on crops of four bands; the package's function, run apart from
    geotrain, re-identifies validation crops as the trained network does."""
    formats.identities(tmp_path / "chips" / "ids", crops=3, bands=4)
    emd, messages = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/ids", "output_name": json.dumps({"uri": "/fileShares/geotrain/m/ids"}),
         "model_type": "DEEPSORT", "backbone_model": "REID_V2", "max_epochs": "1", "learning_rate": "0.003",
         "validation_percent": "34"},
        check_packages=True,
    )  # fmt: skip
    assert emd["ModelType"] == "ObjectTracking" and emd["EmbeddingSize"] == 512
    assert any(m.startswith("Checked the package: its inference function") for m in messages), messages


def test_the_stacked_hourglass_road_extractor_on_48_px_chips_passes_its_package_check(tmp_path: Path) -> None:
    """arcgis.learn's default road network (no mtl_model given), on 4-band 16-bit chips whose size is no
    multiple of 32: the package's function classifies every pixel as the trained network does."""
    write_road_tiles(tmp_path / "chips" / "roads", ExportSpec(chips=6, size=48, values=(4,), absent=None, seed=7))
    emd, messages = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/roads", "output_name": json.dumps({"uri": "/fileShares/geotrain/m/roads"}),
         "model_type": "MULTITASK_ROADEXTRACTOR", "max_epochs": "1", "learning_rate": "0.003"},
        check_packages=True,
    )  # fmt: skip
    assert emd["ModelParameters"]["mtl_model"] == "hourglass"
    assert any(m.startswith("Road extraction: two stacked hourglasses") for m in messages), messages
    assert any(m.startswith("Checked the package") for m in messages), messages


def test_maxdeeplab_passes_its_package_check(tmp_path: Path) -> None:
    """The package's function, run apart from geotrain, gives every pixel the class value and segment number
    the trained network gives it."""
    formats.panoptic(tmp_path / "chips" / "pan", chips=6)
    emd, messages = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/pan", "output_name": json.dumps({"uri": "/fileShares/geotrain/m/pan"}),
         "model_type": "MAXDEEPLAB", "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.003"},
        check_packages=True,
    )  # fmt: skip
    assert emd["ModelParameters"]["n_masks"] == 30
    assert any(m.startswith("Checked the package") and "100.0%" in m for m in messages), messages


def test_siammask_tracks_objects_of_16_bit_four_band_frames_and_its_package_tracker_agrees(tmp_path: Path) -> None:
    from tests import formats

    formats.tracks(tmp_path / "chips" / "trk", frames=6, bands=4, dtype="uint16")
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/trk", "output_name": in_share_json("trk"), "model_type": "SIAMMASK",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "4",
         "chip_size": "24", "monitor": "MIOU", "arguments": '{"frame_range": "2"}'},
        check_packages=True,
    )  # fmt: skip
    assert emd["ModelType"] == "ObjectTracking" and emd["ExtractBands"] == [0, 1, 2, 3]
    assert emd["IsImageNetNormalization"] is False and len(emd["NormalizationStats"]["band_mean_values"]) == 4
    params = emd["ModelParameters"]
    assert (params["exemplar_size"], params["instance_size"], params["frame_range"]) == (24, 49, 2)
    assert params["anchors"]["ratios"] == [0.33, 0.5, 1.0, 2.0, 3.0] and 0 <= float(emd["mean_IOU"]) <= 1
    assert any(m.startswith("Checked the package: its tracker") for m in infos)


@pytest.mark.parametrize("generator", ["global", "local"])
def test_pix2pixhd_with_its_default_four_halvings_gives_images_of_the_chips_size(
    tmp_path: Path, generator: str
) -> None:
    # pix2pixHD's global generator halves four times by default and must come back up as many times; the local
    # enhancer reads the chip at full size around it
    write_translation_tiles(tmp_path / "chips" / "hd", ExportSpec(chips=4, size=48, bands=3, dtype="uint8"))
    emd, infos = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/hd", "output_name": in_share_json("hd"), "model_type": "PIX2PIXHD",
         "max_epochs": "1", "batch_size": "2",
         "arguments": json.dumps({"n_gen_filters": "8", "n_blocks_global": "1", "n_dscr_filters": "8", "n_dscr": "1",
                                  "gen_network": generator, "n_blocks_local": "1"})},
        check_packages=True,
    )  # fmt: skip
    params = emd["ModelParameters"]
    assert params["downsample"] == 4 and emd["ImageHeight"] == 48
    assert params["local_enhancers"] == (1 if generator == "local" else 0)
    assert any(m.startswith("Checked the package") for m in infos)
    if generator == "local":
        assert any("16 filters first) on the input 2 times coarser, and 1 local enhancer(s)" in m for m in infos)
