"""The memory in use on a worker's GPUs, as the NVIDIA driver reports it (``nvidia-smi``: a worker does not
import torch, and this sees the training processes' memory too)."""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)
QUERY = ["nvidia-smi", "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"]
MIB = 2**20


def gpu_memory(only: set[int] | None = None) -> list[dict[str, int]] | None:
    """Per GPU ({"index", "used", "total"}, bytes), those in ``only`` when given; None when it cannot be read."""
    try:
        out = subprocess.run(QUERY, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("GPU memory not read: %s", exc)
        return None
    found = []
    for line in out.strip().splitlines():
        try:
            index, used, total = (int(float(part.strip())) for part in line.split(","))
        except ValueError:
            continue
        if only is None or index in only:
            found.append({"index": index, "used": used * MIB, "total": total * MIB})
    return found
