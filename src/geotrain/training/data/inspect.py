"""`geotrain inspect`: what a user wants to know about an export before training on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geotrain.task.augmentation import TRANSFORMS_FILE, read_transforms
from geotrain.training.data.export import read_export
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import scan

UNITS = {
    "Classified_Tiles": "pixels", "ChangeDetection": "pixels", "PASCAL_VOC_rectangles": "boxes",
    "KITTI_rectangles": "boxes", "RCNN_Masks": "instances", "Panoptic_Segmentation": "instances",
    "Labeled_Tiles": "chips", "MultiLabeled_Tiles": "chips", "Imagenet": "chips",
}  # fmt: skip


@dataclass
class ClassReport:
    value: int
    name: str
    chips: int
    features: int


@dataclass
class Inspection:
    folder: str
    metadata_format: str
    kind: str
    chips_listed: int
    chips_readable: int
    chip_sizes: dict[str, int]  # "rows x cols" -> chips
    bands: int
    data_type: str
    feature_unit: str
    classes: list[ClassReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # what data_augmentation FILE would apply: the folder's transforms.json, read as a job reads it
    transforms_file: str = "none"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def as_text(self) -> str:
        lines = [
            f"Folder:        {self.folder}",
            f"Format:        {self.metadata_format}" + (f" ({self.kind})" if self.kind != self.metadata_format else ""),
            f"Chips:         {self.chips_readable} readable of {self.chips_listed} listed",
            f"Chip size:     {', '.join(f'{k} ({v})' for k, v in self.chip_sizes.items()) or '-'}",
            f"Bands:         {self.bands} x {self.data_type}",
        ]
        if self.classes:
            lines.append(f"Classes:       {'value':>6}  {'name':<20} {'chips':>7} {self.feature_unit:>10}")
            lines += [
                f"               {c.value:>6}  {c.name[:20]:<20} {c.chips:>7} {c.features:>10}" for c in self.classes
            ]
        lines.append(f"Transforms:    {self.transforms_file}")
        lines.append("Problems:      " + ("none" if not self.problems else self.problems[0]))
        lines += [f"               {p}" for p in self.problems[1:]]
        return "\n".join(lines)


def inspect(folder: Path) -> Inspection:
    export = read_export(folder)
    reader = reader_for(export)
    chips: Counter[int] = Counter()
    features: Counter[int] = Counter()
    sizes: Counter[str] = Counter()

    def observe(image: np.ndarray, target: Any) -> None:
        sizes[f"{image.shape[1]} x {image.shape[2]}"] += 1
        counted = reader.count(target)
        features.update(counted)
        chips.update(counted.keys())

    # nothing is kept in memory: inspect reads exports of any size
    result = scan(export, reader.load, observe=observe, budget=0)
    foreground = [c for c in export.classes if c.value != 0]
    reports = [ClassReport(c.value, c.name, chips[i], features[i]) for i, c in enumerate(foreground, start=1)]
    problems = []
    if export.missing:
        problems.append(
            f"{len(export.missing)} chip(s) listed in map.txt are missing on disk (first: {export.missing[0]})"
        )
    problems += [f"unreadable: {e}" for e in result.bad[:20]]
    if len(result.bad) > 20:
        problems.append(f"... and {len(result.bad) - 20} more unreadable files")
    absent = [c.name for c in reports if c.features == 0]
    if absent and reader.kind in UNITS:
        problems.append(f"classes declared but absent from every label: {', '.join(absent)}")
    transforms = "none"
    if export.transforms_file is not None:
        try:
            plan = read_transforms(export.transforms_file)
            transforms = (
                f"{TRANSFORMS_FILE}: training {', '.join(a.name for a in plan.training) or 'none'}; "
                f"validation {', '.join(a.name for a in plan.validation) or 'none'}"
            )
        except ValueError as exc:
            transforms = f"{TRANSFORMS_FILE} (unusable)"
            problems.append(f"{TRANSFORMS_FILE}: {exc}")
    listed = len(export.items) + len(export.missing) + len(export.items_b)
    return Inspection(
        folder=str(folder),
        metadata_format=export.metadata_format,
        kind=reader.kind,
        chips_listed=listed,
        chips_readable=len(result.items),
        chip_sizes=dict(sizes.most_common()),
        bands=result.num_bands,
        data_type=str(result.dtype),
        feature_unit=UNITS.get(reader.kind, "features"),
        classes=reports if reader.kind in UNITS else [],
        problems=problems,
        transforms_file=transforms,
    )
