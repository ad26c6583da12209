"""The inference function of detection packages: the portable detectors match the trained ones, and the
function runs as ArcGIS drives Detect Objects Using Deep Learning."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geotrain.training.models.detectors import build_detector
from tests import prf


@pytest.mark.parametrize(
    ("model_type", "backbone", "arguments", "emd_keys"),
    [
        ("FASTERRCNN", "RESNET18", {}, {}),
        ("MASKRCNN", "RESNET18", {"pointrend": True, "box_detections_per_img": 20},
         {"MaskRCNNkwargs": {"box_detections_per_img": 20}}),
        ("RETINANET", "RESNET18", {"scales": [1.0, 0.8], "ratios": [0.5, 1.0]}, {}),
        ("SSD", "RESNET18", {"grids": [4, 2], "zooms": [1.0, 0.7], "ratios": [[1.0, 1.0], [1.0, 0.5]]},
         {"Grids": [4, 2], "Zooms": [1.0, 0.7], "Ratios": [[1.0, 1.0], [1.0, 0.5]]}),
        ("SSD", "DENSENET121", {}, {"Grids": [4, 2, 1], "Zooms": [1.0], "Ratios": [[1.0, 1.0]]}),
        ("YOLOV3", "DARKNET53", {"pretrained_backbone": False, "anchors": [[4, 5], [8, 6], [9, 12], [12, 20],
         [20, 14], [24, 24], [30, 40], [44, 30], [60, 60]]}, {}),
    ],
)  # fmt: skip
def test_the_portable_detector_matches_the_trained_one(
    model_type: str, backbone: str, arguments: dict[str, Any], emd_keys: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    built = build_detector(model_type, backbone, 5, 3, "RANDOM", 64, False, arguments)
    params: dict[str, Any] = {"backbone": backbone.lower(), "in_channels": 5, "input_size": 64}
    params |= {k: v for k, v in arguments.items() if k in ("scales", "ratios", "pointrend", "anchors")}
    emd = {"ModelConfiguration": f"geotrain.{model_type.lower()}", "Classes": [{"Value": 1}, {"Value": 2}],
           "ModelParameters": params, **emd_keys}  # fmt: skip
    portable_module = prf.load("geotrain_networks")
    portable = portable_module.detector(emd)
    portable_module.load_weights(portable, built.network.state_dict())
    # untrained scores sit near their 1 % prior: let every box through, so there are detections to compare
    for module in (*built.network.modules(), *portable.modules()):
        if hasattr(module, "score_thresh"):
            module.score_thresh = 0.0
    x = [torch.randn(5, 64, 64), torch.randn(5, 64, 64)]
    with torch.no_grad():
        ours, theirs = built.network.eval()(x), portable.eval()(x)
    assert any(len(found["boxes"]) for found in ours), "a comparison of no detections shows nothing"
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_outlines_follow_pixel_edges_with_holes_turning_the_other_way() -> None:
    detector = prf.load("GeotrainObjectDetector")
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:5, 1:6] = True
    mask[2:4, 3] = False  # a hole
    rings = detector.outline(mask)
    assert len(rings) == 2
    outer = max(rings, key=len)
    assert sorted(map(tuple, outer[:-1])) == [(1.0, 1.0), (1.0, 5.0), (6.0, 1.0), (6.0, 5.0)]
    assert all(ring[0] == ring[-1] for ring in rings)

    def area(ring: list[list[float]]) -> float:  # shoelace: the sign gives the turning direction
        return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring)) / 2

    assert {abs(area(r)) for r in rings} == {20.0, 2.0} and area(rings[0]) * area(rings[1]) < 0
    assert json.dumps(rings)  # plain numbers, as ArcGIS reads them


@pytest.fixture(scope="module")
def maskrcnn_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MASKRCNN+PointRend package of a randomly initialised network: it still proposes objects."""
    from geotrain.dlpk import package

    torch.manual_seed(3)
    few = {"box_detections_per_img": 10}
    built = build_detector("MASKRCNN", "RESNET18", 3, 3, "RANDOM", 64, False, {"pointrend": True, **few})
    emd = {
        "Framework": "PyTorch", "ModelConfiguration": "geotrain.maskrcnn", "ModelType": "InstanceDetection",
        "ModelFile": "m.pth", "InferenceFunction": "GeotrainObjectDetector.py", "ImageHeight": 64, "ImageWidth": 64,
        "ExtractBands": [0, 1, 2], "Classes": [{"Value": 1, "Name": "Palm"}, {"Value": 2, "Name": "Pine"}],
        "ModelParameters": {"backbone": "resnet18", "in_channels": 3, "input_size": 64, "pointrend": True},
        "NormalizationStats": {"band_mean_values": [100.0] * 3, "band_std_values": [50.0] * 3},
        "MaskRCNNkwargs": few,
    }  # fmt: skip
    target = tmp_path_factory.mktemp("maskrcnn") / "m.dlpk"
    package.write(package.PackageContents("m", emd, built.network.state_dict(), b"", b"", [], {}), target)
    return target


def test_instance_outlines_come_back_from_vectorize_run_as_arcgis_runs_it(
    maskrcnn_package: Path, tmp_path: Path
) -> None:
    from geotrain.dlpk import verify

    pixels = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64)).astype(np.uint8)
    features = verify.run_detector(maskrcnn_package, pixels, tmp_path / "run", {"threshold": 0.0, "padding": 0})
    assert features, "a random network still proposes objects"
    for i, feature in enumerate(features, start=1):
        attributes, rings = feature["attributes"], feature["geometry"]["rings"]
        assert attributes["OID"] == i and attributes["Class"] in ("Palm", "Pine")
        assert 0.0 <= attributes["Confidence"] <= 100.0
        assert rings and all(r[0] == r[-1] and len(r) >= 5 for r in rings)
        assert all(0.0 <= x <= 64.0 and 0.0 <= y <= 64.0 for r in rings for x, y in r)


def test_predict_writes_detections_as_geojson_in_the_rasters_coordinates(
    maskrcnn_package: Path, tmp_path: Path
) -> None:
    from geotrain.cli import main
    from tests.exports import write_scene

    image = tmp_path / "scene.tif"
    write_scene(image, np.random.default_rng(4).integers(0, 255, size=(3, 90, 100)).astype(np.uint8))
    out = tmp_path / "found.geojson"
    argv = ["predict", str(maskrcnn_package), str(image), "--out", str(out), "--padding", "16", "--threshold", "0",
            "--device", "-1"]  # fmt: skip
    assert main(argv) == 0
    collection = json.loads(out.read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"]
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    # each object comes from the tile holding its centre, and that centre lies on the raster
    for feature in collection["features"]:
        assert feature["properties"]["Class"] in ("Palm", "Pine") and feature["geometry"]["type"] == "Polygon"
        xs = [x for ring in feature["geometry"]["coordinates"] for x, _ in ring]
        ys = [y for ring in feature["geometry"]["coordinates"] for _, y in ring]
        assert 500_000.0 <= (min(xs) + max(xs)) / 2 < 500_050.0
        assert 4_200_000.0 - 45.0 < (min(ys) + max(ys)) / 2 <= 4_200_000.0
