"""A batch size that fits the GPU: the requested one when a training step of it fits, else one estimated from
the memory a step of one and of two chips takes (ArcGIS Pro's newer releases estimate one too), before any
epoch is spent on a size that cannot run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torch.utils.data import Dataset

from geotrain.errors import TrainingError

# of the GPU's memory, what a step may plan to use: the rest is the allocator's slack and the validation pass
SHARE = 0.85
# Adam keeps two tensors a trainable weight beside its gradient, which a probe step does not allocate
ADAM_STATES = 2

Probe = Callable[[int], int | None]
"""The peak bytes of one training step with this many chips, or None when it runs out of memory."""


def fitting(total: int, peak_one: int, peak_two: int, requested: int) -> int:
    """The largest batch size below ``requested`` whose step fits ``SHARE`` of ``total`` bytes, a step's peak
    taken as a fixed part plus a part per chip (from steps of one and of two chips)."""
    per_chip = max(peak_two - peak_one, 1)
    fixed = peak_one - per_chip
    return max(1, min(requested - 1, int((SHARE * total - fixed) // per_chip)))


def estimate(requested: int, probe: Probe, total: int, info: Callable[[str], None]) -> int:
    """``requested`` when a step of it fits, else the estimate (said in a message); one chip that does not fit
    fails the job saying what to change."""
    if probe(requested) is not None:
        return requested
    one = probe(1)
    if one is None:
        raise TrainingError(
            "Out of GPU memory even with one chip a batch.",
            ["Use a smaller chip_size or resize_to, a smaller backbone, or a GPU with more memory."],
        )
    two = probe(2) if requested > 2 else None
    size = fitting(total, one, two, requested) if two is not None else 1
    per_chip = f"{(two - one) / 2**20:.0f} MiB a chip" if two is not None else "two chips do not fit"
    info(
        f"Batch size {requested} does not fit the GPU's memory ({total / 2**30:.1f} GiB): training with batch size "
        f"{size}, estimated from a step of one and of two chips ({per_chip})."
    )
    return size


def gpu_probe(
    task: Any, samples: Dataset[Any], collate: Callable[[list[Any]], Any], dtype: torch.dtype | None
) -> Probe:
    """A ``Probe`` running ``task``'s training step on the current GPU with ``samples`` (repeated as needed),
    under autocast to ``dtype`` when training runs in mixed precision."""
    device = torch.device("cuda", torch.cuda.current_device())
    weights = sum(p.numel() * p.element_size() for p in task.parameters() if p.requires_grad)

    def probe(size: int) -> int | None:
        task.to(device).train()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            chips = [samples[i % len(samples)] for i in range(size)]  # type: ignore[arg-type]
            batch = move_data_to_device(collate(chips), device)
            with (
                warnings.catch_warnings(),
                torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
            ):
                warnings.simplefilter("ignore")  # self.log outside a trainer
                loss = task.training_step(batch, 0)
            loss.backward()
            return int(torch.cuda.max_memory_allocated(device)) + ADAM_STATES * int(weights)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            task.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    return probe


def on_gpu(
    task: nn.Module,
    samples: Dataset[Any],
    collate: Callable[[list[Any]], Any],
    dtype: torch.dtype | None,
    requested: int,
    info: Callable[[str], None],
) -> int:
    """``estimate`` with steps on the current GPU; the task is left as it was (a step moves BatchNorm's
    running statistics)."""
    kept = {k: v.detach().clone() for k, v in task.state_dict().items()}
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    try:
        return estimate(requested, gpu_probe(task, samples, collate, dtype), total, info)
    finally:
        task.load_state_dict(kept)
