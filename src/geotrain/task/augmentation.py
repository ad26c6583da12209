"""The 12.0 ``augmentation_parameters`` mini-grammar: ``[[transform, "field;field;..."], ...]``.

Fields are separated by ';', ranges are written ``(a,b)``. Torch-free: checked at submit time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
