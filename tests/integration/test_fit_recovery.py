"""A training run that dies goes on from its last epoch checkpoint: optimizer, schedule, history and the
chosen learning rate as they were, not from the first epoch. A run out of GPU memory trains again with half
the batch size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geotrain.errors import TrainingError
from geotrain.training.classification import ClassificationTask
from geotrain.training.fit import EpochRecord, FitOptions, fit


class Crash(Exception):
    pass


def _task() -> ClassificationTask:
    torch.manual_seed(0)
    head = nn.Linear(8, 3)
    network = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return ClassificationTask(network, head, 3, False, 1e-3, False)


def _data() -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 2, 16, 16, generator=g), torch.randint(0, 3, (24,), generator=g)
    return TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:])


def test_a_run_killed_in_epoch_3_of_5_resumes_at_epoch_3(tmp_path: Path) -> None:
    train_set, valid_set = _data()
    # no learning rate given: the finder chooses one, and the resumed run must keep it, not search again
    options = FitOptions(max_epochs=5, batch_size=4, lr=None, monitor="VALID_LOSS", stop_training=False,
                         use_gpu=False, workdir=tmp_path)  # fmt: skip
    seen: list[int] = []
    infos: list[str] = []

    def crash_in_epoch_3(record: EpochRecord, max_epochs: int) -> None:
        seen.append(record.epoch)
        if record.epoch == 3:  # before epoch 3's checkpoint: as if killed during it
            raise Crash

    with pytest.raises(Crash):
        fit(_task(), train_set, valid_set, options, crash_in_epoch_3, infos.append, infos.append)
    chosen = float(next(i for i in infos if i.startswith("The learning-rate finder chose")).split()[-1].rstrip("."))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["optimizer_states"][0]["state"], "epoch 2's checkpoint, with Adam's state"

    again: list[str] = []
    resumed_task = _task()
    result = fit(resumed_task, train_set, valid_set, options, lambda r, m: seen.append(r.epoch), again.append,
                 again.append)  # fmt: skip
    assert seen == [1, 2, 3, 3, 4, 5]
    assert again[0].startswith("Resuming from the checkpoint of epoch 2: training goes on at epoch 3 of 5")
    assert not any(i.startswith("The learning-rate finder") for i in again)
    assert resumed_task.lr == pytest.approx(float(f"{chosen:.4e}"), rel=1e-3)
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]


def test_an_unreadable_checkpoint_starts_the_run_over_and_says_so(tmp_path: Path) -> None:
    train_set, valid_set = _data()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    options = FitOptions(max_epochs=1, batch_size=4, lr=1e-3, monitor="VALID_LOSS", stop_training=False,
                         use_gpu=False, workdir=tmp_path)  # fmt: skip
    notes: list[str] = []
    result = fit(_task(), train_set, valid_set, options, lambda r, m: None, notes.append, notes.append)
    assert "cannot be read" in notes[0] and "training starts over" in notes[0]
    assert [r.epoch for r in result.history] == [1]


class Hungry(ClassificationTask):
    """Runs out of GPU memory on batches larger than ``fits`` chips, as a real GPU does."""

    fits = 2

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if len(batch[0]) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().training_step(batch, batch_idx)


def _hungry(fits: int) -> Hungry:
    torch.manual_seed(0)
    head = nn.Linear(8, 3)
    network = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    task = Hungry(network, head, 3, False, 1e-3, False)
    task.fits = fits
    return task


def test_out_of_gpu_memory_trains_again_with_half_the_batch(tmp_path: Path) -> None:
    train_set, valid_set = _data()
    options = FitOptions(max_epochs=2, batch_size=8, lr=1e-3, monitor="VALID_LOSS", stop_training=False,
                         use_gpu=False, workdir=tmp_path)  # fmt: skip
    warnings: list[str] = []
    result = fit(_hungry(2), train_set, valid_set, options, lambda r, m: None, lambda t: None, warnings.append)
    assert warnings == [
        "Out of GPU memory with batch size 8: training again with batch size 4.",
        "Out of GPU memory with batch size 4: training again with batch size 2.",
    ]
    assert result.batch_size == 2 and [r.epoch for r in result.history] == [1, 2]


def test_out_of_gpu_memory_with_one_chip_a_batch_fails_saying_what_to_change(tmp_path: Path) -> None:
    train_set, valid_set = _data()
    options = FitOptions(max_epochs=1, batch_size=2, lr=1e-3, monitor="VALID_LOSS", stop_training=False,
                         use_gpu=False, workdir=tmp_path)  # fmt: skip
    with pytest.raises(TrainingError) as failed:
        fit(_hungry(0), train_set, valid_set, options, lambda r, m: None, lambda t: None, lambda t: None)
    assert "even with one chip a batch" in failed.value.message and "chip_size" in failed.value.details[0]


def test_a_compiled_run_trains_resumes_and_leaves_the_eager_network_with_plain_weights(tmp_path: Path) -> None:
    """context compile: the network runs through torch.compile while training; a resumed run compiles again
    and loads the compiled run's checkpoint; afterwards the task holds the eager network, plain weight names.
    (TorchDynamo and AOT autograd as jobs run them, without inductor's C++ code generation: that costs 15 s
    here from a cold cache and is torch's to test.)"""
    train_set, valid_set = _data()
    options = FitOptions(max_epochs=2, batch_size=4, lr=1e-3, monitor="VALID_LOSS", stop_training=False,
                         use_gpu=False, workdir=tmp_path, compile="aot_eager")  # fmt: skip
    task, said = _task(), list[str]()
    eager = task.network

    def crash_in_epoch_2(record: EpochRecord, max_epochs: int) -> None:
        if record.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        fit(task, train_set, valid_set, options, crash_in_epoch_2, said.append, said.append)
    again = _task()
    result = fit(again, train_set, valid_set, options, lambda r, m: None, said.append, said.append)
    assert [r.epoch for r in result.history] == [1, 2]
    assert any(t.startswith("Resuming from the checkpoint of epoch 1") for t in said), said
    engines = [t for t in said if t.startswith("Engine:")]
    assert len(engines) == 2 and all("torch.compile" in t for t in engines)
    assert type(again.network) is nn.Sequential and type(eager) is nn.Sequential
    assert all("_orig_mod" not in k for k in again.state_dict())
