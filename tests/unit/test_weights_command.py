"""`geotrain weights`: what is cached, and importing weight files safely."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch
import torchvision


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TORCH_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "geotrain.cli", "weights", *args], capture_output=True, text=True, env=env
    )


def test_lists_cached_backbones_and_imports_weight_files(tmp_path: Path) -> None:
    source = tmp_path / "downloads"
    source.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), source / "resnet18-f37072fd.pth")
    before = _run(home=tmp_path / "cache")
    assert before.returncode == 0 and "resnet18       - (trains from random" in before.stdout
    after = _run("--import", str(source), home=tmp_path / "cache")
    assert after.returncode == 0 and "imported resnet18-f37072fd.pth" in after.stdout
    assert "resnet18       resnet18-f37072fd.pth" in after.stdout
    assert (tmp_path / "cache" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").is_file()


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("code ran",))


def test_a_weight_file_that_carries_code_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "downloads"
    source.mkdir()
    (source / "resnet34-b627a593.pth").write_bytes(pickle.dumps({"conv1.weight": _Payload()}))
    out = _run("--import", str(source), home=tmp_path / "cache")
    assert out.returncode == 2 and "not a plain weight file" in out.stderr and "code ran" not in out.stdout
    assert not (tmp_path / "cache" / "hub" / "checkpoints" / "resnet34-b627a593.pth").exists()
