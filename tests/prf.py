"""Load the files geotrain ships inside packages (src/geotrain/dlpk/prf) by path, as an inference function
loads them: registered under a name of their own, not as geotrain modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PRF = Path(__file__).parents[1] / "src" / "geotrain" / "dlpk" / "prf"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"shipped_{name}", PRF / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as the inference function registers it: dataclasses look it up
    spec.loader.exec_module(module)
    return module
