"""One job on several processes of one host, with DistributedDataParallel: one process per GPU (NCCL),
or ``context.processes`` CPU processes (gloo).

The worker starts the job's first process (rank 0) as usual. It makes the ``Placement`` from the job's context
and the host, starts the other ranks (``python -m geotrain.training.child --rank N <job>``, handing them the
plan in ``GEOTRAIN_DDP``). Every rank reads the export and builds the model the same way; Lightning's DDP
strategy then finds the processes started (``LOCAL_RANK`` set), so it launches nothing itself, and makes
the process group when training starts. Only rank 0 talks to the job (messages,
progress), writes checkpoints (Lightning) and the package; the others end when training ends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from geotrain.errors import TrainingError
from geotrain.task.parallel import ALL_GPUS_BY_DEFAULT
from geotrain.task.params import TrainParams

ENV = "GEOTRAIN_DDP"


@dataclass(frozen=True)
class Placement:
    """Where a job trains: ``devices`` are GPU numbers (among those the worker may use) on a GPU, one entry
    per process on the CPU."""

    accelerator: Literal["cpu", "gpu"]
    devices: tuple[int, ...] = (0,)
    threads: int = 1  # CPU threads per process
    port: int = 0  # rank 0's rendezvous port when there are several processes

    @property
    def world(self) -> int:
        return len(self.devices)

    @property
    def backend(self) -> str:
        return "nccl" if self.accelerator == "gpu" else "gloo"

    def alone(self) -> Placement:
        """This plan on its first device alone (a run with no helpers to start)."""
        return replace(self, devices=self.devices[:1], threads=torch.get_num_threads(), port=0)

    def describe(self) -> str:
        if self.accelerator == "gpu":
            where = (
                f"GPU {self.devices[0]}"
                if self.world == 1
                else f"{self.world} GPUs ({', '.join(map(str, self.devices))})"
            )
        else:
            where = "CPU" if self.world == 1 else f"CPU in {self.world} processes"
        return where if self.world == 1 else f"{where}, DistributedDataParallel over {self.backend}"


def host_cores() -> int:
    """The CPU cores this process may run on (a container's or taskset's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def plan(params: TrainParams, warn: Callable[[str], None]) -> Placement:
    """The job's plan on this host: its context's request against the GPUs and cores there are."""
    asked = str(params.context.get("processorType", "")).upper()
    request = params.parallelism()
    cores = host_cores()
    # torch's own count (physical cores, where it can tell) is what one process uses; processes share it
    threads = torch.get_num_threads()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if asked == "GPU" and gpus == 0:
        warn("processorType GPU was requested but this worker has no CUDA device; training on the CPU.")
    if gpus and asked != "CPU":
        if request.gpu_ids is not None:
            missing = [i for i in request.gpu_ids if i >= gpus]
            if missing:
                raise TrainingError(
                    f"context: GPU {missing[0]} was asked for, and this worker has {gpus} GPU(s), "
                    f"numbered 0 to {gpus - 1}.",
                    ["Ask for GPUs among those, or leave gpuId and gpus out."],
                )
            devices = request.gpu_ids
        elif request.gpu_count is not None:
            if request.gpu_count > gpus:
                warn(f"context.gpus asked for {request.gpu_count} GPUs; this worker has {gpus}, so all {gpus} train.")
            devices = tuple(range(min(request.gpu_count, gpus)))
        elif request.all_gpus or (request.all_gpus is None and params.model_type in ALL_GPUS_BY_DEFAULT):
            devices = tuple(range(gpus))
        else:
            devices = (0,)
        return Placement("gpu", devices, max(1, threads // len(devices)))
    processes = request.processes
    if processes > cores:
        warn(f"context.processes asked for {processes} processes; this worker has {cores} CPU cores, so {cores} train.")
        processes = cores
    return Placement("cpu", tuple(range(processes)), max(1, threads // processes))


@dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` 0 is the one that reports and writes."""

    plan: Placement
    rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def world(self) -> int:
        return self.plan.world

    @property
    def device(self) -> int:
        return self.plan.devices[self.rank]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _environment(plan: Placement, rank: int, pretrained: tuple[str, str] | None = None) -> dict[str, str]:
    """What torch.distributed and Lightning read to find their place (Lightning launches nothing when
    ``LOCAL_RANK`` is set), and for geotrain's helpers the plan and rank 0's pretrained package."""
    return {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(plan.port), "WORLD_SIZE": str(plan.world),
        "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0",
        ENV: json.dumps({"plan": asdict(plan), "pretrained": pretrained}),
    }  # fmt: skip


@dataclass(frozen=True)
class Handover:
    """What a helper rank is given by rank 0: the plan, its rank, and the pretrained package rank 0 checked
    (path and label: a portal item rank 0 fetched lies in the job's folder)."""

    plan: Placement
    rank: int
    pretrained: tuple[Path, str] | None


def launch(
    plan: Placement, job_id: str, workdir: Path, pretrained: tuple[Path, str] | None
) -> tuple[Placement, list[subprocess.Popen[bytes]]]:
    """Rank 0: start ranks 1..N-1 of ``plan`` (each logs to ``train.rank<N>.log``); the plan with its port."""
    plan = replace(plan, port=_free_port())
    given = (str(pretrained[0]), pretrained[1]) if pretrained is not None else None
    helpers = []
    for rank in range(1, plan.world):
        with open(workdir / f"train.rank{rank}.log", "ab") as log:
            helpers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "geotrain.training.child", "--rank", str(rank), job_id],
                    env={**os.environ, **_environment(plan, rank, given)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
    return plan, helpers


def handover() -> Handover:
    """A helper rank's plan, rank and pretrained package, as rank 0 handed them over."""
    given = json.loads(os.environ[ENV])
    p = given["plan"]
    pretrained = given.get("pretrained")
    return Handover(
        Placement(p["accelerator"], tuple(p["devices"]), p["threads"], p["port"]),
        int(os.environ["RANK"]),
        (Path(pretrained[0]), str(pretrained[1])) if pretrained else None,
    )


def join(plan: Placement, rank: int) -> Group:
    """This process's place: its threads, its GPU, and where the process group meets. Lightning's DDP
    strategy makes the group when training starts, not before: rank 0's learning-rate finder runs alone
    first (torchmetrics would otherwise sync its metrics with ranks that are not validating)."""
    torch.set_num_threads(plan.threads)
    if plan.accelerator == "gpu":
        torch.cuda.set_device(plan.devices[rank])
    if plan.world > 1:
        os.environ.update(_environment(plan, rank))
    return Group(plan, rank)


def leave(group: Group) -> None:
    if group.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
