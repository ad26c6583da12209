"""Learning check per model family: on an easy generated export the metric must rise well above chance.

    .venv/bin/python bench/learning.py [unet] [feature_classifier] [fasterrcnn] [retinanet] [ssd] [yolov3] [maskrcnn]
        [deeplab_pointrend] [maskrcnn_pointrend] [siammask] [mmdetection] [mmdetection_atss] [--epochs N]

Prints the validation metric each model reaches (UNET mIoU, FEATURE_CLASSIFIER accuracy, the detectors'
box mAP@0.5, MASKRCNN's mask mAP@0.5, SIAMMASK's mask mIoU on held-out tracks). Trains on the CPU unless a GPU
is present. The mmdetection families (mmdet's cascade_rcnn and atss) need OpenMMLab (README's OpenMMLab section)
and are left out of the default list where it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geotrain.config import Settings
from geotrain.task import catalog
from geotrain.task.params import parse
from geotrain.training.run import Progress, train
from tests import formats
from tests.exports import ExportSpec, write_classified_tiles

FAMILIES = {
    # model type, metric printed, how to read it from the EMD, the metric monitored (the weights kept)
    "unet": ("UNET", "mIoU", lambda e: float(e["miou"]), "MIOU"),
    "feature_classifier": ("FEATURE_CLASSIFIER", "accuracy", lambda e: float(e["accuracy"]), "ACCURACY"),
    "fasterrcnn": ("FASTERRCNN", "mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    "retinanet": ("RETINANET", "mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    "ssd": ("SSD", "mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    "yolov3": ("YOLOV3", "mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    "maskrcnn": ("MASKRCNN", "mask mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    "deeplab_pointrend": ("DEEPLAB", "mIoU", lambda e: float(e["miou"]), "MIOU"),
    "maskrcnn_pointrend": ("MASKRCNN", "mask mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    # held-out tracks: objects the tracker never saw, followed from one frame to another
    "siammask": ("SIAMMASK", "mask mIoU", lambda e: float(e["mean_IOU"]), "MIOU"),
    "mmdetection": ("MMDETECTION", "mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
    "mmdetection_atss": ("MMDETECTION", "mAP@0.5", lambda e: float(e["mAP"]), "AVERAGE_PRECISION"),
}
# model arguments a family trains with
ARGUMENTS = {
    "deeplab_pointrend": {"pointrend": True},
    "maskrcnn_pointrend": {"pointrend": True},
    "siammask": {"exemplar_size": 32, "instance_size": 64},
    "mmdetection": {"model": "cascade_rcnn"},
    "mmdetection_atss": {"model": "atss"},
}
CLASSES = [(1, "Palm"), (2, "Pine")]


def _export(family: str, root: Path) -> Path:
    match family:
        case "unet" | "deeplab_pointrend":
            return write_classified_tiles(
                root, ExportSpec(chips=48, size=64, bands=3, dtype="uint8", values=(1, 2), absent=None)
            )
        case "feature_classifier":
            return _labeled(root, chips=48)
        case "maskrcnn" | "maskrcnn_pointrend":
            return _objects(root, chips=48, masks=True)
        case "siammask":
            return _video(root, frames=24, objects=8)
        case _:
            return _objects(root, chips=48, masks=False)


def _objects(root: Path, chips: int, masks: bool) -> Path:
    """64 px chips with one to three bright squares on a dark, noisy ground: Palm squares are red, Pine
    green. PASCAL_VOC_rectangles boxes, or RCNN_Masks instance rasters (one folder per class)."""
    rng = np.random.default_rng(0)
    size, lines = 64, []
    for i in range(chips):
        stem = f"{i:012d}"
        image = rng.integers(0, 60, size=(3, size, size)).astype(np.uint8)
        instances = {value: np.zeros((1, size, size), np.uint8) for value, _ in CLASSES}
        boxes = []
        for n in range(int(rng.integers(1, 4))):
            value, side = int(rng.integers(1, 3)), int(rng.integers(12, 22))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            if any(x < bx1 and bx0 < x + side and y < by1 and by0 < y + side for _, bx0, by0, bx1, by1 in boxes):
                continue  # keep objects apart
            image[value - 1, y : y + side, x : x + side] = 230
            instances[value][0, y : y + side, x : x + side] = n + 1
            boxes.append((value, x, y, x + side, y + side))
        formats.raster(root / "images" / f"{stem}.tif", image)
        if masks:
            for value, name in CLASSES:
                formats.raster(root / "labels" / name / f"{stem}.tif", instances[value])
            lines.append(f"images\\{stem}.tif labels\\Palm\\{stem}.tif")
        else:
            objects = "".join(
                f"<object><name>{v}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                f"<ymax>{y1}</ymax></bndbox></object>"
                for v, x0, y0, x1, y1 in boxes
            )
            (root / "labels").mkdir(exist_ok=True)
            (root / "labels" / f"{stem}.xml").write_text(f"<annotation>{objects}</annotation>")
            lines.append(f"images\\{stem}.tif labels\\{stem}.xml")
    fmt = "RCNN_Masks" if masks else "PASCAL_VOC_rectangles"
    formats.metadata(root, fmt, 3, size, chips, classes=CLASSES)
    formats.map_txt(root, lines)
    return root


def _video(root: Path, frames: int, objects: int) -> Path:
    """RCNN_Masks of video frames (64 px): ``objects`` rectangles of their own sizes and colours drifting across a
    dark, noisy ground, each the same instance id of labels/Car/ in every frame it shows in."""
    rng = np.random.default_rng(1)
    size, lines = 64, []
    sides = rng.integers(8, 16, (objects, 2))
    starts = rng.uniform(0, size - 16, (objects, 2))
    speeds = rng.uniform(-1.5, 1.5, (objects, 2))
    colours = rng.integers(120, 250, (objects, 3))
    for i in range(frames):
        stem = f"{i:09d}"
        image = rng.integers(0, 60, size=(3, size, size)).astype(np.uint8)
        cars = np.zeros((1, size, size), np.uint8)
        for n in range(objects):
            x, y = (int(v) % (size - 16) for v in starts[n] + speeds[n] * i)
            w, h = (int(v) for v in sides[n])
            image[:, y : y + h, x : x + w] = colours[n][:, None, None]
            cars[0, y : y + h, x : x + w] = n + 1
        formats.raster(root / "images" / f"{stem}.tif", image)
        formats.raster(root / "labels" / "Car" / f"{stem}.tif", cars)
        lines.append(f"images\\{stem}.tif labels\\Car\\{stem}.tif")
    formats.metadata(root, "RCNN_Masks", 3, size, frames, classes=[(1, "Car")])
    formats.map_txt(root, lines)
    return root


def _labeled(root: Path, chips: int) -> Path:
    """Labeled_Tiles whose class shows in the pixels: Palm chips are bright in band 1, Pine in band 2."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(chips):
        stem, value = f"{i:012d}", 1 + i % 2
        image = rng.integers(0, 120, size=(3, 32, 32)).astype(np.uint8)
        image[value - 1, 8:24, 8:24] = 240
        formats.raster(root / "images" / f"{stem}.tif", image)
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.xml").write_text(f"<annotation><object><name>{value}</name></object></annotation>")
        lines.append(f"images\\{stem}.tif labels\\{stem}.xml")
    formats.metadata(root, "Labeled_Tiles", 3, 32, chips, classes=[(1, "Palm"), (2, "Pine")])
    formats.map_txt(root, lines)
    return root


def run(family: str, epochs: int, verbose: bool = False) -> tuple[float, float]:
    model_type, _, read, monitor = FAMILIES[family]
    backbone = "DARKNET53" if model_type == "YOLOV3" else "RESNET18"
    with tempfile.TemporaryDirectory() as tmp:
        _export(family, Path(tmp) / "chips" / family)
        settings = Settings(home=Path(tmp) / "home", data_stores={"/fileShares/c": Path(tmp) / "chips"})
        settings.ensure_dirs()
        params = parse(
            {"in_folder": f"/fileShares/c/{family}",
             "output_name": json.dumps({"uri": f"/fileShares/geotrain/models/{family}"}),
             "model_type": model_type, "backbone_model": backbone, "max_epochs": str(epochs),
             "learning_rate": "0.002", "batch_size": "8", "stop_training": "false", "validation_percent": "25",
             "monitor": monitor, "arguments": json.dumps(ARGUMENTS.get(family, {}))}
        )  # fmt: skip

        def say(text: str) -> None:
            if verbose:
                print(f"  {text}", flush=True)

        start = time.perf_counter()
        result = train(params, settings, Path(tmp) / "work", Progress(say, say, lambda p, t: None))
        seconds = time.perf_counter() - start
        import zipfile

        package = settings.stores["/fileShares/geotrain"] / result["uri"].removeprefix("/fileShares/geotrain/")
        with zipfile.ZipFile(package) as zf:
            emd = json.loads(zf.read(f"{family}.emd"))
        return read(emd), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    here = [f for f in FAMILIES if FAMILIES[f][0] in catalog.BUILT]
    parser.add_argument("families", nargs="*", default=here)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--verbose", action="store_true", help="print the job's messages")
    args = parser.parse_args()
    for family in args.families:
        value, seconds = run(family, args.epochs, args.verbose)
        print(f"{family:<20} {FAMILIES[family][1]:<9} {value:.3f}   ({args.epochs} epochs, {seconds:.0f} s)")


if __name__ == "__main__":
    main()
