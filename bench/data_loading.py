"""Data-loading benchmark (no model), after TorchGeo's IO bench.

For 256 px chips as JPEG (3-band), 8-bit TIFF (3-band) and 16-bit 4-band LZW TIFF it prints chips per
second of:
  plain      a bare rasterio loop reading each chip and its label
  pipeline   geotrain's training data set, one process (read, class mapping, crop, flips, normalise, tensor)
  ratio      pipeline / plain (the goal: at least 0.9)
  workers=N  the same through a DataLoader with N worker processes (batches of 8)
Best of --rounds alternating rounds for plain and pipeline.

    .venv/bin/python bench/data_loading.py [--chips 300] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader

from geotrain.training.data.classified_tiles import ClassMap, PixelCounts, SegmentationChips, loader
from geotrain.training.data.export import read_export
from geotrain.training.data.scan import Scan, scan

KINDS = {
    "jpeg_3band_8bit": {"driver": "JPEG", "ext": "jpg", "bands": 3, "dtype": "uint8", "options": {}},
    "tiff_3band_8bit": {"driver": "GTiff", "ext": "tif", "bands": 3, "dtype": "uint8", "options": {}},
    "tiff_4band_16bit_lzw": {
        "driver": "GTiff", "ext": "tif", "bands": 4, "dtype": "uint16", "options": {"compress": "lzw"},
    },
}  # fmt: skip


def write_export(root: Path, kind: str, chips: int, size: int = 256) -> Path:
    spec = KINDS[kind]
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    label_driver, label_ext = ("PNG", "png") if spec["driver"] == "JPEG" else ("GTiff", "tif")
    high = 255 if spec["dtype"] == "uint8" else 4095
    for i in range(chips):
        stem = f"{i:012d}"
        # smooth fields compress like real imagery, unlike white noise
        base = rng.integers(0, high, size=(spec["bands"], size // 16, size // 16)).astype(np.float64)
        image = np.kron(base, np.ones((16, 16))) + rng.normal(0, high * 0.02, (spec["bands"], size, size))
        image = np.clip(image, 0, high).astype(spec["dtype"])
        label = (np.kron(rng.integers(0, 3, (size // 32, size // 32)), np.ones((32, 32)))).astype(np.uint8)
        common = {"width": size, "height": size}
        with rasterio.open(root / "images" / f"{stem}.{spec['ext']}", "w", driver=spec["driver"], count=spec["bands"],
                           dtype=spec["dtype"], **common, **spec["options"]) as dst:  # fmt: skip
            dst.write(image)
        with rasterio.open(root / "labels" / f"{stem}.{label_ext}", "w", driver=label_driver, count=1, dtype="uint8",
                           **common) as dst:  # fmt: skip
            dst.write(label, 1)
        lines.append(f"images\\{stem}.{spec['ext']}  labels\\{stem}.{label_ext} ")
    (root / "map.txt").write_text("\r\n".join(lines))
    stats = {
        "MetaDataMode": "Classified_Tiles", "NumBands": spec["bands"], "TileSizeX": size, "TileSizeY": size,
        "Classes": [{"ClassValue": 1, "ClassName": "a"}, {"ClassValue": 2, "ClassName": "b"}],
    }  # fmt: skip
    (root / "esri_accumulated_stats.json").write_text(json.dumps(stats))
    return root


def plain(items: list, passes: int) -> float:  # type: ignore[type-arg]
    # GDAL's defaults, as a plain loop has them (the pipeline changes them for its own reads)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE"):
        start = time.perf_counter()
        for _ in range(passes):
            for item in items:
                with rasterio.open(item.image) as src:
                    src.read()
                with rasterio.open(item.label) as src:
                    src.read(1)
        return passes * len(items) / (time.perf_counter() - start)


def pipeline(dataset: SegmentationChips, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        for i in range(len(dataset)):
            dataset[i]
    return passes * len(dataset) / (time.perf_counter() - start)


def with_workers(dataset: SegmentationChips, workers: int, passes: int) -> float:
    data = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=workers, persistent_workers=True)
    next(iter(data))  # workers started before the clock
    start = time.perf_counter()
    for _ in range(passes):
        for _batch in data:
            pass
    return passes * len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chips", type=int, default=300)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{'chips':<22}{'plain':>9}{'pipeline':>10}{'ratio':>7}"
        + "".join(f"{'workers=' + str(w):>11}" for w in args.workers)
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            export = read_export(write_export(Path(tmp) / kind, kind, args.chips))
            class_map = ClassMap([c.value for c in export.classes])
            counts = PixelCounts(np.zeros(class_map.num_classes, np.int64))
            # the scan as training runs it, but keeping nothing, so every step below reads from disk
            head = scan(export, loader(class_map, counts), budget=0)
            uncached = Scan(export.items, [], None, head.dtype, head.num_bands, head.normalization, loader(class_map))
            dataset = SegmentationChips(uncached, range(len(export.items)), 224, True, True, class_map=class_map)
            plain(export.items, 1)  # warm the page cache and GDAL
            # alternate the two and keep each one's best round: this machine's timings wander
            rounds = [(plain(export.items, args.passes), pipeline(dataset, args.passes)) for _ in range(args.rounds)]
            p, q = max(r[0] for r in rounds), max(r[1] for r in rounds)
            scaled = [with_workers(dataset, w, args.passes) for w in args.workers]
            print(f"{kind:<22}{p:>9.0f}{q:>10.0f}{q / p:>7.2f}" + "".join(f"{s:>11.0f}" for s in scaled))


if __name__ == "__main__":
    main()
