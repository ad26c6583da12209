"""SIAMMASK's parts: tracks read from an RCNN_Masks export of frames, the windows cut around an object, the
anchors' targets, and the request's window sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geotrain.dlpk.prf.geotrain_networks import SiamMaskNet, SiamTracker, context_side, window_crop
from geotrain.errors import ParameterError
from geotrain.task.params import parse
from geotrain.training.data.export import read_export
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import Scan, scan
from geotrain.training.siammask import TrackingTask, TrackPairs, collate, tracks_of
from tests import formats


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Scan[Any]:
    root = formats.tracks(tmp_path_factory.mktemp("tracks") / "trk", frames=6)
    export = read_export(root)
    return scan(export, reader_for(export).load)


def test_a_track_is_one_instance_id_of_one_class_folder_through_the_frames_in_name_order(scanned: Scan[Any]) -> None:
    tracks = tracks_of(scanned, range(6))
    # Car (class index 1) ids 1 and 2, Boat (class index 2) id 1
    assert [key[1:] for key in sorted(tracks)] == [(1, 1), (1, 2), (2, 1)]
    car = tracks[(str(scanned.items[0].image.parent.parent), 1, 1)]
    assert [s.frame for s in car] == list(range(6))
    names = [scanned.items[s.chip].image.stem for s in car]
    assert names == sorted(names)
    # the first car drives right 3 pixels a frame: its boxes say so
    lefts = [scanned.sample(s.chip)[1]["boxes"][s.instance][0] for s in car]
    assert lefts == [4 + 3 * i for i in range(6)]


def test_a_window_cut_outside_the_frame_holds_the_band_means_and_inside_the_frames_pixels() -> None:
    frame = torch.arange(16.0).view(1, 4, 4)
    inside = window_crop(frame, (2.0, 2.0), 4, 4)
    assert torch.allclose(inside, frame)
    outside = window_crop(frame, (2.0, 2.0), 8, 8)
    assert torch.allclose(outside[0, 2:6, 2:6], frame[0]) and float(outside[0, :2].abs().sum()) == 0


def test_a_search_window_holds_its_object_inside_the_box_given_for_it(scanned: Scan[Any]) -> None:
    tracks = list(tracks_of(scanned, range(6)).values())
    pairs = TrackPairs(scanned, tracks, 32, 64, 20, True, True)
    for i in range(len(pairs)):
        z, x, box, mask = pairs[i]
        assert z.shape == (3, 32, 32) and x.shape == (3, 64, 64) and mask.shape == (64, 64)
        ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
        assert len(xs) > 0
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]


def test_validation_pairs_are_the_same_every_epoch(scanned: Scan[Any]) -> None:
    tracks = list(tracks_of(scanned, range(6)).values())
    pairs = TrackPairs(scanned, tracks, 32, 64, 2, False, False)
    first, again = pairs[3], pairs[3]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_the_loss_is_finite_and_falls_with_optimizer_steps_on_one_batch(scanned: Scan[Any]) -> None:
    torch.manual_seed(0)
    tracks = list(tracks_of(scanned, range(6)).values())
    batch = collate([TrackPairs(scanned, tracks, 32, 64, 20, False, False)[i] for i in range(6)])
    task = TrackingTask(SiamMaskNet("resnet18", 3, 32, 64), 1e-3, freeze=False)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = task._loss(task.network(batch[0], batch[1]), batch[2], batch[3])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_the_tracker_reads_the_exemplar_around_the_box_and_keeps_its_track_inside_the_frame() -> None:
    torch.manual_seed(0)
    net = SiamMaskNet("resnet18", 3, 32, 64).eval()
    frame = torch.randn(3, 48, 48)
    tracker = SiamTracker(net, frame, (40.0, 40.0, 12.0, 8.0))
    assert tracker.centre == (46.0, 44.0) and context_side(12, 8) == pytest.approx(np.sqrt(22 * 18))
    for _ in range(3):
        (x, y, w, h), score, mask = tracker.update(frame)
        assert 0 <= x + w / 2 <= 48 and 0 <= y + h / 2 <= 48 and 0 <= score <= 1
        assert mask.shape == (48, 48) and float(mask.min()) >= 0 and float(mask.max()) <= 1


def _form(**arguments: str) -> dict[str, str]:
    import json

    return {"in_folder": "/fileShares/c/x", "output_name": json.dumps({"serviceProperties": {"name": "x"}}),
            "model_type": "SIAMMASK", "arguments": json.dumps(arguments)}  # fmt: skip


def test_window_sizes_default_to_siammasks_and_follow_the_exemplar_size() -> None:
    assert parse(_form()).windows() == (127, 255)
    assert parse(_form(exemplar_size="32")).windows() == (32, 65)
    assert parse(_form(chip_size="48", instance_size="100")).windows() == (48, 100)
    assert parse(_form(monitor="mIOU")).monitor == "MIOU"


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"exemplar_size": "8"}, "exemplar_size"), ({"exemplar_size": "64", "instance_size": "70"}, "instance_size"),
     ({"frame_range": "-1"}, "frame_range"), ({"monitor": "accuracy"}, "monitor")],
)  # fmt: skip
def test_bad_window_sizes_are_refused_naming_the_argument(arguments: dict[str, str], named: str) -> None:
    with pytest.raises(ParameterError) as caught:
        parse(_form(**arguments))
    assert caught.value.param == "arguments" and named in " ".join(caught.value.details)


def test_each_export_folder_of_a_job_is_a_video_of_its_own(tmp_path: Path) -> None:
    from geotrain.training.data.export import merge_exports

    folders = [formats.tracks(tmp_path / name, frames=3) for name in ("a", "b")]
    export = merge_exports([read_export(f) for f in folders])
    both = scan(export, reader_for(export).load)
    tracks = tracks_of(both, range(len(both.items)))
    # the same names and ids in both folders: six tracks of three frames, not three of six
    assert len(tracks) == 6 and all(len(t) == 3 for t in tracks.values())


def test_a_response_location_is_centred_where_the_exemplar_matches_the_search_window() -> None:
    # SiamMask's sizes: the exemplar's 16-cell map keeps its 7 middle cells (from the 4th on), so the response
    # map's locations are centred 8 px apart from 63.5 - 4 * 8 on (a smaller exemplar's map is all border: its
    # features, padded, cannot match the window's before training)
    exemplar, at = 127, 40
    torch.manual_seed(0)
    net = SiamMaskNet("resnet18", 3, exemplar, 2 * exemplar + 1).eval()
    x = torch.randn(1, 3, 2 * exemplar + 1, 2 * exemplar + 1)
    z = x[..., at : at + exemplar, at : at + exemplar]  # the exemplar: a part of the window, on the stride's grid
    with torch.no_grad():
        kernel = net.template(z)
        search = net.adjust(net.encoder(x)[-1])
    keep = kernel.shape[-1]
    cells = search.shape[-1] - keep + 1
    distance = torch.stack([((search[..., r : r + keep, r : r + keep] - kernel) ** 2).mean() for r in range(cells)])
    assert float(net.centres(cells, x.device)[int(distance.argmin())]) == at + exemplar / 2


def test_an_exemplar_below_17_pixels_is_refused_whether_given_as_exemplar_size_or_chip_size() -> None:
    with pytest.raises(ParameterError) as caught:
        parse({**_form(), "chip_size": "16"})
    assert caught.value.param == "chip_size" and "17 to 512" in " ".join(caught.value.details)
    assert parse({**_form(), "chip_size": "17"}).windows() == (17, 35)
