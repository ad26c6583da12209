"""How many training processes a job asks for, from its ``context``: the ArcGIS GPU ID environment
(``gpuId``), geotrain's ``gpus`` (a count, ``"all"`` or a list of GPU ids) and, for CPU training,
``processes``. The shapes are checked at submit; what the worker's host has is checked when it trains.

Torch-free: the API checks requests with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ArcGIS Pro trains these on every GPU there is unless the GPU ID environment names one
# (Train Deep Learning Model's usage notes); the others train on one GPU
ALL_GPUS_BY_DEFAULT = frozenset(
    {"CONNECTNET", "FEATURE_CLASSIFIER", "MASKRCNN", "MULTITASK_ROADEXTRACTOR", "SSD", "UNET"}
)
# more CPU processes than this is never faster on one host: each needs its own copy of the model
MAX_PROCESSES = 64


@dataclass(frozen=True)
class Parallelism:
    """A job's request. ``gpu_ids``: the GPUs named (gpuId, or gpus as a list); ``gpu_count``: gpus as a
    number (``"all"``: None with ``all_gpus``); ``processes``: CPU training processes."""

    gpu_ids: tuple[int, ...] | None = None
    gpu_count: int | None = None
    all_gpus: bool | None = None  # None: the model type's default
    processes: int = 1


def _whole(value: Any, low: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and value >= low else None


def parallelism(context: dict[str, Any]) -> Parallelism:
    """The request in ``context``; ValueError naming the key and what it allows."""
    gpu_id, gpus, processes = context.get("gpuId"), context.get("gpus"), context.get("processes")
    if gpu_id not in (None, "") and gpus not in (None, ""):
        raise ValueError("give gpuId (one GPU) or gpus (several), not both")
    request = Parallelism()
    if gpu_id not in (None, ""):
        number = _whole(gpu_id, 0)
        if number is None:
            raise ValueError(f"gpuId '{gpu_id}' is not allowed. Allowed: a GPU number from 0")
        request = Parallelism(gpu_ids=(number,), all_gpus=False)
    elif gpus not in (None, ""):
        if isinstance(gpus, str) and gpus.strip().lower() == "all":
            request = Parallelism(all_gpus=True)
        elif isinstance(gpus, list):
            ids = [_whole(g, 0) for g in gpus]
            if not ids or None in ids or len(set(ids)) != len(ids):
                raise ValueError(f"gpus {gpus} is not allowed. Allowed: a list of different GPU numbers from 0")
            request = Parallelism(gpu_ids=tuple(i for i in ids if i is not None), all_gpus=False)
        else:
            count = _whole(gpus, 1)
            if count is None:
                raise ValueError(
                    f"gpus '{gpus}' is not allowed. Allowed: how many GPUs (1 or more), "
                    '"all", or a list of GPU numbers'
                )
            request = Parallelism(gpu_count=count, all_gpus=False)
    if processes not in (None, ""):
        count = _whole(processes, 1)
        if count is None or count > MAX_PROCESSES:
            raise ValueError(
                f"processes '{processes}' is not allowed. Allowed: a whole number from 1 to {MAX_PROCESSES}"
            )
        request = Parallelism(request.gpu_ids, request.gpu_count, request.all_gpus, count)
    return request
