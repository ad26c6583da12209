"""Small, realistic Classified_Tiles exports written on the fly, with the quirks real exports have."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin


@dataclass
class ExportSpec:
    chips: int = 8
    size: int = 32
    bands: int = 4
    dtype: str = "uint16"
    # class values that appear in the labels, plus one declared but absent
    values: tuple[int, ...] = (3, 7)
    absent: int | None = 9
    digits: int = 12
    compress: str | None = "lzw"
    placeholder_emd: bool = True
    seed: int = 0


def write_classified_tiles(root: Path, spec: ExportSpec | None = None) -> Path:
    spec = spec or ExportSpec()
    rng = np.random.default_rng(spec.seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    high = 4000 if spec.dtype == "uint16" else 200
    lines = []
    for i in range(spec.chips):
        stem = f"{i:0{spec.digits}d}"
        label = np.zeros((spec.size, spec.size), dtype=np.uint8)
        image = rng.integers(0, high // 4, size=(spec.bands, spec.size, spec.size)).astype(spec.dtype)
        for k, value in enumerate(spec.values):
            # a rectangle per class whose pixels are bright in one band: learnable in a few steps
            r0, c0 = rng.integers(0, spec.size // 2, size=2)
            h, w = rng.integers(spec.size // 4, spec.size // 2, size=2)
            label[r0 : r0 + h, c0 : c0 + w] = value
            image[k % spec.bands, r0 : r0 + h, c0 : c0 + w] = high
        profile = {
            "driver": "GTiff", "width": spec.size, "height": spec.size, "crs": "EPSG:3857",
            "transform": from_origin(1000.0 + i * spec.size, 2000.0, 1.0, 1.0),
        }  # fmt: skip
        if spec.compress:
            profile["compress"] = spec.compress
        with rasterio.open(root / "images" / f"{stem}.tif", "w", count=spec.bands, dtype=spec.dtype, **profile) as dst:
            dst.write(image)
        with rasterio.open(root / "labels" / f"{stem}.tif", "w", count=1, dtype="uint8", **profile) as dst:
            dst.write(label, 1)
        (root / "images" / f"{stem}.tfw").write_text("1\n0\n0\n-1\n1000\n2000\n")
        lines.append(f"images\\{stem}.tif  labels\\{stem}.tif ")
    order = list(rng.permutation(len(lines)))
    (root / "map.txt").write_bytes(("\r\n".join(lines[i] for i in order) + "\r\n").encode())
    classes = [*spec.values, *([spec.absent] if spec.absent is not None else [])]
    names = {3: "Water", 7: "Building", 9: "Road"}
    emd = {
        "Framework": "e.g. CNTK", "ModelConfiguration": "some description",
        "ModelType": "e.g. ObjectDetection or ImageClassification", "ModelFile": "e.g. .\\trained.model",
        "ImageHeight": "e.g. 256" if spec.placeholder_emd else spec.size,
        "ImageWidth": "e.g. 256" if spec.placeholder_emd else spec.size,
        "ExtractBands": "e.g. [0, 1, 2]",
        "Classes": [
            {"Value": v, "Name": names.get(v, f"Class {v}"), "Color": [-1, -1, -1] if v == 7 else [0, 112, 255]}
            for v in classes
        ],
    }  # fmt: skip
    (root / "esri_model_definition.emd").write_text(json.dumps(emd, indent=2).replace("\n", "\r\n"))
    stats = {
        "Version": 1, "NumBands": spec.bands, "TileSizeX": spec.size, "TileSizeY": spec.size,
        "NumClasses": len(classes), "NumTiles": spec.chips, "OutputFeatures": False, "MetaDataMode": "Classified_Tiles",
        "Classes": [{"ClassValue": v, "ClassName": names.get(v, f"Class {v}")} for v in classes],
    }  # fmt: skip
    (root / "esri_accumulated_stats.json").write_text(json.dumps(stats, indent=2))
    (root / "stats.txt").write_text(f"images = {spec.chips} *{spec.bands}*{spec.size}*{spec.size}\n")
    return root


SCENE_ORIGIN = (500_000.0, 4_200_000.0)  # UTM 33N metres, 0.5 m pixels


def write_scene(path: Path, pixels: np.ndarray) -> Any:
    """A georeferenced GeoTIFF (EPSG:32633, 0.5 m pixels from ``SCENE_ORIGIN``) of ``pixels``; its transform."""
    import rasterio
    from rasterio.transform import from_origin

    transform = from_origin(*SCENE_ORIGIN, 0.5, 0.5)
    bands, rows, cols = pixels.shape
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=bands, dtype=str(pixels.dtype),
                       crs="EPSG:32633", transform=transform) as dst:  # fmt: skip
        dst.write(pixels)
    return transform


def write_change_tiles(root: Path, spec: ExportSpec | None = None) -> Path:
    """A change detection export: Classified_Tiles whose images/ are the earlier date and images2/ the later
    one; what appeared in between (a bright rectangle a class) is labelled with that class's value."""

    spec = spec or ExportSpec()
    write_classified_tiles(root, spec)
    rng = np.random.default_rng(spec.seed + 100)
    (root / "images2").mkdir(exist_ok=True)
    for path in sorted((root / "images").glob("*.tif")):
        with rasterio.open(path) as src:
            after, profile = src.read(), src.profile
        with rasterio.open(root / "labels" / path.name) as src:
            changed = src.read(1) > 0
        before = after.copy()
        # the earlier date had no rectangles there: the same kind of noise as around them
        before[:, changed] = rng.integers(0, before.max() // 4 + 1, size=(after.shape[0], int(changed.sum())))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(before)
        with rasterio.open(root / "images2" / path.name, "w", **profile) as dst:
            dst.write(after)
    return root


def write_edge_tiles(root: Path, spec: ExportSpec | None = None) -> Path:
    """An edge export: Classified_Tiles whose labels hold a class value on the outlines of the bright
    rectangles the images show (one pixel wide) and 0 elsewhere."""

    spec = spec or ExportSpec()
    write_classified_tiles(root, spec)
    for path in sorted((root / "labels").glob("*.tif")):
        with rasterio.open(path) as src:
            label, profile = src.read(1), src.profile
        padded = np.pad(label, 1, mode="edge")
        inner = padded[1:-1, 1:-1]
        differs = (inner != padded[:-2, 1:-1]) | (inner != padded[2:, 1:-1])
        differs |= (inner != padded[1:-1, :-2]) | (inner != padded[1:-1, 2:])
        edges = np.where(differs & (label > 0), label, 0).astype(label.dtype)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(edges, 1)
    return root


def write_translation_tiles(root: Path, spec: ExportSpec | None = None, second: bool = True) -> Path:
    """An Export_Tiles export of the bright-rectangle chips. ``second``: with images2/, a one-band rendering
    of where the rectangles are (the translation a PIX2PIX model learns); else images/ only (what a
    SUPERRESOLUTION model learns from)."""
    spec = spec or ExportSpec()
    write_classified_tiles(root, spec)
    lines = []
    for label in sorted((root / "labels").glob("*.tif")):
        if second:
            (root / "images2").mkdir(exist_ok=True)
            with rasterio.open(label) as src:
                profile, values = src.profile, src.read(1)
            with rasterio.open(root / "images2" / label.name, "w", **profile) as dst:
                dst.write((values > 0).astype("uint8") * 200 + 20, 1)
        label.unlink()
        lines.append(f"images\\{label.name} images2\\{label.name}" if second else f"images\\{label.name}")
    (root / "labels").rmdir()
    (root / "map.txt").write_text("\n".join(lines) + "\n")
    stats = json.loads((root / "esri_accumulated_stats.json").read_text())
    stats.update(MetaDataMode="Export_Tiles", NumClasses=0, Classes=[])
    (root / "esri_accumulated_stats.json").write_text(json.dumps(stats, indent=2))
    emd = json.loads((root / "esri_model_definition.emd").read_text())
    emd.pop("Classes")
    (root / "esri_model_definition.emd").write_text(json.dumps(emd, indent=2))
    return root


def write_road_tiles(root: Path, spec: ExportSpec | None = None) -> Path:
    """A road export: Classified_Tiles whose labels hold the class value on straight roads three pixels wide
    at any angle (two a chip, crossing or not), which the images show bright."""
    spec = spec or ExportSpec(values=(1,), absent=None)
    write_classified_tiles(root, spec)
    rng = np.random.default_rng(spec.seed + 200)
    rows, cols = np.mgrid[0 : spec.size, 0 : spec.size]
    high = 4000 if spec.dtype == "uint16" else 200
    for path in sorted((root / "labels").glob("*.tif")):
        road = np.zeros((spec.size, spec.size), dtype=bool)
        for _ in range(2):
            angle = rng.uniform(0, np.pi)
            r0, c0 = rng.uniform(spec.size * 0.25, spec.size * 0.75, size=2)
            road |= np.abs((rows - r0) * np.cos(angle) - (cols - c0) * np.sin(angle)) < 1.5
        with rasterio.open(path) as src:
            profile = src.profile
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.where(road, spec.values[0], 0).astype("uint8"), 1)
        image_path = root / "images" / path.name
        with rasterio.open(image_path) as src:
            image, image_profile = src.read(), src.profile
        image = rng.integers(0, high // 4, size=image.shape).astype(image.dtype)
        image[:, road] = high
        with rasterio.open(image_path, "w", **image_profile) as dst:
            dst.write(image)
    return root
