"""The second task's targets the road extractors derive from a road mask: each road pixel's direction
(MULTITASK_ROADEXTRACTOR) and its connections to road pixels a few pixels away (CONNECTNET)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geotrain.training.fit import PADDING_LABEL
from geotrain.training.roads import DIRECTIONS, REACH, connectivity_target, orientation_target


def _road(angle_degrees: float, size: int = 48) -> torch.Tensor:
    rows, cols = np.mgrid[0:size, 0:size]
    angle = np.deg2rad(angle_degrees)
    # a line through the centre along ``angle`` (0: left to right, 90: top to bottom), 3 pixels wide
    distance = np.abs((rows - size / 2) * np.cos(angle) - (cols - size / 2) * np.sin(angle))
    return torch.from_numpy((distance < 1.5).astype(np.int64))[None]


@pytest.mark.parametrize(("angle", "expected_bin"), [(0, 1), (90, 5), (45, 3), (135, 7), (170, 9)])
def test_a_straight_road_gets_the_bin_of_its_direction_and_off_road_pixels_none(
    angle: float, expected_bin: int
) -> None:
    labels = _road(angle)
    target = orientation_target(labels, 20)
    middle = target[0, 16:32, 16:32][labels[0, 16:32, 16:32] > 0]
    # 20-degree bins from 1: 0-20 is bin 1, 80-100 bin 5, 40-60 bin 3, 120-140 bin 7, 160-180 bin 9
    values, counts = middle.unique(return_counts=True)
    assert int(values[counts.argmax()]) == expected_bin, (values, counts)
    assert (target[labels == 0] == 0).all()


def test_where_two_roads_cross_the_direction_is_left_out() -> None:
    labels = torch.clamp(_road(0) + _road(90), max=1)
    target = orientation_target(labels, 20)
    assert int(target[0, 24, 24]) == PADDING_LABEL
    assert int(target[0, 24, 6]) == 1 and int(target[0, 6, 24]) == 5  # far from the crossing: the road's own


def test_connectivity_links_road_pixels_along_the_road_not_across_it() -> None:
    labels = _road(0)  # left to right, 3 pixels wide: nothing REACH pixels above or below is road
    target = connectivity_target(labels)
    assert target.shape == (1, len(DIRECTIONS), 48, 48)
    east, south = DIRECTIONS.index((0, 1)), DIRECTIONS.index((1, 0))
    assert REACH >= 3
    assert target[0, east, 24, 10] == 1 and target[0, south, 24, 10] == 0
    assert target[0, :, labels[0] == 0].sum() == 0  # off the road: no connection


def test_the_hourglass_is_supervised_at_every_stack_and_predicts_with_its_last() -> None:
    from geotrain.dlpk.prf.geotrain_networks import HourglassRoadNet

    torch.manual_seed(0)
    net = HourglassRoadNet(3, 2, 4, stacks=2, width=16).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        stages, (seg, aux) = net.stages(x), net.both(x)
    assert len(stages) == 2 and stages[0][0].shape == seg.shape == (1, 2, 32, 32) and aux.shape == (1, 4, 32, 32)
    assert torch.allclose(stages[-1][0], seg) and torch.allclose(stages[-1][1], aux)
    assert not torch.allclose(stages[0][0], seg)  # the first stack's own reading, trained too
