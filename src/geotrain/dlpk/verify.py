"""Run a package's own inference function in a fresh interpreter, as ArcGIS would, on given pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from geotrain.dlpk.archive import PackageError, extract

TIMEOUT_S = 300


def libraries() -> list[str]:
    """The folders the function may import from: where torch, torchvision and numpy are installed."""
    return sorted({str(Path(m.__file__ or "").resolve().parent.parent) for m in (torch, torchvision, np)})


def run_function(package: Path, pixels: np.ndarray, workdir: Path) -> np.ndarray:
    """``updatePixels``' output for ``pixels`` (bands x rows x cols, the EMD's ExtractBands already
    applied), from the package's function loaded in an interpreter that cannot import geotrain."""
    _run(package, pixels, workdir, workdir / "output.npy", {})
    output: np.ndarray = np.load(workdir / "output.npy")
    return output


VECTOR_KINDS = ("ObjectDetection", "InstanceDetection")


def run_functions(runs: list[tuple[Path, np.ndarray | list[np.ndarray], Path]]) -> list[Any]:
    """``run_function`` for several (package, pixels, work folder) at once: one interpreter runs them all, one
    after the other, each package's function loaded from its own folder. Each gives ``updatePixels``' output
    array, or ``vectorize``'s features (detectors; pixels as a list of blocks, one per object)."""
    manifest = []
    outputs = []
    for package, pixels, workdir in runs:
        folder = workdir / "package"
        emd = extract(package, folder)
        kind = json.loads(Path(emd).read_text(encoding="utf-8-sig")).get("ModelType")
        output = workdir / ("output.json" if isinstance(pixels, list) or kind in VECTOR_KINDS else "output.npy")
        if isinstance(pixels, list):
            stored = workdir / "pixels.npz"
            np.savez(stored, *pixels)
        else:
            stored = workdir / "pixels.npy"
            np.save(stored, pixels)
        outputs.append(output)
        manifest.append([str(folder), str(emd), str(stored), str(output), "{}"])
    listed = runs[0][2].parent / "runs.json"
    listed.write_text(json.dumps(manifest))
    _interpret(["--many", str(listed)])
    return [json.loads(o.read_text())["features"] if o.suffix == ".json" else np.load(o) for o in outputs]


def run_detector(package: Path, pixels: np.ndarray, workdir: Path, scalars: dict[str, Any]) -> list[dict[str, Any]]:
    """The features ``vectorize`` gives for ``pixels``, the function configured with ``scalars`` (e.g.
    threshold, padding), run as ``run_function`` runs it."""
    return _features(package, pixels, workdir, scalars)


def run_object_classifier(
    package: Path, blocks: list[np.ndarray], workdir: Path, scalars: dict[str, Any]
) -> list[dict[str, Any]]:
    """The features ``vectorize`` gives for ``blocks`` (bands x rows x cols of raw pixels, one per object, as
    Classify Objects Using Deep Learning hands them over), run as ``run_function`` runs it."""
    return _features(package, blocks, workdir, scalars)


def _features(
    package: Path, pixels: np.ndarray | list[np.ndarray], workdir: Path, scalars: dict[str, Any]
) -> list[dict[str, Any]]:
    _run(package, pixels, workdir, workdir / "output.json", scalars)
    features: list[dict[str, Any]] = json.loads((workdir / "output.json").read_text())["features"]
    return features


def _run(
    package: Path, pixels: np.ndarray | list[np.ndarray], workdir: Path, output: Path, scalars: dict[str, Any]
) -> None:
    folder = workdir / "package"
    emd = extract(package, folder)
    stored = workdir / ("pixels.npz" if isinstance(pixels, list) else "pixels.npy")
    if isinstance(pixels, list):
        np.savez(stored, *pixels)
    else:
        np.save(stored, pixels)
    _interpret([str(folder), str(emd), str(stored), str(output), json.dumps(scalars)])


def _interpret(arguments: list[str]) -> None:
    """run_function.py in an interpreter that sees only torch, torchvision and numpy beside the package."""
    script = resources.files("geotrain.dlpk.prf").joinpath("run_function.py")
    command = [sys.executable, "-I", "-S", str(script), *arguments, *libraries()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PackageError(f"the package's inference function did not finish in {TIMEOUT_S} s") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise PackageError(f"the package's inference function failed: {lines[-1] if lines else done.returncode}")
