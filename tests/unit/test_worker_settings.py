"""What a worker says it can run: its labels from GEOTRAIN_WORKER_LABELS, or from the GPUs it may use."""

from __future__ import annotations

import pytest

from geotrain.config import Settings


def test_given_labels_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(worker_labels="GPU, fast").labels() == frozenset({"gpu", "fast"})


def test_no_gpu_means_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert Settings().visible_gpus() == 0 and Settings().labels() == frozenset({"cpu"})
    assert Settings(gpus="none").visible_gpus() == 0


def test_gpus_none_hides_every_gpu_from_the_training_processes() -> None:
    assert Settings(gpus="none").child_environment()["CUDA_VISIBLE_DEVICES"] == ""
    assert Settings(gpus="0,1").child_environment()["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in Settings().child_environment()
