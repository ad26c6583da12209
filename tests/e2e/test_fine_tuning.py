"""pretrained_model over HTTP: fine-tuning from a package a job wrote, and the packages that are refused."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TASK, Server, arcgis_form, in_share, in_share_json, wait_for

BASE = {
    "in_folder": "/fileShares/chips/rgb8", "model_type": "UNET", "backbone_model": "RESNET18", "max_epochs": 1,
    "learning_rate": 0.001, "batch_size": 2,
}  # fmt: skip


def _submit(client: httpx.Client, server: Server, **values: object) -> dict[str, Any]:
    body: dict[str, Any] = client.post(server.url + TASK + "/submitJob", data=arcgis_form(**values)).json()
    return body


def _run(client: httpx.Client, server: Server, **values: object) -> dict[str, Any]:
    body = _submit(client, server, **values)
    assert "jobId" in body, body
    return wait_for(client, f"{server.url}{TASK}/jobs/{body['jobId']}")


@pytest.fixture(scope="module")
def base_package(server: Server, store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UNET package on RESNET18 in the server's file share, at /fileShares/geotrain/models/base/base.dlpk.
    Trained in this process with the same training run a job uses: these tests are about what the server does
    with a package, and a job over HTTP would cost seconds more."""
    from geotrain.config import Settings
    from geotrain.task.params import parse
    from geotrain.training.run import Progress, train

    settings = Settings(home=server.home, data_stores={"/fileShares/chips": store_root}, check_packages=False)
    form = {**{k: str(v) for k, v in BASE.items()}, "output_name": in_share_json("base")}
    quiet = Progress(lambda text: None, lambda text: None, lambda pct, text: None)
    train(parse(form), settings, tmp_path_factory.mktemp("base"), quiet)
    return server.home / "fileshare" / "models" / "base" / "base.dlpk"


def _texts(job: dict[str, Any]) -> list[str]:
    return [str(m["description"]) for m in job["messages"]]


def test_a_job_fine_tunes_from_a_package_with_its_backbone(
    server: Server, client: httpx.Client, base_package: Path
) -> None:
    values = {**BASE, "backbone_model": ""}  # the package's backbone is used
    job = _run(client, server, **values, output_name=in_share("tuned"),
               pretrained_model={"uri": "/fileShares/geotrain/models/base/base.dlpk"})  # fmt: skip
    assert job["jobStatus"] == "esriJobSucceeded", job["messages"]
    loaded = [t for t in _texts(job) if t.startswith("Fine-tuning from '/fileShares/geotrain/models/base/base.dlpk'")]
    assert loaded and " of " in loaded[0] and "start afresh" not in loaded[0], _texts(job)
    with zipfile.ZipFile(server.home / "fileshare" / "models" / "tuned" / "tuned.dlpk") as zf:
        assert json.loads(zf.read("tuned.emd"))["ModelParameters"]["backbone"] == "resnet18"
        # a job over HTTP ships the inference function and what it loads
        assert {"GeotrainPixelClassifier.py", "geotrain_networks.py", "geotrain_runtime.py"} <= set(zf.namelist())


def _package_like(base: Path, target: Path, replace: dict[str, bytes]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, replace.pop(name, src.read(name)))
        for name, data in replace.items():
            dst.writestr(name, data)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_weights_that_carry_code_fail_the_job_and_the_code_never_runs(
    server: Server, client: httpx.Client, base_package: Path, store_root: Path, tmp_path: Path
) -> None:
    import torch

    marker = tmp_path / "code-ran"
    weights = tmp_path / "evil.pth"
    torch.save({"encoder.conv1.weight": _Payload(marker)}, weights)
    _package_like(base_package, store_root / "evil" / "evil.dlpk", {"base.pth": weights.read_bytes()})
    job = _run(client, server, **BASE, output_name=in_share("evil_tuned"),
               pretrained_model='{"uri": "/fileShares/chips/evil/evil.dlpk"}')  # fmt: skip
    assert job["jobStatus"] == "esriJobFailed"
    assert any("pretrained_model: the weights in '/fileShares/chips/evil/evil.dlpk' are not plain tensors" in t
               for t in _texts(job)), _texts(job)  # fmt: skip
    assert not marker.exists()


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("escape", "would be written outside its folder"),
        ("foreign", "was not trained by geotrain"),
        ("pspnet", "is a PSPNET model; this job trains UNET"),
        ("missing", "there is no package at"),
    ],
)
def test_unusable_packages_are_refused_at_submit_naming_pretrained_model(
    server: Server, client: httpx.Client, base_package: Path, store_root: Path, case: str, problem: str
) -> None:
    with zipfile.ZipFile(base_package) as zf:
        emd = json.loads(zf.read("base.emd"))
    target = store_root / "bad" / f"{case}.dlpk"
    if case == "escape":
        _package_like(base_package, target, {"../../escaped.txt": b"x"})
    elif case == "foreign":  # arcgis.learn's own EMD: its weights fit arcgis.learn's network, not geotrain's
        emd.update(Framework="arcgis.learn.models._inferencing", ModelConfiguration="_unet")
        _package_like(base_package, target, {"base.emd": json.dumps(emd).encode()})
    elif case == "pspnet":
        emd["ModelConfiguration"] = "geotrain.pspnet"
        _package_like(base_package, target, {"base.emd": json.dumps(emd).encode()})
    body = _submit(client, server, **BASE, output_name={"uri": f"/fileShares/geotrain/models/bad_{case}"},
                   pretrained_model={"uri": f"/fileShares/chips/bad/{case}.dlpk"})  # fmt: skip
    assert "jobId" not in body, body
    detail = body["error"]["details"][0]
    assert "'pretrained_model'" in detail and problem in detail, detail
    assert not (store_root.parent / "escaped.txt").exists()


def test_a_backbone_other_than_the_packages_is_refused(
    server: Server, client: httpx.Client, base_package: Path
) -> None:
    body = _submit(client, server, **{**BASE, "backbone_model": "RESNET34"}, output_name=in_share("other"),
                   pretrained_model={"uri": "/fileShares/geotrain/models/base/base.dlpk"})  # fmt: skip
    detail = body["error"]["details"][0]
    assert "'backbone_model'" in detail and "RESNET18" in detail, detail


def test_a_portal_item_that_is_not_there_is_refused_at_submit(server: Server, client: httpx.Client) -> None:
    missing = "0123456789abcdef0123456789abcdef"
    for given in ({"itemId": missing}, {"url": f"{server.url}/portal/sharing/rest/content/items/{missing}/data"}):
        body = _submit(client, server, **BASE, output_name=in_share("item"),
                       pretrained_model=given)  # fmt: skip
        detail = body["error"]["details"][0]
        assert "'pretrained_model'" in detail and f"no Deep Learning Package item '{missing}'" in detail, detail
    body = _submit(client, server, **BASE, output_name=in_share("item"),
                   pretrained_model={"url": "https://example.com/model.dlpk"})  # fmt: skip
    assert "is not a portal item's URL" in body["error"]["details"][0]


QUERY = "/arcgis/rest/services/System/RasterAnalysisTools/GPServer/QueryDeepLearningModelInfo"


def test_query_deep_learning_model_info_reads_a_package_as_the_arcgis_client_expects(
    server: Server, client: httpx.Client, base_package: Path
) -> None:
    import importlib.util

    model = json.dumps({"uri": "/fileShares/geotrain/models/base/base.dlpk"})
    body = client.post(server.url + QUERY + "/submitJob", data={"model": model, "f": "json"}).json()
    job = wait_for(client, f"{server.url}{QUERY}/jobs/{body['jobId']}")
    assert job["jobStatus"] == "esriJobSucceeded" and "outModelInfo" in job["results"]
    result = client.get(f"{server.url}{QUERY}/jobs/{body['jobId']}/results/outModelInfo", params={"f": "json"}).json()
    assert result["paramName"] == "outModelInfo" and result["dataType"] == "GPString"
    info = json.loads(result["value"]["modelInfo"])  # as arcgis.learn's Model.query_info reads it
    with zipfile.ZipFile(base_package) as zf:
        emd = json.loads(zf.read("base.emd"))
    assert info["ModelType"] == "ImageClassification" and info["Classes"] == emd["Classes"]
    assert info["InferenceFunction"] == "GeotrainPixelClassifier.py" and info["ExtractBands"] == [0, 1, 2]
    # the arguments listed are the ones the package's own function offers, with the same defaults
    prf = Path(__file__).parents[2] / "src" / "geotrain" / "dlpk" / "prf" / "GeotrainPixelClassifier.py"
    spec = importlib.util.spec_from_file_location("prf_under_test", prf)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = module.GeotrainPixelClassifier()
    function.emd = emd
    offered = [{k: p[k] for k in ("name", "dataType", "value")} for p in function.getParameterInfo()[2:]]
    assert info["ModelArguments"] == offered


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ('{"uri": "/fileShares/geotrain/models/none.dlpk"}', "there is no model at"),
        ('{"uri": "/fileShares/../etc/passwd"}', "Invalid value for parameter 'model'"),
        ('{"itemId": "abc"}', "no Deep Learning Package item 'abc'"),
        ("", "a model is required"),
    ],
)
def test_query_refuses_a_model_it_cannot_read_naming_the_parameter(
    server: Server, client: httpx.Client, model: str, problem: str
) -> None:
    body = client.post(server.url + "/QueryDeepLearningModelInfo/submitJob", data={"model": model, "f": "json"}).json()
    detail = body["error"]["details"][0]
    assert "'model'" in detail and problem in detail, detail
