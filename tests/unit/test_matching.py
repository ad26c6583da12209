"""The Hungarian algorithm pairs queries with targets at the least total cost, where greedy pairing does not."""

from __future__ import annotations

from pathlib import Path

import torch

from geotrain.dlpk.prf.geotrain_networks import greedy_match
from geotrain.training.matching import hungarian
from geotrain.training.models.detectors import build_detector


def test_the_least_total_cost_is_found_where_taking_the_cheapest_pair_first_misses_it() -> None:
    # greedy takes (0, 0) at cost 1, then must pay 10 for (1, 1): 11; the best is (0, 1) + (1, 0) = 2 + 2
    cost = torch.tensor([[1.0, 2.0], [2.0, 10.0]])
    rows, cols = hungarian(cost)
    assert sorted(zip(rows, cols, strict=True)) == [(0, 1), (1, 0)]
    greedy = greedy_match(cost)
    assert float(cost[greedy].sum()) == 11.0 and float(cost[rows, cols].sum()) == 4.0


def test_detr_trains_with_the_hungarian_algorithm_and_its_package_network_does_not_need_scipy() -> None:
    built = build_detector("DETREG", "RESNET18", 3, 3, "RANDOM", 64, False, {})
    assert built.network.match is hungarian
    shipped = Path(greedy_match.__code__.co_filename).read_text(encoding="utf-8")
    assert "match" not in built.network.state_dict() and "import scipy" not in shipped and "from scipy" not in shipped


def test_costs_that_are_not_numbers_are_paired_last_instead_of_failing_the_step() -> None:
    cost = torch.tensor([[float("nan"), 1.0], [2.0, float("inf")], [0.5, float("-inf")]])
    rows, cols = hungarian(cost)
    assert len(rows) == 2 and sorted(cols) == [0, 1] and (0, 0) not in set(zip(rows, cols, strict=True))
