"""One reader per exported format: ``load(item)`` gives the arrays its model family trains on.

Targets are numpy here (cached by the scan); the data sets turn them into tensors. Every reader raises
ChipReadError naming the file it could not use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from geotrain.training.data.chips import ChipReadError, read_chip, read_label, select_bands
from geotrain.training.data.export import ChipItem, ExportInfo, data_kind
from geotrain.training.data.labels import (
    Box,
    ClassLookup,
    read_captions,
    read_kitti,
    read_object_names,
    read_pascal_voc,
)

Target = Any
Loader = Callable[[ChipItem], tuple[np.ndarray, Target]]


@dataclass
class Reader:
    kind: str
    load: Loader
    # class index -> features (pixels, boxes, instances, chips) in one target; for `inspect`
    count: Callable[[Target], Counter[int]]


def _need_label(item: ChipItem) -> Any:
    if item.label is None:
        raise ChipReadError(item.image, "it has no label file")
    return item.label


def boxes_target(
    boxes: list[Box], lookup: ClassLookup, shape: tuple[int, int], source: ChipItem
) -> dict[str, np.ndarray]:
    rows, cols = shape
    out, labels = [], []
    for box in boxes:
        index = lookup.index(box.name)
        if index is None:
            raise ChipReadError(_need_label(source), f"class '{box.name}' is not a class of the export")
        x0, x1 = sorted((min(max(box.xmin, 0.0), cols), min(max(box.xmax, 0.0), cols)))
        y0, y1 = sorted((min(max(box.ymin, 0.0), rows), min(max(box.ymax, 0.0), rows)))
        if x1 - x0 >= 1 and y1 - y0 >= 1:  # boxes clipped to nothing carry no signal
            out.append((x0, y0, x1, y1))
            labels.append(index)
    return {
        "boxes": np.array(out, dtype=np.float32).reshape(-1, 4),
        "labels": np.array(labels, dtype=np.int64),
    }


def _box_reader(lookup: ClassLookup, parse: Callable[[Any], list[Box]]) -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        image = read_chip(item.image)
        return image, boxes_target(parse(_need_label(item)), lookup, image.shape[1:], item)

    return load


def _labeled_reader(lookup: ClassLookup, multi: bool) -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, Any]:
        image = read_chip(item.image)
        names = [item.class_name] if item.class_name is not None else read_object_names(_need_label(item))
        indices = []
        for name in names:
            index = lookup.index(name)
            if index is None:
                raise ChipReadError(item.label or item.image, f"class '{name}' is not a class of the export")
            indices.append(index - 1)  # classification has no background class
        if not indices:
            raise ChipReadError(item.label or item.image, "it names no class")
        if multi:
            hot = np.zeros(lookup.num_classes - 1, dtype=np.float32)
            hot[indices] = 1.0
            return image, hot
        return image, np.int64(indices[0])

    return load


def _caption_reader() -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, list[str]]:
        # a tile exported without a feature (ALL_TILES) has no caption: read, and left out of training later
        return read_chip(item.image), read_captions(_need_label(item))

    return load


def boxes_of_masks(masks: np.ndarray) -> np.ndarray:
    """The box around each mask (instances x rows x cols), in pixel edges; zeros for an empty mask."""
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def instance_masks(paths: tuple[Any, ...], lookup: ClassLookup, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-class mask rasters (folder = class) -> one binary mask, box and label per instance.

    Instance ids are 1..N in each band; further bands hold instances that overlap (arcgis.learn reads
    them the same way). ``instances`` keeps each one's id: an export of video frames gives an object the same id
    in every frame (SIAMMASK's tracks)."""
    masks, labels, ids = [], [], []
    for path in paths:
        index = lookup.index(path.parent.name)
        if index is None:
            raise ChipReadError(path, f"its class folder '{path.parent.name}' is not a class of the export")
        stack = read_chip(path)
        if stack.shape[1:] != shape:
            raise ChipReadError(path, f"mask size {stack.shape[1:]} differs from chip size {shape}")
        for band in stack:
            for instance in np.unique(band):
                if instance == 0:
                    continue
                masks.append((band == instance).astype(np.uint8))
                labels.append(index)
                ids.append(int(instance))
    stacked = np.array(masks, dtype=np.uint8).reshape(-1, *shape)
    return {
        "masks": stacked,
        "boxes": boxes_of_masks(stacked),
        "labels": np.array(labels, dtype=np.int64),
        "instances": np.array(ids, dtype=np.int64),
    }


def _rcnn_reader(lookup: ClassLookup) -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        image = read_chip(item.image)
        if not item.masks:
            raise ChipReadError(item.image, "it has no instance mask in labels/<class>/")
        return image, instance_masks(item.masks, lookup, image.shape[1:])

    return load


def _panoptic_reader(lookup: ClassLookup, encode: Callable[[np.ndarray], np.ndarray]) -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        image = read_chip(item.image)
        semantic = read_label(_need_label(item))
        if semantic.shape != image.shape[1:]:
            raise ChipReadError(item.label or item.image, "semantic label size differs from the chip")
        target = instance_masks(item.masks, lookup, image.shape[1:])
        target["semantic"] = encode(semantic)
        return image, target

    return load


def _change_reader(segmentation: Loader) -> Loader:
    """Change detection: a Classified_Tiles sample plus its "after" image from images2/."""

    def load(item: ChipItem) -> tuple[np.ndarray, Any]:
        image, label = segmentation(item)
        return image, {"image2": second_image(item, image), "label": label}

    return load


def second_image(item: ChipItem, image: np.ndarray) -> np.ndarray:
    """The chip's partner in images2/ (the later date, or the translation's target), as big as ``image``."""
    if item.image2 is None:
        raise ChipReadError(item.image, "it has no partner in images2/")
    second = read_chip(item.image2)
    if second.shape[1:] != image.shape[1:]:
        raise ChipReadError(item.image2, f"size {second.shape[1:]} differs from images/ ({image.shape[1:]})")
    return second


def _paired_reader() -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, np.ndarray]:
        image = read_chip(item.image)
        return image, second_image(item, image)

    return load


def _image_only() -> Loader:
    def load(item: ChipItem) -> tuple[np.ndarray, None]:
        return read_chip(item.image), None

    return load


def _count_pixels(label: np.ndarray) -> Counter[int]:
    values, counts = np.unique(label, return_counts=True)
    return Counter({int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0})


def _count_labels(labels: np.ndarray) -> Counter[int]:
    return Counter(int(v) for v in labels)


def reader_for(export: ExportInfo) -> Reader:
    """The reader of the export's own format (detected from its metadata and folders)."""

    reader = _reader_for(export)
    if export.extract_bands:
        inner, bands = reader.load, export.extract_bands

        def load(item: ChipItem) -> tuple[np.ndarray, Target]:
            image, target = inner(item)
            return select_bands(image, bands, item.image), target

        reader.load = load
    return reader


def _reader_for(export: ExportInfo) -> Reader:
    from geotrain.training.data.classified_tiles import ClassMap, loader

    lookup = ClassLookup(export.classes)
    class_map = ClassMap([c.value for c in export.classes])
    kind = data_kind(export)
    match kind:
        case "Classified_Tiles":
            return Reader(kind, loader(class_map), _count_pixels)
        case "ChangeDetection":
            return Reader(kind, _change_reader(loader(class_map)), lambda t: _count_pixels(t["label"]))
        case "PASCAL_VOC_rectangles":
            return Reader(kind, _box_reader(lookup, read_pascal_voc), lambda t: _count_labels(t["labels"]))
        case "KITTI_rectangles":
            return Reader(kind, _box_reader(lookup, read_kitti), lambda t: _count_labels(t["labels"]))
        case "Labeled_Tiles" | "Imagenet":
            return Reader(kind, _labeled_reader(lookup, multi=False), lambda t: Counter({int(t) + 1: 1}))
        case "ImageCaptioning":
            return Reader(kind, _caption_reader(), lambda t: Counter())
        case "MultiLabeled_Tiles":
            return Reader(
                kind, _labeled_reader(lookup, multi=True), lambda t: Counter({int(i) + 1: 1 for i in np.flatnonzero(t)})
            )
        case "RCNN_Masks":
            return Reader(kind, _rcnn_reader(lookup), lambda t: _count_labels(t["labels"]))
        case "Panoptic_Segmentation":
            return Reader(kind, _panoptic_reader(lookup, class_map.encode), lambda t: _count_labels(t["labels"]))
        case "Pix2Pix":
            return Reader(kind, _paired_reader(), lambda t: Counter())
        case "SuperResolution" | "CycleGAN":
            return Reader(kind, _image_only(), lambda t: Counter())
    raise ValueError(f"no reader for {kind}")
