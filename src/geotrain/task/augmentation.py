"""What a job augments with: the 12.0 ``augmentation_parameters`` mini-grammar
(``[[transform, "field;field;..."], ...]``, fields separated by ';', ranges written ``(a,b)``) for
CUSTOM, or the export folder's ``transforms.json`` for FILE (fastai transform names with keyword
arguments, in a ``Training`` and a ``Validation`` section). Torch-free: checked at submit time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# transform -> what its fields are, for error messages
GRAMMAR = {
    "rotate": "degrees;p  e.g. 30.0;0.5 or (-10,10);0.5",
    "brightness": "change;p  (0 dark, 0.5 unchanged, 1 light) e.g. (0.4,0.6);1.0",
    "contrast": "scale;p  (0 grey, 1 unchanged) e.g. (0.75,1.5);1.0",
    "zoom": "scale;p  (above 1 zooms in) e.g. (1.0,1.2);1.0",
    "crop": "size;p;row_pct;col_pct  e.g. 224;1.0;(0,1);(0,1)",
    "flip_lr": "p  e.g. 0.5",
    "dihedral_affine": "p  e.g. 0.5",
}
_RANGE = re.compile(r"^\(\s*([^,()]+)\s*,\s*([^,()]+)\s*\)$")


@dataclass(frozen=True)
class Augmentation:
    name: str
    p: float
    low: float = 0.0
    high: float = 0.0
    size: int = 0  # crop
    row_pct: tuple[float, float] = (0.0, 1.0)  # crop
    col_pct: tuple[float, float] = (0.0, 1.0)  # crop


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} '{text}' is not a number") from None
    if value != value:
        raise ValueError(f"{what} is NaN")
    return value


def _range(text: str, what: str) -> tuple[float, float]:
    match = _RANGE.match(text.strip())
    if match:
        low, high = _number(match.group(1), what), _number(match.group(2), what)
        return (low, high) if low <= high else (high, low)
    value = _number(text.strip(), what)
    return value, value


def _probability(text: str) -> float:
    p = _number(text, "p")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be from 0 to 1, not {p:g}")
    return p


def parse_one(pair: Any) -> Augmentation:
    if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(v, str | int | float) for v in pair)):
        raise ValueError(f"each entry must be [transform, settings], not {pair!r}")
    name, settings = str(pair[0]).strip().lower(), str(pair[1])
    if name not in GRAMMAR:
        raise ValueError(f"unknown transform '{name}'; known: {', '.join(GRAMMAR)}")
    fields = [f.strip() for f in settings.split(";")]
    expected = GRAMMAR[name].split("  ")[0].split(";")
    if len(fields) != len(expected):
        raise ValueError(f"{name} takes {';'.join(expected)} ({GRAMMAR[name]}), not '{settings}'")
    try:
        match name:
            case "flip_lr" | "dihedral_affine":
                return Augmentation(name, _probability(fields[0]))
            case "rotate":
                low, high = _range(fields[0], "degrees")
                if low == high:  # one number: up to that many degrees either way
                    low, high = -abs(low), abs(low)
                return Augmentation(name, _probability(fields[1]), low, high)
            case "brightness":
                low, high = _range(fields[0], "change")
                if not 0 <= low <= high <= 1:
                    raise ValueError("change must lie from 0 to 1")
                return Augmentation(name, _probability(fields[1]), low, high)
            case "contrast" | "zoom":
                low, high = _range(fields[0], "scale")
                if low <= 0:
                    raise ValueError("scale must be above 0")
                return Augmentation(name, _probability(fields[1]), low, high)
            case _:  # crop
                size = _number(fields[0], "size")
                if size != int(size) or size < 8:
                    raise ValueError("size must be a whole number of pixels, at least 8")
                rows, cols = _range(fields[2], "row_pct"), _range(fields[3], "col_pct")
                if not (rows[0] >= 0 and rows[1] <= 1 and cols[0] >= 0 and cols[1] <= 1):
                    raise ValueError("row_pct and col_pct must lie from 0 to 1")
                return Augmentation(name, _probability(fields[1]), size=int(size), row_pct=rows, col_pct=cols)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def parse(pairs: list[Any]) -> list[Augmentation]:
    if not pairs:
        raise ValueError("give at least one [transform, settings] pair")
    augmentations = [parse_one(pair) for pair in pairs]
    names = [a.name for a in augmentations]
    repeated = {n for n in names if names.count(n) > 1}
    if repeated:
        raise ValueError(f"each transform may appear once; repeated: {', '.join(sorted(repeated))}")
    return augmentations


TRANSFORMS_FILE = "transforms.json"
SECTIONS = ("Training", "Validation")
# transforms.json keyword arguments, in the grammar's field order; a missing one takes the default shown
# (None: required). fastai's own defaults: p 1.0, crop centred.
_KEYWORDS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "rotate": (("degrees", None), ("p", "1.0")),
    "brightness": (("change", None), ("p", "1.0")),
    "contrast": (("scale", None), ("p", "1.0")),
    "zoom": (("scale", None), ("p", "1.0")),
    "crop": (("size", None), ("p", "1.0"), ("row_pct", "0.5"), ("col_pct", "0.5")),
    "flip_lr": (("p", "1.0"),),
    "dihedral_affine": (("p", "1.0"),),
}


@dataclass(frozen=True)
class Plan:
    """The transforms applied to training samples and to validation samples."""

    training: tuple[Augmentation, ...] = ()
    validation: tuple[Augmentation, ...] = ()
    source: str = ""  # what the user wrote them in, for messages

    @property
    def crop_size(self) -> int | None:
        return next((a.size for a in self.training if a.name == "crop"), None)

    def check_crop(self, chip_size: int | None) -> None:
        """One crop size: the model trains and validates on chips of one size."""
        sizes = {a.size for a in (*self.training, *self.validation) if a.name == "crop"}
        if chip_size is not None:
            sizes.add(chip_size)
        if len(sizes) > 1:
            raise ValueError(
                f"crop sizes {', '.join(str(s) for s in sorted(sizes))} differ (chip_size included); use one size"
            )


def _field(value: Any, what: str) -> str:
    """A transforms.json value as a grammar field: numbers, "a, b" or [a, b] ranges."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | list):
        raise ValueError(f"{what} must be a number or a range such as [0.4, 0.6], not {json.dumps(value)}")
    if isinstance(value, list):
        if len(value) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{what} as a list must be two numbers [low, high], not {json.dumps(value)}")
        return f"({value[0]},{value[1]})"
    text = str(value).strip()
    if "," in text and not text.startswith("("):
        return f"({text})"
    return text


def _from_keywords(name: str, keywords: Any) -> Augmentation:
    if name not in _KEYWORDS:
        raise ValueError(f"unknown transform '{name}'; known: {', '.join(_KEYWORDS)}")
    if not isinstance(keywords, dict):
        raise ValueError(f'{name} must map argument names to values, e.g. {{"p": 0.5}}')
    allowed = [k for k, _ in _KEYWORDS[name]]
    unknown = sorted(set(keywords) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has no argument {', '.join(unknown)}; it takes {', '.join(allowed)}")
    fields = []
    for key, default in _KEYWORDS[name]:
        if key in keywords:
            fields.append(_field(keywords[key], f"{name} {key}"))
        elif default is None:
            raise ValueError(f"{name} needs {key}")
        else:
            fields.append(default)
    return parse_one([name, ";".join(fields)])


def parse_transforms(data: Any) -> Plan:
    """A transforms.json document: ``{"Training": {"rotate": {"degrees": 30, "p": 0.5}, ...}, "Validation": {...}}``."""
    if not isinstance(data, dict):
        raise ValueError('it must be a JSON object with "Training" and "Validation" sections')
    sections: dict[str, tuple[Augmentation, ...]] = {s: () for s in SECTIONS}
    for key, section in data.items():
        match = next((s for s in SECTIONS if s.lower() == str(key).strip().lower()), None)
        if match is None:
            raise ValueError(f"unknown section '{key}'; sections: {', '.join(SECTIONS)}")
        if not isinstance(section, dict):
            raise ValueError(f"{match} must map transform names to their arguments")
        try:
            sections[match] = tuple(_from_keywords(str(n).strip().lower(), kw) for n, kw in section.items())
        except ValueError as exc:
            raise ValueError(f"{match}: {exc}") from None
    plan = Plan(sections["Training"], sections["Validation"], TRANSFORMS_FILE)
    plan.check_crop(None)
    return plan


def read_transforms(path: Path) -> Plan:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"it cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_transforms(data)


def custom_plan(pairs: list[Any]) -> Plan:
    """CUSTOM: the transforms apply to training samples; validation keeps its centre crop."""
    return Plan(tuple(parse(pairs)), (), "augmentation_parameters")
