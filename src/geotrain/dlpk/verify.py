"""Run a package's own inference function in a fresh interpreter, as ArcGIS would, on given pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass
class Frames:
    """A tracker's input: video frames (bands x rows x cols of raw pixels) and the boxes (x, y, width, height)
    of the objects to follow in the first."""

    frames: list[np.ndarray]
    boxes: list[list[float]]


Tracks = list[list[dict[str, Any]]]  # per frame, each track's id, label, bbox, score and (after the first) mask


def run_functions(runs: list[tuple[Path, np.ndarray | list[np.ndarray] | Frames, Path]]) -> list[Any]:
    """``run_function`` for several (package, pixels, work folder) at once: one interpreter runs them all, one
    after the other, each package's function loaded from its own folder. Each gives ``updatePixels``' output
    array, ``vectorize``'s features (detectors; pixels as a list of blocks, one per object) or a tracker's tracks
    in each frame (``Frames``)."""
    manifest = []
    outputs = []
    for package, pixels, workdir in runs:
        folder = workdir / "package"
        emd = extract(package, folder)
        kind = json.loads(Path(emd).read_text(encoding="utf-8-sig")).get("ModelType")
        vector = isinstance(pixels, list | Frames) or kind in VECTOR_KINDS
        output = workdir / ("output.json" if vector else "output.npy")
        stored, scalars = _store(pixels, workdir)
        outputs.append(output)
        manifest.append([str(folder), str(emd), str(stored), str(output), json.dumps(scalars)])
    listed = runs[0][2].parent / "runs.json"
    listed.write_text(json.dumps(manifest))
    _interpret(["--many", str(listed)])
    return [_read_output(o) for o in outputs]


def run_tracker(package: Path, frames: Frames, workdir: Path) -> Tracks:
    """The tracks the package's tracker gives through ``frames``, run as ``run_function`` runs a function."""
    folder = workdir / "package"
    emd = extract(package, folder)
    stored, scalars = _store(frames, workdir)
    _interpret([str(folder), str(emd), str(stored), str(workdir / "output.json"), json.dumps(scalars)])
    tracks: Tracks = _read_output(workdir / "output.json")
    return tracks


def _store(pixels: np.ndarray | list[np.ndarray] | Frames, workdir: Path) -> tuple[Path, dict[str, Any]]:
    if isinstance(pixels, Frames):
        np.savez(workdir / "pixels.npz", *pixels.frames)
        return workdir / "pixels.npz", {"detections": pixels.boxes}
    if isinstance(pixels, list):
        np.savez(workdir / "pixels.npz", *pixels)
        return workdir / "pixels.npz", {}
    np.save(workdir / "pixels.npy", pixels)
    return workdir / "pixels.npy", {}


def _read_output(output: Path) -> Any:
    if output.suffix != ".json":
        return np.load(output)
    found = json.loads(output.read_text())
    if "features" in found:
        return found["features"]
    with np.load(f"{output}.masks.npz") as stored:
        for n, tracks in enumerate(found["frames"]):
            for track in tracks:
                key = f"frame{n}_track{track['id']}"
                track["mask"] = stored[key] if key in stored.files else None
    return found["frames"]


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
