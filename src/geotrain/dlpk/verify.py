"""Run a package's own inference function in a fresh interpreter, as ArcGIS would, on given pixels."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision

from geotrain.dlpk.package import PackageError, extract

TIMEOUT_S = 300


def libraries() -> list[str]:
    """The folders the function may import from: where torch, torchvision and numpy are installed."""
    return sorted({str(Path(m.__file__ or "").resolve().parent.parent) for m in (torch, torchvision, np)})


def run_function(package: Path, pixels: np.ndarray, workdir: Path) -> np.ndarray:
    """``updatePixels``' output for ``pixels`` (bands x rows x cols, the EMD's ExtractBands already
    applied), from the package's function loaded in an interpreter that cannot import geotrain."""
    folder = workdir / "package"
    emd = extract(package, folder)
    np.save(workdir / "pixels.npy", pixels)
    script = resources.files("geotrain.dlpk.prf").joinpath("run_function.py")
    command = [sys.executable, "-I", "-S", str(script), str(folder), str(emd),
               str(workdir / "pixels.npy"), str(workdir / "output.npy"), *libraries()]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PackageError(f"the package's inference function did not finish in {TIMEOUT_S} s") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise PackageError(f"the package's inference function failed: {lines[-1] if lines else done.returncode}")
    output: np.ndarray = np.load(workdir / "output.npy")
    return output
