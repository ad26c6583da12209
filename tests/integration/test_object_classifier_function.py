"""The inference function of object classification packages: run as ArcGIS drives Classify Objects Using
Deep Learning, it classifies blocks of any size as the trained network does, and ``geotrain predict``
classifies a GeoJSON's objects over a raster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geotrain.training.classification import build_classifier

NAMES = ["Palm", "Pine", "Oak"]
MEAN, STD = [90.0, 110.0, 70.0, 120.0], [40.0, 30.0, 50.0, 35.0]


def _package(folder: Path, multi_label: bool) -> tuple[Path, torch.nn.Module]:
    from geotrain.dlpk import package

    torch.manual_seed(1)
    built = build_classifier("RESNET18", 4, 3, "RANDOM")
    emd = {
        "Framework": "PyTorch", "ModelConfiguration": "geotrain.feature_classifier",
        "ModelType": "ObjectClassification", "ModelFile": "c.pth", "InferenceFunction": "GeotrainObjectClassifier.py",
        "ImageHeight": 32, "ImageWidth": 32, "ExtractBands": [0, 1, 2, 3], "CropSizeFixed": 1,
        "Classes": [{"Value": v, "Name": n} for v, n in zip((1, 2, 5), NAMES, strict=True)],
        "ModelParameters": {"backbone": "resnet18", "in_channels": 4}, "IsMultiLabel": multi_label,
        "NormalizationStats": {"band_mean_values": MEAN, "band_std_values": STD},
    }  # fmt: skip
    target = folder / "c.dlpk"
    package.write(package.PackageContents("c", emd, built.network.state_dict(), b"", b"", [], {}), target)
    return target, built.network.eval()


def _expected(network: torch.nn.Module, block: np.ndarray, multi_label: bool) -> np.ndarray:
    mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (MEAN, STD))
    x = torch.from_numpy((block.astype(np.float32) - mean) / std)[None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = network(x)[0]
    return (logits.sigmoid() if multi_label else logits.softmax(0)).numpy()


@pytest.mark.parametrize("multi_label", [False, True])
def test_blocks_of_any_size_are_classified_as_the_trained_network_classifies_them(
    tmp_path: Path, multi_label: bool
) -> None:
    from geotrain.dlpk import verify

    package, network = _package(tmp_path, multi_label)
    rng = np.random.default_rng(2)
    blocks = [rng.integers(0, 255, size=(4, rows, cols)).astype(np.uint8) for rows, cols in ((32, 32), (20, 45))]
    threshold = 0.45
    features = verify.run_object_classifier(package, blocks, tmp_path / "run", {"threshold": threshold})
    assert [f["attributes"]["OID"] for f in features] == [1, 2]
    for feature, block in zip(features, blocks, strict=True):
        p = _expected(network, block, multi_label)
        attributes = feature["attributes"]
        if multi_label:  # every class at the threshold or above, with its probability in percent
            chosen = [j for j in range(3) if p[j] >= threshold]
            assert attributes["Label"] == ";".join(NAMES[j] for j in chosen)
            confidences = [float(v) for v in str(attributes["Confidence"]).split(";") if v]
            assert np.allclose(confidences, [100 * p[j] for j in chosen], atol=0.01)
        else:
            assert attributes["Class"] == attributes["Label"] == NAMES[int(p.argmax())]
            assert abs(attributes["Confidence"] - 100 * float(p.max())) < 1e-3
        rows, cols = block.shape[1:]
        assert feature["geometry"]["rings"] == [[[0, 0], [cols, 0], [cols, rows], [0, rows], [0, 0]]]


def test_predict_classifies_each_object_of_a_geojson_over_the_raster(tmp_path: Path) -> None:
    from geotrain.cli import main
    from tests.exports import write_scene

    package, network = _package(tmp_path, False)
    image = tmp_path / "scene.tif"
    # no zeros: GDAL reads a 4-band byte GeoTIFF's last band as alpha, and masks its zeros
    pixels = np.random.default_rng(5).integers(1, 255, size=(4, 80, 100)).astype(np.uint8)
    transform = write_scene(image, pixels)

    def square(col: int, row: int, side: int) -> list[list[float]]:
        corners = [(col, row), (col + side, row), (col + side, row + side), (col, row + side), (col, row)]
        return [list(transform * c) for c in corners]

    objects = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": i}, "geometry": {"type": "Polygon", "coordinates": [square(*placed)]}}
        for i, placed in ((7, (30, 20, 10)), (8, (60, 40, 16)))
    ]}  # fmt: skip
    given = tmp_path / "objects.geojson"
    given.write_text(json.dumps(objects))
    out = tmp_path / "classified.geojson"
    argv = ["predict", str(package), str(image), "--features", str(given), "--out", str(out), "--device", "-1"]
    assert main(argv) == 0
    found = json.loads(out.read_text())
    assert found["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    # CropSizeFixed 1: a chip of the model's 32 px centred on each object
    for feature, given_feature, (col, row, side) in zip(
        found["features"], objects["features"], ((30, 20, 10), (60, 40, 16)), strict=True
    ):
        assert feature["geometry"] == given_feature["geometry"]
        assert feature["properties"]["id"] == given_feature["properties"]["id"]
        top, left = row + side // 2 - 16, col + side // 2 - 16
        chip = np.zeros((4, 32, 32), dtype=np.uint8)  # read beyond the raster as zero
        inside = pixels[:, max(top, 0) : top + 32, max(left, 0) : left + 32]
        chip[:, max(-top, 0) : max(-top, 0) + inside.shape[1], max(-left, 0) : max(-left, 0) + inside.shape[2]] = inside
        p = _expected(network, chip, False)
        assert feature["properties"]["Class"] == NAMES[int(p.argmax())]
        assert abs(feature["properties"]["Confidence"] - 100 * float(p.max())) < 1e-3
