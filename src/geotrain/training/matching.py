"""One-to-one matching of predictions (queries) to targets at the least total cost: the Hungarian algorithm, as
DETR and MaX-DeepLab match, through scipy's ``linear_sum_assignment``. Training only: the packages' networks
never match (they predict), so the file shipped in them does not need scipy."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def hungarian(cost: torch.Tensor) -> tuple[list[int], list[int]]:
    """Rows (queries) and columns (targets) paired one to one, min(rows, cols) pairs, the sum of their costs
    the least there is."""
    rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
    return [int(r) for r in rows], [int(c) for c in cols]
