"""An export folder written by "Export Training Data For Deep Learning": its metadata and chip list.

Torch-free: the API reads this at submit time to refuse data that cannot fit the requested model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geotrain.task.augmentation import TRANSFORMS_FILE

EMD_FILE = "esri_model_definition.emd"
STATS_FILE = "esri_accumulated_stats.json"
MAP_FILE = "map.txt"
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".mrf")
FORMATS = (
    "Classified_Tiles", "Labeled_Tiles", "MultiLabeled_Tiles", "Imagenet", "PASCAL_VOC_rectangles",
    "KITTI_rectangles", "RCNN_Masks", "Export_Tiles", "CycleGAN", "Panoptic_Segmentation",
)  # fmt: skip


class ExportError(ValueError):
    """The folder is not an export geotrain can read."""


@dataclass(frozen=True)
class ClassInfo:
    value: int
    name: str
    color: tuple[int, int, int] | None


@dataclass(frozen=True)
class ChipItem:
    image: Path
    # the class raster, box file (.xml/.txt) or label XML; None where the format has none
    label: Path | None = None
    # images2/: the "after" image of change detection, the target of image translation
    image2: Path | None = None
    # instance masks: labels/<class>/<stem> (RCNN_Masks), labels2/<class>/<stem> (Panoptic_Segmentation)
    masks: tuple[Path, ...] = ()
    # Imagenet: the class folder the chip sits in
    class_name: str | None = None


@dataclass(frozen=True)
class BandStats:
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]


@dataclass
class ExportInfo:
    root: Path
    metadata_format: str
    classes: list[ClassInfo]
    items: list[ChipItem]
    # map.txt lines whose image or label file is not on disk
    missing: list[str] = field(default_factory=list)
    tile_size: tuple[int, int] | None = None  # (height, width)
    num_bands: int | None = None
    band_stats: BandStats | None = None
    band_names: list[str] = field(default_factory=list)
    # the EMD's ExtractBands when it is a real list (exports mostly write a placeholder): bands to train on
    extract_bands: list[int] | None = None
    # CycleGAN: the chips of domain B (items holds domain A)
    items_b: list[ChipItem] = field(default_factory=list)
    image_space: str = "MAP_SPACE"
    min_cell_size: Any = None
    max_cell_size: Any = None
    # the folder's transforms.json (data_augmentation FILE), when it holds one
    transforms_file: Path | None = None
    # the EMD's SingleLabelFieldFound: the field the labels came from ("Caption" for captioning exports)
    label_field: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path.name} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path.name} does not hold a JSON object")
    return data


def _int_or_none(value: Any) -> int | None:
    # Older exports write placeholders such as "e.g. 256" where numbers belong: ignore them.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0:
        return int(value)
    return None


def _classes(emd: dict[str, Any], stats: dict[str, Any]) -> list[ClassInfo]:
    raw = emd.get("Classes") if isinstance(emd.get("Classes"), list) else None
    if not raw:
        raw = stats.get("Classes") if isinstance(stats.get("Classes"), list) else []
    classes: dict[int, ClassInfo] = {}
    for entry in raw or []:
        if not isinstance(entry, dict):
            continue
        value = entry.get("Value", entry.get("ClassValue"))
        name = entry.get("Name", entry.get("ClassName"))
        try:
            ivalue = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        color = entry.get("Color")
        rgb: tuple[int, int, int] | None = None
        if isinstance(color, list) and len(color) >= 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color[:3]):
            rgb = (color[0], color[1], color[2])
        classes[ivalue] = ClassInfo(ivalue, str(name) if name not in (None, "") else str(ivalue), rgb)
    return [classes[v] for v in sorted(classes)]


def _band_stats(emd: dict[str, Any], stats: dict[str, Any]) -> BandStats | None:
    tiles = emd.get("AllTilesStats")
    if isinstance(tiles, list) and tiles and all(isinstance(b, dict) for b in tiles):
        try:
            return BandStats(
                mean=[float(b["Mean"]) for b in tiles],
                std=[float(b["StdDev"]) for b in tiles],
                min=[float(b["Min"]) for b in tiles],
                max=[float(b["Max"]) for b in tiles],
            )
        except (KeyError, TypeError, ValueError):
            pass
    state = stats.get("BandStatsState")
    if isinstance(state, list) and state and all(isinstance(b, dict) for b in state):
        try:
            # Mean/StdDev may be written as 0; M1 is the running mean and M2 the summed squared deviations.
            return BandStats(
                mean=[float(b["M1"]) for b in state],
                std=[math.sqrt(float(b["M2"]) / float(b["Num"])) if float(b["Num"]) else 0.0 for b in state],
                min=[float(b["Min"]) for b in state],
                max=[float(b["Max"]) for b in state],
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
    return None


def _by_stem(folder: Path, recursive: bool = False) -> dict[str, list[Path]]:
    """Raster and label files of a folder keyed by stem."""
    index: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.rglob("*") if recursive else folder.glob("*")):
            if path.is_file() and path.suffix.lower() in LABEL_EXTENSIONS:
                index.setdefault(path.stem, []).append(path)
    return index


# what a chip's label or partner can be; leaves out sidecars (.aux.xml, .tfw, .ovr, MRF's .idx and .ppg)
LABEL_EXTENSIONS = (*IMAGE_EXTENSIONS, ".xml", ".txt")


class _Lookup:
    """Per-stem lookups into the folders an export may have besides images/."""

    def __init__(self, root: Path, fmt: str) -> None:
        self.root = root
        self.fmt = fmt
        self.labels = _by_stem(root / "labels")
        self.images2 = _by_stem(root / "images2")
        mask_folder = {"RCNN_Masks": "labels", "Panoptic_Segmentation": "labels2"}.get(fmt)
        self.masks = _by_stem(root / mask_folder, recursive=True) if mask_folder else {}
        if fmt == "RCNN_Masks":  # masks sit in per-class sub-folders; files directly in labels/ are not masks
            self.masks = {k: [p for p in v if p.parent != root / "labels"] for k, v in self.masks.items()}

    def complete(self, image: Path, label: Path | None, image2: Path | None) -> ChipItem:
        stem = image.stem
        if label is None and self.fmt not in ("RCNN_Masks", "Export_Tiles", "CycleGAN", "Imagenet"):
            found = self.labels.get(stem)
            label = found[0] if found else None
        if image2 is None and self.images2:
            found = self.images2.get(stem)
            image2 = found[0] if found else None
        class_name = None
        if self.fmt == "Imagenet" and image.parent != self.root / "images":
            class_name = image.parent.name
        return ChipItem(image, label, image2, tuple(self.masks.get(stem, ())), class_name)


def _map_items(root: Path, lookup: _Lookup) -> tuple[list[ChipItem], list[str]] | None:
    path = root / MAP_FILE
    if not path.is_file():
        return None
    items: list[ChipItem] = []
    missing: list[str] = []
    seen: set[str] = set()
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        tokens = line.replace("\\", "/").split()
        whole = line.replace("\\", "/").strip()
        if lookup.fmt == "Imagenet" and len(tokens) > 1 and (root / whole).is_file():
            tokens = [whole]  # a class folder named with spaces ("car 1"): the line is one path
        if not tokens or tokens[0] in seen:
            continue
        seen.add(tokens[0])
        image = _inside(root, tokens[0])
        label = image2 = None
        absent = image is None or not image.is_file()
        for token in tokens[1:]:
            other = _inside(root, token)
            top = token.split("/", 1)[0].lower()
            if other is None or not other.exists():
                # instance masks are looked up by stem, whatever map.txt says of them
                if top != "labels2" and lookup.fmt != "RCNN_Masks":
                    absent = True
                continue
            if top == "images2":
                image2 = other
            elif top == "labels" and label is None and other.is_file() and lookup.fmt != "RCNN_Masks":
                label = other
        if absent or image is None:
            missing.append(line.strip())
            continue
        items.append(lookup.complete(image, label, image2))
    return items, missing


def _inside(root: Path, relative: str) -> Path | None:
    """A map.txt entry as a path, or None if it would leave the export folder."""
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def _scan_items(root: Path, lookup: _Lookup) -> list[ChipItem]:
    images = root / "images"
    recursive = lookup.fmt == "Imagenet"
    items = []
    for image in sorted(images.rglob("*") if recursive else images.glob("*")) if images.is_dir() else []:
        if image.suffix.lower() in IMAGE_EXTENSIONS and image.is_file():
            items.append(lookup.complete(image, None, None))
    return items


def read_export(folder: Path) -> ExportInfo:
    """Read an export folder's metadata and its list of chips (chips themselves are not opened)."""
    if not folder.is_dir():
        raise ExportError("the folder does not exist")
    own_metadata = (folder / STATS_FILE).is_file() or (folder / EMD_FILE).is_file()
    if not own_metadata and (folder / "A" / STATS_FILE).is_file() and (folder / "B" / STATS_FILE).is_file():
        return _read_cyclegan(folder)
    emd = _read_json(folder / EMD_FILE) if (folder / EMD_FILE).is_file() else {}
    stats = _read_json(folder / STATS_FILE) if (folder / STATS_FILE).is_file() else {}
    fmt = stats.get("MetaDataMode") or emd.get("MetaDataMode")
    if not fmt:
        raise ExportError(
            f"it holds no {STATS_FILE} or {EMD_FILE} naming its metadata format; point in_folder at the folder "
            "written by Export Training Data For Deep Learning"
        )
    if fmt not in FORMATS:
        raise ExportError(f"its metadata format '{fmt}' is unknown (known: {', '.join(FORMATS)})")
    lookup = _Lookup(folder, str(fmt))
    mapped = _map_items(folder, lookup)
    items, missing = mapped if mapped is not None else (_scan_items(folder, lookup), [])
    items.sort(key=lambda item: item.image)  # map.txt order is arbitrary; the split must not depend on it
    height = _int_or_none(emd.get("ImageHeight")) or _int_or_none(stats.get("TileSizeY"))
    width = _int_or_none(emd.get("ImageWidth")) or _int_or_none(stats.get("TileSizeX"))
    raw_props = emd.get("InputRastersProps")
    props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
    band_names = [str(b) for b in props.get("BandNames", [])] if isinstance(props.get("BandNames"), list) else []
    extract = emd.get("ExtractBands")
    extract_bands = None
    if isinstance(extract, list) and extract and all(isinstance(b, int) and b >= 0 for b in extract):
        extract_bands = [int(b) for b in extract]
    stats_of_bands = _band_stats(emd, stats)
    if extract_bands and stats_of_bands and max(extract_bands) < len(stats_of_bands.mean):
        stats_of_bands = BandStats(
            *([getattr(stats_of_bands, k)[b] for b in extract_bands] for k in ("mean", "std", "min", "max"))
        )
    if extract_bands and band_names and max(extract_bands) < len(band_names):
        band_names = [band_names[b] for b in extract_bands]
    info = ExportInfo(
        root=folder,
        metadata_format=str(fmt),
        classes=_classes(emd, stats),
        items=items,
        missing=missing,
        tile_size=(height, width) if height and width else None,
        num_bands=len(extract_bands) if extract_bands else _int_or_none(stats.get("NumBands")),
        band_stats=stats_of_bands,
        extract_bands=extract_bands,
        band_names=band_names,
        image_space=str(emd.get("ImageSpaceUsed") or "MAP_SPACE"),
        min_cell_size=emd.get("MinCellSize"),
        max_cell_size=emd.get("MaxCellSize"),
        transforms_file=folder / TRANSFORMS_FILE if (folder / TRANSFORMS_FILE).is_file() else None,
        label_field=str(emd["SingleLabelFieldFound"]) if emd.get("SingleLabelFieldFound") else None,
    )
    if (info.tile_size is None or info.num_bands is None) and items:
        _fill_from_first_chip(info)
    return info


def _read_cyclegan(folder: Path) -> ExportInfo:
    """CycleGAN: two full exports, A/ and B/, one per domain."""
    a, b = read_export(folder / "A"), read_export(folder / "B")
    a.root, a.metadata_format = folder, "CycleGAN"
    a.items_b, a.missing = b.items, a.missing + b.missing
    if (folder / TRANSFORMS_FILE).is_file():
        a.transforms_file = folder / TRANSFORMS_FILE
    return a


# what a data kind needs of an export, as a refusal names it
KIND_NEEDS = {
    "ImageCaptioning": "MultiLabeled_Tiles chips labelled with captions (exported with the caption field: the "
    'export\'s EMD says SingleLabelFieldFound "Caption")',
    "MultiLabeled_Tiles": "MultiLabeled_Tiles chips labelled with classes (a caption export trains IMAGECAPTIONER)",
    "Labeled_Tiles": "Labeled_Tiles chips",
    "Imagenet": "Imagenet chips",
    "Pix2Pix": "Export_Tiles chips whose translation is in images2/ (images/ the input, images2/ the target)",
    "ChangeDetection": "Classified_Tiles chips whose later image of the same place is in images2/ (the export "
    "of a change detection: images/ before, images2/ after, labels/ the change classes)",
}


def data_kind(export: ExportInfo) -> str:
    """What the export holds, from its format and folders (never from the model asked for)."""
    has_images2 = any(item.image2 is not None for item in export.items)
    match export.metadata_format:
        case "Classified_Tiles" if has_images2:
            return "ChangeDetection"
        case "Export_Tiles" if has_images2:
            return "Pix2Pix"
        case "Export_Tiles":
            return "SuperResolution"
        case "MultiLabeled_Tiles" if (export.label_field or "").lower() == "caption":
            return "ImageCaptioning"
        case fmt:
            return fmt


def _fill_from_first_chip(info: ExportInfo) -> None:
    import rasterio  # imported here: only old exports without sizes in their metadata need it at submit

    try:
        with rasterio.open(info.items[0].image) as src:
            info.tile_size = info.tile_size or (src.height, src.width)
            info.num_bands = info.num_bands or src.count
    except rasterio.RasterioIOError:
        pass  # reported with the file name when the job reads its chips


def merge_exports(exports: list[ExportInfo]) -> ExportInfo:
    """Several input folders train as one data set, as ArcGIS allows when their formats agree."""
    first = exports[0]
    if len(exports) == 1:
        return first
    for other in exports[1:]:
        if other.metadata_format != first.metadata_format:
            raise ExportError(
                f"all folders must share one metadata format; found {first.metadata_format} and {other.metadata_format}"
            )
        if first.num_bands and other.num_bands and other.num_bands != first.num_bands:
            raise ExportError(
                f"all folders must have the same band count; found {first.num_bands} and {other.num_bands}"
            )
    classes: dict[int, ClassInfo] = {}
    for export in exports:
        for cls in export.classes:
            classes.setdefault(cls.value, cls)
    sizes = [e.tile_size for e in exports if e.tile_size]
    return ExportInfo(
        root=first.root,
        metadata_format=first.metadata_format,
        classes=[classes[v] for v in sorted(classes)],
        items=[item for e in exports for item in e.items],
        missing=[m for e in exports for m in e.missing],
        tile_size=min(sizes) if sizes else None,
        num_bands=first.num_bands,
        band_stats=None,  # per-folder statistics do not combine; the trainer computes them from the chips
        band_names=first.band_names,
        extract_bands=first.extract_bands,
        image_space=first.image_space,
        min_cell_size=first.min_cell_size,
        max_cell_size=first.max_cell_size,
        transforms_file=next((e.transforms_file for e in exports if e.transforms_file), None),
        label_field=first.label_field,
    )
