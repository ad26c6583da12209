"""MAXDEEPLAB's pieces: segments from an export's labels, query matching, panoptic quality."""

from __future__ import annotations

import numpy as np
import torch

from geotrain.training.panoptic import PanopticCounts, match, segments


def _target() -> dict[str, np.ndarray]:
    semantic = np.zeros((8, 8), np.int64)
    semantic[:, :2] = 2  # stuff
    semantic[4:8, 4:8] = 1  # under the two palms
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 4:6, 4:8] = 1
    masks[1, 6:8, 4:8] = 1
    return {"semantic": semantic, "masks": masks, "labels": np.array([1, 1])}


def test_segments_are_the_instances_then_each_stuff_class_outside_them() -> None:
    classes, masks = segments(_target(), things={1})
    assert classes.tolist() == [1, 1, 2] and masks.shape == (3, 8, 8)
    assert masks[2].sum() == 16 and not (masks[2] & masks[0]).any()


def test_each_segment_gets_one_query_at_the_least_total_cost() -> None:
    cost = torch.tensor([[0.9, 0.1], [0.2, 0.05], [0.5, 0.5]])
    queries, found = match(cost)
    # 0.1 + 0.2: taking the cheapest pair (1, 1) first would leave 0.5 for segment 0 (0.55 in all)
    assert list(zip(queries, found, strict=True)) == [(0, 1), (1, 0)]


def test_panoptic_quality_counts_iou_over_half_as_a_match_and_leaves_nodata_out() -> None:
    target = _target()
    classes, masks = (torch.from_numpy(a) for a in segments(target, things={1}))
    semantic = torch.from_numpy(target["semantic"])
    perfect = torch.zeros(1, 2, 8, 8, dtype=torch.long)
    for n, (c, m) in enumerate(zip(classes, masks, strict=True), start=1):
        perfect[0, 0][m.bool()], perfect[0, 1][m.bool()] = int(c), n
    counts = PanopticCounts(2)
    counts.update(perfect, [classes], [masks.float()], semantic[None])
    assert counts.compute()[1:].tolist() == [1.0, 1.0]
    # the second palm missed and a stray segment on NoData pixels only: a false negative, no false positive
    worse = perfect.clone()
    worse[0, :, 6:8, 4:8] = 0
    worse[0, 0, 0:2, 3:5], worse[0, 1, 0:2, 3:5] = 1, 9
    counts = PanopticCounts(2)
    counts.update(worse, [classes], [masks.float()], semantic[None])
    quality = counts.compute()
    assert quality[1].item() == 1.0 / (1 + 0.5) and quality[2].item() == 1.0
