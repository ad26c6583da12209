"""MMSEGMENTATION and MMDETECTION over HTTP where the server's host has OpenMMLab (the 'openmmlab' extra and mmcv
built with its operators: README's OpenMMLab section); CI has none, so there the jobs are refused at submit, naming
why."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio

from geotrain.dlpk import verify
from geotrain.task import catalog
from tests.conftest import TASK, Server, arcgis_form, in_share, succeeded_package
from tests.exports import ExportSpec, write_classified_tiles

MISSING = catalog.openmmlab_missing("mmseg")


def _submit(client: httpx.Client, server: Server, **values: object) -> dict[str, Any]:
    body: dict[str, Any] = client.post(f"{server.url}{TASK}/submitJob", data=arcgis_form(**values)).json()
    return body


@pytest.mark.skipif(MISSING is not None, reason=f"OpenMMLab is not installed here: {MISSING}")
def test_an_mmsegmentation_job_trains_over_http_and_its_package_classifies_pixels(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    root = Path(server.stores["/fileShares/chips"]) / "mmseg"
    write_classified_tiles(root, ExportSpec(chips=6, size=64, bands=3, dtype="uint8", values=(2, 5), absent=None))
    body = _submit(
        client, server, in_folder="/fileShares/chips/mmseg", output_name=in_share("mmseg"), model_type="MMSEGMENTATION",
        backbone_model="RESNET18", max_epochs=1, learning_rate=0.001, batch_size=2, arguments={"model": "pspnet"},
    )  # fmt: skip
    assert "jobId" in body, body
    package, emd = succeeded_package(client, server, body["jobId"], tmp_path)
    assert emd["ModelName"] == "MMSegmentation" and emd["ModelParameters"]["model"] == "pspnet"
    with rasterio.open(next((root / "images").glob("*.tif"))) as src:
        pixels = src.read()
    (tmp_path / "run").mkdir()
    (output,) = verify.run_functions([(package, pixels, tmp_path / "run")])
    assert output.shape == (1, 64, 64) and set(np.unique(output)) <= {0, 2, 5}


@pytest.mark.skipif(MISSING is None, reason="this host has OpenMMLab: MMSEGMENTATION trains here")
def test_without_openmmlab_an_mmsegmentation_job_is_refused_at_submit_naming_what_is_missing(
    server: Server, client: httpx.Client
) -> None:
    body = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("mmseg"),
        model_type="MMSEGMENTATION",
    )  # fmt: skip
    text = " ".join(body["error"]["details"])
    assert "MMSEGMENTATION" in text and str(MISSING) in text and "'openmmlab' extra" in text


DET_MISSING = catalog.openmmlab_missing("mmdet")


@pytest.mark.skipif(DET_MISSING is not None, reason=f"OpenMMLab is not installed here: {DET_MISSING}")
def test_an_mmdetection_job_trains_over_http_and_its_package_detects_boxes(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    from tests import formats

    root = formats.pascal_voc(Path(server.stores["/fileShares/chips"]) / "mmdet_voc", chips=6, size=48)
    body = _submit(
        client, server, in_folder="/fileShares/chips/mmdet_voc", output_name=in_share("mmdet"),
        model_type="MMDETECTION", backbone_model="RESNET18", max_epochs=1, learning_rate=0.001, batch_size=2,
        arguments={"model": "atss"},
    )  # fmt: skip
    assert "jobId" in body, body
    package, emd = succeeded_package(client, server, body["jobId"], tmp_path)
    with zipfile.ZipFile(package) as zf:
        assert "GeotrainObjectDetector.py" in {Path(n).name for n in zf.namelist()}
    assert (emd["ModelName"], emd["ModelParameters"]["model"]) == ("MMDetection", "atss")
    assert emd["ModelParameters"]["mmdet_model"]["type"] == "ATSS"
    with rasterio.open(root / "images" / "000000000000.jpg") as src:
        pixels = src.read()
    (tmp_path / "run").mkdir()
    (features,) = verify.run_functions([(package, pixels, tmp_path / "run")])
    names = {c["Name"] for c in emd["Classes"]}
    for feature in features:  # polygons in the chip's pixels, a class of the export, confidence in percent
        assert feature["attributes"]["Class"] in names and 0 < feature["attributes"]["Confidence"] <= 100
        ring = np.array(feature["geometry"]["rings"][0])
        assert ring.min() >= 0 and ring.max() <= 48


@pytest.mark.skipif(DET_MISSING is None, reason="this host has OpenMMLab: MMDETECTION trains here")
def test_without_openmmlab_an_mmdetection_job_is_refused_at_submit_naming_what_is_missing(
    server: Server, client: httpx.Client
) -> None:
    body = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("mmdet"),
        model_type="MMDETECTION",
    )  # fmt: skip
    text = " ".join(body["error"]["details"])
    assert "MMDETECTION" in text and str(DET_MISSING) in text and "'openmmlab' extra" in text and "mmdet" in text
