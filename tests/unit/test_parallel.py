"""How many training processes a job gets (the context's request, checked at submit, against the host), and
the batch size that fits a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geotrain.errors import ParameterError, TrainingError
from geotrain.task.parallel import Parallelism
from geotrain.task.params import parse
from geotrain.training import batch_size, distributed
from geotrain.training.child import Helpers

BASE = {"in_folder": "/fileShares/a/b", "output_name": '{"name": "m"}'}
GIB = 2**30


def _params(model_type: str = "UNET", **context: object) -> object:
    return parse({**BASE, "model_type": model_type, "context": json.dumps(context)})


@pytest.mark.parametrize(
    ("context", "request_"),
    [
        ({}, Parallelism()),
        ({"gpuId": 1}, Parallelism(gpu_ids=(1,), all_gpus=False)),
        ({"gpuId": "0"}, Parallelism(gpu_ids=(0,), all_gpus=False)),
        ({"gpus": 2}, Parallelism(gpu_count=2, all_gpus=False)),
        ({"gpus": "all"}, Parallelism(all_gpus=True)),
        ({"gpus": [0, 2]}, Parallelism(gpu_ids=(0, 2), all_gpus=False)),
        ({"processes": "3", "processorType": "CPU"}, Parallelism(processes=3)),
    ],
)
def test_the_context_keys_for_gpus_and_processes_are_read(context: dict[str, object], request_: Parallelism) -> None:
    assert parse({**BASE, "model_type": "UNET", "context": json.dumps(context)}).parallelism() == request_


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"gpuId": -1}, "gpuId '-1' is not allowed"),
        ({"gpuId": 0, "gpus": 2}, "not both"),
        ({"gpus": 0}, "gpus '0' is not allowed"),
        ({"gpus": [1, 1]}, "a list of different GPU numbers"),
        ({"gpus": True}, "gpus 'True' is not allowed"),
        ({"processes": 65}, "from 1 to 64"),
        ({"processes": "two"}, "processes 'two' is not allowed"),
    ],
)
def test_a_wrong_gpu_or_process_request_is_refused_at_submit_naming_the_key(
    context: dict[str, object], named: str
) -> None:
    with pytest.raises(ParameterError) as caught:
        parse({**BASE, "model_type": "UNET", "context": json.dumps(context)})
    assert caught.value.param == "context" and named in str(caught.value)


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int, cores: int = 16) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(distributed, "host_cores", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)


def test_unet_takes_every_gpu_as_arcgis_does_and_other_models_one_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _gpus(monkeypatch, 4)
    warnings: list[str] = []
    unet = distributed.plan(_params("UNET"), warnings.append)  # type: ignore[arg-type]
    assert (unet.accelerator, unet.devices, unet.threads, unet.backend) == ("gpu", (0, 1, 2, 3), 4, "nccl")
    assert unet.describe() == "4 GPUs (0, 1, 2, 3), DistributedDataParallel over nccl"
    assert distributed.plan(_params("FASTERRCNN"), warnings.append).devices == (0,)  # type: ignore[arg-type]
    assert distributed.plan(_params("FASTERRCNN", gpus="all"), warnings.append).world == 4  # type: ignore[arg-type]
    assert distributed.plan(_params("UNET", gpuId=2), warnings.append).devices == (2,)  # type: ignore[arg-type]
    assert distributed.plan(_params("UNET", gpus=[3, 1]), warnings.append).devices == (3, 1)  # type: ignore[arg-type]
    assert distributed.plan(_params("UNET", gpus=8), warnings.append).world == 4  # type: ignore[arg-type]
    assert warnings == ["context.gpus asked for 8 GPUs; this worker has 4, so all 4 train."]
    with pytest.raises(TrainingError, match="GPU 5 was asked for, and this worker has 4 GPU"):
        distributed.plan(_params("UNET", gpuId=5), warnings.append)  # type: ignore[arg-type]
    cpu = distributed.plan(_params("UNET", processorType="CPU", processes=2), warnings.append)  # type: ignore[arg-type]
    assert (cpu.accelerator, cpu.world, cpu.threads, cpu.backend) == ("cpu", 2, 8, "gloo")


def test_cpu_processes_are_capped_at_the_cores_and_a_gpu_request_without_gpus_trains_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _gpus(monkeypatch, 0, cores=2)
    warnings: list[str] = []
    placement = distributed.plan(_params("UNET", processes=4, processorType="GPU"), warnings.append)  # type: ignore[arg-type]
    assert (placement.accelerator, placement.world, placement.threads) == ("cpu", 2, 1)
    assert placement.describe() == "CPU in 2 processes, DistributedDataParallel over gloo"
    assert placement.alone().world == 1 and distributed.Placement("cpu").describe() == "CPU"
    assert warnings == [
        "processorType GPU was requested but this worker has no CUDA device; training on the CPU.",
        "context.processes asked for 4 processes; this worker has 2 CPU cores, so 2 train.",
    ]


def test_a_helper_rank_that_fails_fails_the_job_with_its_last_log_line(tmp_path: Path) -> None:
    outcomes: list[dict[str, object]] = []
    helpers = Helpers("j1", tmp_path, outcomes.append)
    (tmp_path / "train.rank1.log").write_text("loading\nRuntimeError: the chips ran out\n")
    helpers.started = [subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])]
    exits: list[int] = []
    helpers.exit = exits.append  # type: ignore[method-assign]
    helpers._watch()
    assert exits == [1]
    message = str(outcomes[0]["message"])
    assert outcomes[0]["status"] == "failed"
    assert message.startswith(
        "Training process 2 of 2 (rank 1) failed with exit code 3: RuntimeError: the chips ran out."
    )


def test_a_helper_failure_after_rank_0_ended_leaves_rank_0s_outcome(tmp_path: Path) -> None:
    outcomes: list[dict[str, object]] = []
    helpers = Helpers("j1", tmp_path, outcomes.append)
    helpers.started = [subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])]
    helpers.started[0].wait()
    helpers.stop()
    helpers._watch()
    assert outcomes == []


def _linear_probe(fixed: int, per_chip: int, total: int) -> batch_size.Probe:
    """A GPU whose step takes ``fixed`` + ``per_chip`` x chips bytes, out of memory above ``total``."""

    def probe(size: int) -> int | None:
        peak = fixed + per_chip * size
        return peak if peak <= total else None

    return probe


def test_a_requested_batch_that_fits_the_gpu_is_kept() -> None:
    said: list[str] = []
    assert batch_size.estimate(16, _linear_probe(2 * GIB, GIB // 2, 16 * GIB), 16 * GIB, said.append) == 16
    assert said == []


def test_a_batch_that_does_not_fit_is_estimated_from_steps_of_one_and_two_chips() -> None:
    said: list[str] = []
    # 2 GiB fixed + 1 GiB a chip on a 16 GiB GPU: 85 % of it (13.6 GiB) holds 11 chips
    assert batch_size.estimate(64, _linear_probe(2 * GIB, GIB, 16 * GIB), 16 * GIB, said.append) == 11
    assert said == [
        "Batch size 64 does not fit the GPU's memory (16.0 GiB): training with batch size 11, estimated from a "
        "step of one and of two chips (1024 MiB a chip)."
    ]


def test_not_even_one_chip_fitting_fails_saying_what_to_change() -> None:
    with pytest.raises(TrainingError) as failed:
        batch_size.estimate(4, _linear_probe(20 * GIB, GIB, 16 * GIB), 16 * GIB, lambda text: None)
    assert "even with one chip" in failed.value.message and "chip_size" in failed.value.details[0]


def test_compile_is_asked_in_the_context_for_the_families_whose_batches_keep_one_shape() -> None:
    assert parse({**BASE, "model_type": "UNET", "context": '{"compile": "true"}'}).compile_model is True
    assert parse({**BASE, "model_type": "FEATURE_CLASSIFIER", "context": '{"compile": true}'}).compile_model is True
    assert parse({**BASE, "model_type": "UNET"}).compile_model is False
    with pytest.raises(ParameterError, match="compile applies to pixel and object classification models, not to SSD"):
        parse({**BASE, "model_type": "SSD", "context": '{"compile": true}'})
    with pytest.raises(ParameterError, match=r"compile 'soon' is not allowed\. Allowed: true, false"):
        parse({**BASE, "model_type": "UNET", "context": '{"compile": "soon"}'})
