"""Label files of the vector formats: PASCAL VOC XML, KITTI text, labeled-tile XML. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from geotrain.training.data.chips import ChipReadError
from geotrain.training.data.export import ClassInfo


@dataclass(frozen=True)
class Box:
    name: str  # what the file says: the class value as text in real exports, sometimes a class name
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def _xml_root(path: Path) -> Element:
    try:
        root = SafeET.parse(path).getroot()
    except (ParseError, DefusedXmlException, OSError) as exc:
        raise ChipReadError(path, f"label XML cannot be read ({exc})") from None
    if root is None:
        raise ChipReadError(path, "label XML is empty")
    return root


def read_pascal_voc(path: Path) -> list[Box]:
    boxes = []
    for obj in _xml_root(path).iter("object"):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if bndbox is None:
            continue
        try:
            coords = [float(bndbox.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise ChipReadError(path, f"a box of '{name}' has a coordinate that is not a number") from None
        boxes.append(Box(name, *coords))
    return boxes


def read_kitti(path: Path) -> list[Box]:
    """KITTI: class, truncated, occluded, alpha, left, top, right, bottom, ... (runs of spaces allowed)."""
    boxes = []
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as exc:
        raise ChipReadError(path, str(exc)) from None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise ChipReadError(path, f"line {number} has {len(fields)} fields; KITTI needs at least 8")
        try:
            left, top, right, bottom = (float(v) for v in fields[4:8])
        except ValueError:
            raise ChipReadError(path, f"line {number} has a box coordinate that is not a number") from None
        boxes.append(Box(fields[0], left, top, right, bottom))
    return boxes


def read_object_names(path: Path) -> list[str]:
    """Labeled_Tiles: the first object's name is the chip's class; MultiLabeled_Tiles: a comma list."""
    first = next(iter(_xml_root(path).iter("object")), None)
    text = (first.findtext("name") if first is not None else "") or ""
    return [part.strip() for part in text.split(",") if part.strip()]


def read_captions(path: Path) -> list[str]:
    """A caption export's label: every object's name is a caption of the whole chip (free text, commas kept)."""
    texts = ((obj.findtext("name") or "").strip() for obj in _xml_root(path).iter("object"))
    return [" ".join(text.split()) for text in texts if text]


class ClassLookup:
    """Labels name a class by its value (as text) or by its name: both map to the class's index 1..K."""

    def __init__(self, classes: list[ClassInfo]) -> None:
        self.classes = [c for c in classes if c.value != 0]
        self.by_value = {str(c.value): i for i, c in enumerate(self.classes, start=1)}
        self.by_name = {c.name.strip().lower(): i for i, c in enumerate(self.classes, start=1)}

    @property
    def num_classes(self) -> int:
        """With index 0 for background."""
        return len(self.classes) + 1

    def index(self, token: str) -> int | None:
        token = token.strip()
        if token in self.by_value:
            return self.by_value[token]
        try:
            as_number = str(int(float(token)))
        except ValueError:
            as_number = ""
        return self.by_value.get(as_number) or self.by_name.get(token.lower())
