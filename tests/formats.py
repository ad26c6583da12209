"""Small exports in every metadata format ArcGIS writes, with the quirks of real ones: placeholder EMDs,
ClassValue/ClassName stats, Windows paths in map.txt with one or two spaces, CRLF, unsorted lines,
world-file and .aux.xml sidecars, 9- and 12-digit chip names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CLASSES = [(1, "Palm"), (2, "Pine"), (5, "Oak")]  # non-contiguous values; Oak is declared but never used


def raster(path: Path, array: np.ndarray, driver: str = "GTiff", **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 2:
        array = array[None]
    profile: dict[str, object] = {"driver": driver, "width": array.shape[2], "height": array.shape[1],
                                  "count": array.shape[0], "dtype": array.dtype.name}  # fmt: skip
    if driver == "GTiff":
        profile.update(crs="EPSG:3857", transform=from_origin(500.0, 900.0, 0.5, 0.5), **options)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def metadata(root: Path, fmt: str, bands: int, size: int, chips: int, classes: list[tuple[int, str]] = CLASSES,
             emd_extra: dict[str, object] | None = None) -> None:  # fmt: skip
    emd = {
        "Framework": "e.g. CNTK", "ModelConfiguration": "some description", "ImageHeight": "e.g. 256",
        "ImageWidth": "e.g. 256", "ExtractBands": "e.g. [0, 1, 2]",
        "Classes": [{"Value": v, "Name": n, "Color": [-1, -1, -1]} for v, n in classes],
        **(emd_extra or {}),
    }  # fmt: skip
    if not classes:
        del emd["Classes"]
    (root / "esri_model_definition.emd").write_text(json.dumps(emd, indent=2).replace("\n", "\r\n"))
    stats = {"Version": 1, "NumBands": bands, "TileSizeX": size, "TileSizeY": size, "NumClasses": len(classes),
             "NumTiles": chips, "MetaDataMode": fmt,
             "Classes": [{"ClassValue": v, "ClassName": n} for v, n in classes]}  # fmt: skip
    (root / "esri_accumulated_stats.json").write_text(json.dumps(stats, indent=2))


def map_txt(root: Path, lines: list[str], crlf: bool = True) -> None:
    order = np.random.default_rng(3).permutation(len(lines))
    text = ("\r\n" if crlf else "\n").join(lines[i] for i in order)
    (root / "map.txt").write_bytes(text.encode())


def _image(rng: np.random.Generator, bands: int, size: int, dtype: str = "uint8") -> np.ndarray:
    high = 250 if dtype == "uint8" else 4000
    return rng.integers(0, high, size=(bands, size, size)).astype(dtype)


def pascal_voc(root: Path, chips: int = 4, size: int = 48) -> Path:
    """RGB JPEG chips with .jgw and .aux.xml sidecars; <name> holds the class value."""
    rng = np.random.default_rng(1)
    lines = []
    for i in range(chips):
        stem = f"{i:012d}"
        raster(root / "images" / f"{stem}.jpg", _image(rng, 3, size), driver="JPEG")
        (root / "images" / f"{stem}.jgw").write_text("0.5\n0\n0\n-0.5\n500\n900\n")
        (root / "images" / f"{stem}.jpg.aux.xml").write_text("<PAMDataset/>")
        objects = "".join(
            f"<object><name>{value}</name><bndbox><xmin>{x:.2f}</xmin><ymin>{y:.2f}</ymin>"
            f"<xmax>{x + 10.5:.2f}</xmax><ymax>{y + 8:.2f}</ymax></bndbox></object>"
            for value, x, y in ((1, 2.0, 3.0), (2, 30.0, 40.0 + i))  # the second box runs off the chip
        )
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><source><annotation>ArcGIS Pro 2.1</annotation></source>"
            f"<size><width>{size}</width><height>{size}</height><depth>3</depth></size>{objects}</annotation>"
        )
        lines.append(f"images\\{stem}.jpg  labels\\{stem}.xml ")
    metadata(root, "PASCAL_VOC_rectangles", 3, size, chips)
    map_txt(root, lines, crlf=False)
    return root


def kitti(root: Path, chips: int = 4, size: int = 32, bands: int = 6) -> Path:
    """Multispectral uint16 LZW chips, 9-digit names, KITTI lines with leading spaces and runs of spaces."""
    rng = np.random.default_rng(2)
    lines = []
    for i in range(chips):
        stem = f"{i:09d}"
        raster(root / "images" / f"{stem}.tif", _image(rng, bands, size, "uint16"), compress="lzw")
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text(
            "  2 0.00 0 0   4.50   7.25   28.00   30.10 0 0 0 0 0 0 0\n1 0 0 0 0 0 10 10 0 0 0 0 0 0 0\n"
        )
        lines.append(f"images\\{stem}.tif labels\\{stem}.txt")
    metadata(root, "KITTI_rectangles", bands, size, chips + 2)
    lines += ["images\\999999998.tif labels\\999999998.txt", "images\\999999999.tif labels\\999999999.txt"]
    map_txt(root, lines)
    return root


def labeled_tiles(root: Path, multi: bool = False, chips: int = 4) -> Path:
    """Variable-size chips (CropTileMode Variable_Size); the first <object><name> is the class."""
    rng = np.random.default_rng(3)
    lines = []
    names = ["1", "2", "Pine", "1"]
    for i in range(chips):
        stem = f"{i:012d}"
        size = 24 + 4 * i
        raster(root / "images" / f"{stem}.tif", _image(rng, 3, size))
        name = "1, 2" if multi and i % 2 else names[i % len(names)]
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.xml").write_text(
            f"<annotation><object><name>{name}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>{size}</xmax>"
            f"<ymax>{size}</ymax></bndbox></object><object><name>5</name></object></annotation>"
        )
        lines.append(f"images\\{stem}.tif  labels\\{stem}.xml ")
    fmt = "MultiLabeled_Tiles" if multi else "Labeled_Tiles"
    metadata(root, fmt, 3, 32, chips, emd_extra={"MetaDataMode": fmt, "CropTileMode": "Variable_Size"})
    map_txt(root, lines)
    return root


CAPTIONS = (
    ("a red field, beside a narrow road", "red crops by a road"),
    ("dense green trees around a pond",),
)


def captions(root: Path, chips: int = 8, size: int = 32, bands: int = 3, dtype: str = "uint8") -> Path:
    """MultiLabeled_Tiles exported with the caption field (EMD SingleLabelFieldFound "Caption", no classes):
    each label's <object><name> is a caption, commas and all; some chips have two. The caption follows the
    brighter band, so a few steps can learn it."""
    rng = np.random.default_rng(6)
    lines = []
    for i in range(chips):
        stem = f"{i:012d}"
        image = _image(rng, bands, size, dtype) // 3
        image[i % 2] += 160 if dtype == "uint8" else 2600
        raster(root / "images" / f"{stem}.tif", image)
        objects = "".join(
            f"<object><name>{text}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>{size}</xmax><ymax>{size}</ymax>"
            "</bndbox></object>"
            for text in CAPTIONS[i % 2][: 1 + (i % 3 == 0)]
        )
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.xml").write_text(f"<annotation>{objects}</annotation>")
        lines.append(f"images\\{stem}.tif labels\\{stem}.xml")
    metadata(root, "MultiLabeled_Tiles", bands, size, chips, classes=[],
             emd_extra={"MetaDataMode": "MultiLabeled_Tiles", "SingleLabelFieldFound": "Caption"})  # fmt: skip
    map_txt(root, lines)
    return root


def imagenet(root: Path) -> Path:
    """images/<class>/<chip>; map.txt lines hold only the image."""
    rng = np.random.default_rng(4)
    lines = []
    for i, cls in enumerate(["Palm", "Pine", "Palm", "Pine"]):
        stem = f"{i:012d}"
        raster(root / "images" / cls / f"{stem}.tif", _image(rng, 3, 32))
        lines.append(f"images\\{cls}\\{stem}.tif")
    metadata(root, "Imagenet", 3, 32, 4)
    map_txt(root, lines)
    return root


IDENTITIES = [(1, "car 1"), (2, "car 2"), (3, "truck 7")]


def identities(root: Path, crops: int = 4, size: int = 32, bands: int = 3) -> Path:
    """An Imagenet export of object crops for DEEPSORT: images/<identity value>/<chip>, a few crops of each
    tracked object; each has its own colour and place of a bright patch, so a few steps tell them apart."""
    rng = np.random.default_rng(7)
    lines = []
    for k, (value, _) in enumerate(IDENTITIES):
        name = str(value)
        for j in range(crops):
            stem = f"{k * crops + j:012d}"
            image = _image(rng, bands, size) // 4
            image[k % bands, 4 + 6 * k : 14 + 6 * k, 2 : size - 2] += 180
            raster(root / "images" / name / f"{stem}.tif", image)
            lines.append(f"images\\{name}\\{stem}.tif")
    metadata(root, "Imagenet", bands, size, len(lines), classes=IDENTITIES)
    map_txt(root, lines)
    return root


def rcnn_masks(root: Path, chips: int = 3, size: int = 32) -> Path:
    """labels/<class name>/<stem>.tif with instance ids; a second band holds an overlapping instance."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(chips):
        stem = f"{i:012d}"
        raster(root / "images" / f"{stem}.tif", _image(rng, 3, size))
        palm = np.zeros((2, size, size), np.uint8)
        palm[0, 2:10, 2:10] = 1
        palm[0, 20:30, 5:12] = 2
        palm[1, 6:14, 6:14] = 1  # overlaps instance 1 of band 0
        raster(root / "labels" / "Palm" / f"{stem}.tif", palm)
        if i == 0:
            pine = np.zeros((1, size, size), np.uint8)
            pine[0, 15:25, 15:25] = 1
            raster(root / "labels" / "Pine" / f"{stem}.tif", pine)
        lines.append(f"images\\{stem}.tif labels\\Palm\\{stem}.tif")
    metadata(root, "RCNN_Masks", 3, size, chips)
    map_txt(root, lines)
    return root


def export_tiles(root: Path, second: bool, chips: int = 3, size: int = 32) -> Path:
    """Export_Tiles: 3-band images; with ``second`` a 1-band images2/ target (Pix2Pix style)."""
    rng = np.random.default_rng(6)
    lines = []
    for i in range(chips):
        stem = f"{i:012d}"
        raster(root / "images" / f"{stem}.tif", _image(rng, 3, size))
        if second:
            raster(root / "images2" / f"{stem}.tif", _image(rng, 1, size))
        lines.append(f"images\\{stem}.tif images2\\{stem}.tif" if second else f"images\\{stem}.tif")
    metadata(root, "Export_Tiles", 3, size, chips, classes=[])
    map_txt(root, lines)
    return root


def change_detection(root: Path, chips: int = 3, size: int = 32) -> Path:
    """Classified_Tiles with images2/: before, after and the change classes."""
    rng = np.random.default_rng(7)
    lines = []
    for i in range(chips):
        stem = f"{i:012d}"
        raster(root / "images" / f"{stem}.tif", _image(rng, 4, size, "uint16"))
        raster(root / "images2" / f"{stem}.tif", _image(rng, 4, size, "uint16"))
        label = np.zeros((size, size), np.uint8)
        label[4:12, 4:12] = 2
        raster(root / "labels" / f"{stem}.tif", label)
        lines.append(f"images\\{stem}.tif labels\\{stem}.tif")
    metadata(root, "Classified_Tiles", 4, size, chips)
    map_txt(root, lines)
    return root


def cyclegan(root: Path) -> Path:
    for domain, chips in (("A", 3), ("B", 2)):
        sub = root / domain
        rng = np.random.default_rng(8)
        lines = []
        for i in range(chips):
            stem = f"{i:012d}"
            raster(sub / "images" / f"{stem}.tif", _image(rng, 3, 32))
            lines.append(f"images\\{stem}.tif")
        metadata(sub, "CycleGAN", 3, 32, chips, classes=[])
        map_txt(sub, lines)
    return root


def panoptic(root: Path, chips: int = 2, size: int = 32) -> Path:
    """A semantic label (stuff class 5 in a strip, Palm 1 under its instances) and Palm's instance masks in
    labels2/Palm/; the image is bright under each (band 1 for the strip, band 0 for palms), so it can be
    learnt. Odd chips hold a second palm."""
    rng = np.random.default_rng(9)
    lines = []
    for i in range(chips):
        stem = f"{i:012d}"
        image = _image(rng, 3, size) // 4
        semantic = np.zeros((size, size), np.uint8)
        semantic[:, :8] = 5  # stuff class
        image[1, :, :8] += 150
        inst = np.zeros((size, size), np.uint8)
        shift = i % 3
        places = [(10 + shift, 10 + shift)] + ([(22, 20)] if i % 2 else [])
        for n, (r, c) in enumerate(places, start=1):
            semantic[r : r + 8, c : c + 8] = 1
            inst[r : r + 8, c : c + 8] = n
            image[0, r : r + 8, c : c + 8] += 180
        raster(root / "images" / f"{stem}.tif", image)
        raster(root / "labels" / f"{stem}.tif", semantic)
        raster(root / "labels2" / "Palm" / f"{stem}.tif", inst)
        lines.append(f"images\\{stem}.tif labels\\{stem}.tif")
    metadata(root, "Panoptic_Segmentation", 3, size, chips,
             emd_extra={"Panoptic_Segmentation_Instance_Classes": [{"Value": 1, "Name": "Palm"}]})  # fmt: skip
    map_txt(root, lines)
    return root


def tracks(root: Path, frames: int = 8, size: int = 48, bands: int = 3, dtype: str = "uint8") -> Path:
    """RCNN_Masks of video frames (9-digit names): two cars (ids 1 and 2 in labels/Car/, one driving right, one
    down) and a boat (id 1 in labels/Boat/, drifting), each the same id in every frame; each is bright in a band
    of its own over a dim, noisy ground, so the tracks can be learnt."""
    rng = np.random.default_rng(12)
    lines = []
    for i in range(frames):
        stem = f"{i:09d}"
        image = _image(rng, bands, size, dtype) // 5
        bright = 170 if dtype == "uint8" else 3000
        cars = np.zeros((size, size), np.uint8)
        boat = np.zeros((size, size), np.uint8)
        for value, (r, c), (h, w), band, mask in (
            (1, (6, 4 + 3 * i), (8, 11), 0, cars),
            (2, (4 + 3 * i, 30), (12, 7), 1 % bands, cars),
            (1, (34, 24 + i), (9, 9), 2 % bands, boat),
        ):
            mask[r : r + h, c : c + w] = value
            image[band, r : r + h, c : c + w] += bright
        raster(root / "images" / f"{stem}.tif", image)
        raster(root / "labels" / "Car" / f"{stem}.tif", cars)
        raster(root / "labels" / "Boat" / f"{stem}.tif", boat)
        lines.append(f"images\\{stem}.tif labels\\Car\\{stem}.tif")
    metadata(root, "RCNN_Masks", bands, size, frames, classes=[(1, "Car"), (2, "Boat")])
    map_txt(root, lines)
    return root
