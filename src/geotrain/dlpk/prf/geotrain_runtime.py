"""What every geotrain inference function shares: reading the EMD, the device, the package's other files,
the normalisation. Travels inside the package; torch and numpy only."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

import numpy as np
import torch


def load_sibling(folder: str, file_name: str) -> Any:
    """A module shipped in the package's folder, under a name of its own: two packages of different geotrain
    versions may be loaded in one ArcGIS process."""
    path = os.path.join(folder, file_name)
    name = f"{os.path.splitext(file_name)[0]}_{abs(hash(os.path.abspath(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_emd(model: str) -> tuple[dict[str, Any], str]:
    """The EMD from a path or from its JSON text, and the folder its file names are relative to."""
    text = model.strip()
    if text.startswith("{"):
        emd = json.loads(text)
        return emd, os.path.dirname(os.path.abspath(str(emd.get("ModelFile", ""))))
    with open(model, encoding="utf-8-sig") as f:
        return json.load(f), os.path.dirname(os.path.abspath(model))


def pick_device(device: Any) -> torch.device:
    """ArcGIS's convention: -1 the CPU, a GPU's index, anything else (-2) the first GPU when there is one."""
    index = int(device) if device not in (None, "") else -2
    if index == -1 or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{index}" if index >= 0 else "cuda")


def load_state(emd: dict[str, Any], folder: str) -> dict[str, torch.Tensor]:
    """The package's weights: tensors only, nothing in the file is run."""
    state: dict[str, torch.Tensor] = torch.load(
        os.path.join(folder, str(emd["ModelFile"])), map_location="cpu", weights_only=True
    )
    return state


class Normalizer:
    """Raw pixels -> what the network was trained on: (x - band mean) / band std, from the EMD."""

    def __init__(self, emd: dict[str, Any]) -> None:
        stats = emd.get("NormalizationStats") or {}
        self.mean = np.asarray(stats["band_mean_values"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(stats["band_std_values"], dtype=np.float32)[:, None, None]

    def __call__(self, pixels: np.ndarray, device: torch.device) -> torch.Tensor:
        image = (pixels.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(image)).to(device)


def padding(emd: dict[str, Any]) -> int:
    """The padding a tile is read with unless the tool says otherwise: the EMD's ModelPadding, or a
    quarter of the chip."""
    return int(emd.get("ModelPadding", int(emd.get("ImageHeight", 256)) // 4))


def scalar(scalars: dict[str, Any], name: str, default: float) -> float:
    value = scalars.get(name)
    return float(value) if value not in (None, "") else default


def flag(scalars: dict[str, Any], name: str, default: bool) -> bool:
    value = scalars.get(name)
    if value in (None, ""):
        return default
    return str(value).strip().lower() in ("true", "1", "t", "y", "yes")
