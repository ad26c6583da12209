"""One-to-one matching of predictions (queries) to targets at the least total cost: the Hungarian algorithm, as
DETR and MaX-DeepLab match, through scipy's ``linear_sum_assignment``. Training only: the packages' networks
never match (they predict), so the file shipped in them does not need scipy."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

HIGHEST = 1e9  # what a cost that is not a number counts as


def hungarian(cost: torch.Tensor) -> tuple[list[int], list[int]]:
    """Rows (queries) and columns (targets) paired one to one, min(rows, cols) pairs, the sum of their costs
    the least there is. Costs that are not numbers (a diverging step, as the learning-rate finder provokes) count
    as the dearest: scipy refuses them, and the step's loss says what went wrong."""
    finite = torch.nan_to_num(cost.detach().float(), nan=HIGHEST, posinf=HIGHEST, neginf=-HIGHEST)
    rows, cols = linear_sum_assignment(finite.clamp(-HIGHEST, HIGHEST).cpu().numpy())
    return [int(r) for r in rows], [int(c) for c in cols]
