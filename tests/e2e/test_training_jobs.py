"""Training jobs end to end over real HTTP: submit -> queue -> worker -> trained UNET -> .dlpk."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import segmentation_models_pytorch as smp
import torch

from tests.conftest import TASK, Server, arcgis_form, in_share, wait_for
from tests.exports import ExportSpec, write_classified_tiles


def _submit(client: httpx.Client, server: Server, **values: object) -> str:
    response = client.post(server.url + TASK + "/submitJob", data=arcgis_form(**values))
    body = response.json()
    assert "jobId" in body, body
    assert body["jobStatus"] == "esriJobSubmitted"
    return str(body["jobId"])


def _local(server: Server, uri: str) -> Path:
    assert uri.startswith("/fileShares/geotrain/")
    return server.home / "fileshare" / uri.removeprefix("/fileShares/geotrain/")


def _trained(client: httpx.Client, server: Server, job_id: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for the job to succeed; the EMD and the weights (loaded weights_only) of the package it wrote."""
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    assert job["jobStatus"] == "esriJobSucceeded", job["messages"]
    uri = client.get(f"{server.url}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()["value"]["uri"]
    with zipfile.ZipFile(_local(server, uri)) as zf:
        emd = json.loads(zf.read(f"{name}.emd"))
        weights = torch.load(io.BytesIO(zf.read(f"{name}.pth")), weights_only=True)
    return emd, weights


def test_arcgis_form_trains_unet_and_writes_a_dlpk_whose_weights_load(server: Server, client: httpx.Client) -> None:
    job_id = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("water_unet"),
        model_type="UNET", arguments={"class_balancing": "True"}, batch_size=4, max_epochs=2, learning_rate=0.003,
        backbone_model="RESNET18", stop_training=True, freeze_model=True, overwrite_model=False,
    )  # fmt: skip
    assert len(job_id) == 33 and job_id[0] == "j" and int(job_id[1:], 16) >= 0
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    assert texts[0] == "Submitted." and texts[1] == "Executing..."
    epochs = [t for t in texts if t.startswith("Epoch ")]
    assert len(epochs) == 2 and "train_loss" in epochs[0] and "valid_loss" in epochs[0] and "accuracy" in epochs[0]
    # each epoch's duration and the training phase's speed, validation timed apart
    timing = re.search(r"; ([0-9.]+) s \(training ([0-9.]+) images/s, validation ([0-9.]+) s\)$", epochs[1])
    assert timing is not None, epochs[1]
    seconds, speed, validation = (float(g) for g in timing.groups())
    assert speed > 0 and 0 <= validation < seconds
    engine = [t for t in texts if t.startswith("Engine: CPU, 32-true precision, batch size 4, 0 data-loader")]
    assert len(engine) == 1 and "channels-last memory format" in engine[0], texts
    assert job["results"] == {"out_item": {"paramUrl": "results/out_item"}}
    assert "progress" not in job
    assert job["inputs"]["in_folder"] == {"paramUrl": "inputs/in_folder"}

    result = client.get(f"{server.url}{TASK}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()
    assert result["paramName"] == "out_item" and result["dataType"] == "GPString"
    uri = result["value"]["uri"]
    assert uri == "/fileShares/geotrain/models/water_unet/water_unet.dlpk"
    # the same job under the short layouts
    assert client.get(f"{server.url}/jobs/{job_id}", params={"f": "json"}).json()["jobStatus"] == "esriJobSucceeded"
    short = client.get(
        f"{server.url}/TrainDeepLearningModel/jobs/{job_id}/results/out_item", params={"f": "json"}
    ).json()
    assert short["value"]["uri"] == uri

    with zipfile.ZipFile(_local(server, uri)) as zf:
        names = zf.namelist()
        emds = [n for n in names if n.endswith(".emd")]
        assert emds == ["water_unet.emd"]
        emd = json.loads(zf.read(emds[0]))
        weights = torch.load(__import__("io").BytesIO(zf.read(emd["ModelFile"])), weights_only=True)
        assert zf.read("ModelCharacteristics/loss_graph.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert emd["ModelType"] == "ImageClassification" and emd["ModelName"] == "UnetClassifier"
    assert emd["ModelParameters"]["backbone"] == "resnet18"
    assert emd["ExtractBands"] == [0, 1, 2, 3] and emd["ImageHeight"] == 32 and emd["ImageWidth"] == 32
    assert [(c["Value"], c["Name"]) for c in emd["Classes"]] == [(3, "Water"), (7, "Building"), (9, "Road")]
    assert emd["Classes"][0]["Color"] == [0, 112, 255] and all(0 <= v <= 255 for v in emd["Classes"][1]["Color"])
    assert 0.0 <= float(emd["accuracy"]) <= 1.0
    per_class = json.loads(emd["per_class_metrics"])
    assert set(per_class) == {"NoData", "Water", "Building", "Road"}
    assert set(per_class["Water"]) == {"precision", "recall", "f1"}

    fresh = smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=4, classes=4)
    fresh.load_state_dict(weights, strict=True)
    assert torch.equal(fresh.state_dict()["segmentation_head.0.weight"], weights["segmentation_head.0.weight"])


def test_official_arcgis_client_runs_the_task_and_no_rate_given_runs_the_rate_finder(
    server: Server, client: httpx.Client
) -> None:
    """The GP service alone (no portal), through arcgis's import_toolbox; learning_rate 0 means "find it"."""
    from arcgis.geoprocessing import import_toolbox

    toolbox = import_toolbox(f"{server.url}/arcgis/rest/services/System/RasterAnalysisTools/GPServer", gis=None)
    running = toolbox.train_deep_learning_model(
        in_folder="/fileShares/chips/rgb8", output_name={"uri": "/fileShares/chips/models/lrf"}, model_type="UNET",
        backbone_model="RESNET18", max_epochs=1, learning_rate=0, batch_size=2, data_augmentation="NONE",
        future=True,
    )  # fmt: skip
    assert running.result() == {"uri": "/fileShares/chips/models/lrf/lrf.dlpk"}
    job = client.get(f"{server.url}/jobs/{running._jobid}", params={"f": "json"}).json()
    chosen = [m["description"] for m in job["messages"] if m["description"].startswith("The learning-rate finder")]
    assert len(chosen) == 1, job["messages"]
    with zipfile.ZipFile(Path(server.stores["/fileShares/chips"]) / "models" / "lrf" / "lrf.dlpk") as zf:
        emd = json.loads(zf.read("lrf.emd"))
    assert float(emd["LearningRate"]) == pytest.approx(float(chosen[0].rsplit(" ", 1)[1].rstrip(".")), rel=1e-3)


def test_the_same_job_runs_on_postgresql_with_a_separate_worker_woken_by_notify(
    tmp_path: Path, store_root: Path, pg_url: str, client: httpx.Client
) -> None:
    """The API alone, and `geotrain worker` in a process of its own that polls only every 30 s and
    heartbeats every 20 s: LISTEN/NOTIFY starts a submitted job, and stops a cancelled one, within moments."""
    import psycopg

    env = {**os.environ, "GEOTRAIN_DATABASE_URL": pg_url, "GEOTRAIN_HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-m", "geotrain.cli", "migrate"], env=env, check=True)
    server = Server(
        home=tmp_path / "home", stores={"/fileShares/chips": str(store_root)}, database_url=pg_url, workers=0
    ).start()
    slow = {"GEOTRAIN_POLL_SECONDS": "30", "GEOTRAIN_HEARTBEAT_SECONDS": "20", "GEOTRAIN_LEASE_SECONDS": "90"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "geotrain.cli", "worker"], env={**server.env(), **slow},
        stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    try:
        time.sleep(3)  # the worker has looked at the empty queue and waits
        job_id = _submit(
            client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("pg_unet"),
            model_type="UNET", backbone_model="RESNET18", max_epochs=1, learning_rate=0.001,
        )  # fmt: skip
        assert _seconds_until(client, f"{server.url}/jobs/{job_id}", "esriJobExecuting") < 1.5
        job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
        assert job["jobStatus"] == "esriJobSucceeded", job["messages"]

        with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as conn:
            status, attempts = conn.execute("SELECT status, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone()  # type: ignore[misc]
            n_messages = conn.execute("SELECT count(*) FROM job_messages WHERE job_id = %s", (job_id,)).fetchone()[0]  # type: ignore[index]
        assert (status, attempts) == ("esriJobSucceeded", 1)
        assert n_messages == len(job["messages"])
        assert not (tmp_path / "home" / "geotrain.db").exists()

        long_id = _submit(
            client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("pg_long"),
            model_type="UNET", backbone_model="RESNET18", max_epochs=5000, learning_rate=0.001,
        )  # fmt: skip
        _first_epoch(client, f"{server.url}/jobs/{long_id}")
        # every connection to the database dropped at once (as in a failover): training and its messages go on
        with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert dropped is not None and dropped[0] >= 2  # the worker's, its listener's, the training process's
        _messages_until(client, f"{server.url}/jobs/{long_id}", "Epoch 3/")
        assert (
            client.get(f"{server.url}/jobs/{long_id}", params={"f": "json"}).json()["jobStatus"] == "esriJobExecuting"
        )
        client.post(f"{server.url}/jobs/{long_id}/cancel", data={"f": "json"})
        assert _seconds_until(client, f"{server.url}/jobs/{long_id}", "esriJobCancelled") < 5
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        server.stop()


def _seconds_until(client: httpx.Client, url: str, status: str) -> float:
    """Seconds from now until the job's status is ``status``, polled every 50 ms."""
    start = time.monotonic()
    while time.monotonic() - start < 60:
        if client.get(url, params={"f": "json"}).json()["jobStatus"] == status:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not {status} in 60 s")


def test_cancel_during_training_ends_cancelled_and_kills_the_training_process(
    server: Server, client: httpx.Client
) -> None:
    job_id = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("cancelled"),
        model_type="UNET", backbone_model="RESNET18", max_epochs=5000, learning_rate=0.001, stop_training=False,
    )  # fmt: skip
    url = f"{server.url}{TASK}/jobs/{job_id}"
    job = _first_epoch(client, url)
    assert job["jobStatus"] == "esriJobExecuting" and "progress" in job
    assert job["progress"]["type"] == "default" and 0 < job["progress"]["percentage"] < 100
    with sqlite3.connect(server.home / "geotrain.db") as db:
        (pid,) = db.execute("SELECT child_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert pid and _alive(pid)

    cancelling = client.get(url + "/cancel", params={"f": "json"}).json()
    assert cancelling["jobStatus"] in ("esriJobCancelling", "esriJobCancelled")
    job = wait_for(client, url, timeout=30)
    assert job["jobStatus"] == "esriJobCancelled"
    assert not _alive(pid)
    assert not (server.home / "fileshare" / "models" / "cancelled").exists()
    again = client.post(url + "/cancel", data={"f": "json"}).json()
    assert again["jobStatus"] == "esriJobCancelled"


def _first_epoch(client: httpx.Client, url: str) -> dict[str, Any]:
    """Poll until the job reports its first epoch: training is under way."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(url, params={"f": "json"}).json()
        if any(m["description"].startswith("Epoch 1/") for m in job["messages"]):
            return job
        time.sleep(0.2)
    raise AssertionError(f"no epoch finished in 120 s: {job}")


def _messages_until(client: httpx.Client, url: str, prefix: str, after: str = "") -> list[str]:
    """Poll until a job message starts with ``prefix`` (after the first one starting with ``after``); all
    the messages then."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        texts = [m["description"] for m in client.get(url, params={"f": "json"}).json()["messages"]]
        start = next((i for i, t in enumerate(texts) if t.startswith(after)), len(texts))
        if any(t.startswith(prefix) for t in texts[start:]):
            return texts
        time.sleep(0.2)
    raise AssertionError(f"no message {prefix!r} in 120 s")


def _checkpointed(client: httpx.Client, url: str, last: Path, epochs: int) -> None:
    """Poll until the job's last checkpoint holds ``epochs`` finished epochs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if int(torch.load(last, map_location="cpu", weights_only=True)["epoch"]) + 1 >= epochs:
                return
        except (FileNotFoundError, RuntimeError, EOFError, KeyError):
            pass  # not there yet, or being written
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of epoch {epochs} in 120 s: {client.get(url, params={'f': 'json'}).json()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; only its parent's bookkeeping is left
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def test_a_corrupt_chip_fails_the_job_naming_the_file(server: Server, client: httpx.Client) -> None:
    root = write_classified_tiles(Path(server.stores["/fileShares/chips"]) / "corrupt", ExportSpec(chips=4))
    bad = sorted((root / "images").glob("*.tif"))[2]
    bad.write_bytes(bad.read_bytes()[:300] + b"\x00garbage" * 50)
    job_id = _submit(
        client, server, in_folder="/fileShares/chips/corrupt", output_name=in_share("corrupt"),
        model_type="UNET", backbone_model="RESNET18", max_epochs=1, learning_rate=0.001,
    )  # fmt: skip
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    assert job["jobStatus"] == "esriJobFailed"
    errors = [m["description"] for m in job["messages"] if m["type"] == "esriJobMessageTypeError"]
    assert len(errors) == 1 and bad.name in errors[0] and "cannot be read" in errors[0]
    assert "results" not in job
    failed = client.get(f"{server.url}{TASK}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()
    assert failed["error"]["code"] == 400 and "esriJobFailed" in failed["error"]["details"][0]


def test_cached_imagenet_weights_are_used_and_a_frozen_backbone_keeps_them(
    server: Server, client: httpx.Client, torch_home: Path
) -> None:
    from tests.conftest import RESNET34_FILE

    job_id = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("frozen34"),
        model_type="UNET", backbone_model="RESNET34", max_epochs=1, learning_rate=0.01, freeze_model=True,
        weight_init_scheme="RED_BAND",
    )  # fmt: skip
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    assert any(RESNET34_FILE in t and "ImageNet" in t for t in texts)
    assert "First layer adapted to 4 bands (RED_BAND)." in texts
    cached = torch.load(torch_home / "hub" / "checkpoints" / RESNET34_FILE, weights_only=True)
    uri = client.get(f"{server.url}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()["value"]["uri"]
    with zipfile.ZipFile(_local(server, uri)) as zf:
        trained = torch.load(__import__("io").BytesIO(zf.read("frozen34.pth")), weights_only=True)
    conv1 = trained["encoder.conv1.weight"]
    assert conv1.shape[1] == 4
    assert torch.equal(conv1[:, :3], cached["conv1.weight"]) and torch.equal(conv1[:, 3], cached["conv1.weight"][:, 0])
    assert torch.equal(trained["encoder.layer3.2.conv2.weight"], cached["layer3.2.conv2.weight"])
    # the decoder did learn
    fresh = smp.Unet(encoder_name="resnet34", encoder_weights=None, in_channels=4, classes=4)
    assert not torch.equal(trained["segmentation_head.0.weight"], fresh.state_dict()["segmentation_head.0.weight"])


def test_stop_training_stops_when_the_validation_loss_stalls(server: Server, client: httpx.Client) -> None:
    job_id = _submit(
        client, server, in_folder="/fileShares/chips/rgb8", output_name=in_share("stalls"), model_type="UNET",
        backbone_model="RESNET18", max_epochs=40, learning_rate=1e-9, stop_training=True, validation_percent=25,
    )  # fmt: skip
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    assert "Training on 6 chips, validating on 2 (25%)." in texts
    assert any(t.startswith("Early stopping") for t in texts)
    epochs = [t for t in texts if t.startswith("Epoch ")]
    # patience 5: at least six epochs; BatchNorm statistics still move at this rate, so maybe a few more
    assert 6 <= len(epochs) < 40 and epochs[-1].startswith(f"Epoch {len(epochs)}/40")


def test_a_job_resumes_where_it_was_after_a_kill_9_and_after_a_graceful_stop(
    tmp_path: Path, client: httpx.Client
) -> None:
    """kill -9 of the server and its worker during epoch 3 of 5: the lease expires, the job goes back to the
    queue with its attempt count raised, the orphaned training process stops, and the next worker resumes
    the job from its epoch 2 checkpoint. That server then gets SIGTERM: its worker has the training process
    save where it is and hands the job back without spending an attempt; a third server finishes it."""
    home = tmp_path / "home"
    lease = {"GEOTRAIN_LEASE_SECONDS": "3"}
    # epochs of most of a second: the kill lands in epoch 3, which the orphan cannot finish before it notices
    write_classified_tiles(tmp_path / "chips" / "slow", ExportSpec(chips=32, size=64))
    stores = {"/fileShares/chips": str(tmp_path / "chips")}
    first = Server(home=home, stores=stores, extra_env=lease).start()
    job_id = _submit(
        client, first, in_folder="/fileShares/chips/slow", output_name=in_share("survivor"),
        model_type="UNET", backbone_model="RESNET18", max_epochs=5, learning_rate=0.001, stop_training=False,
    )  # fmt: skip
    url = f"{first.url}/jobs/{job_id}"
    _checkpointed(client, url, home / "jobs" / job_id / "checkpoints" / "last.ckpt", epochs=2)
    with sqlite3.connect(home / "geotrain.db") as db:
        (orphan,) = db.execute("SELECT child_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert first.process is not None
    first.process.kill()
    first.process.wait()
    time.sleep(1.0)  # the orphan notices its parent is gone within 0.2 s
    assert not _alive(orphan)

    second = Server(home=home, stores=stores, extra_env=lease).start()
    try:
        # the orphan may have reported epoch 3 before it noticed: the second attempt's own epoch is awaited
        texts = _messages_until(client, f"{second.url}/jobs/{job_id}", "Epoch 3/5", after="Executing (attempt 2")
        assert any("stopped responding" in t and "put back in the queue" in t for t in texts), texts
        after = texts[texts.index("Executing (attempt 2 of 3)...") :]
        resuming = [t for t in after if t.startswith("Resuming from the checkpoint")]
        assert resuming and resuming[0].startswith(
            "Resuming from the checkpoint of epoch 2: training goes on at epoch 3 of 5"
        ), texts
        assert [t.split(":")[0] for t in after if t.startswith("Epoch ")] == ["Epoch 3/5"]
    finally:
        second.stop()  # SIGTERM
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert second.process is not None and second.process.returncode in (0, -signal.SIGTERM)
    with sqlite3.connect(home / "geotrain.db") as db:
        assert db.execute("SELECT status, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone() == (
            "esriJobSubmitted", 1
        )  # fmt: skip

    third = Server(home=home, stores=stores, extra_env=lease).start()
    try:
        job = wait_for(client, f"{third.url}/jobs/{job_id}", timeout=180)
        texts = [m["description"] for m in job["messages"]]
        assert job["jobStatus"] == "esriJobSucceeded", texts
        handed = texts.index("The worker stopped; the job was saved where it was and put back in the queue.")
        after = texts[handed:]
        assert after[1] == "Executing (attempt 2 of 3)..."
        (resuming,) = [t for t in after if t.startswith("Resuming from the checkpoint")]
        last = int(resuming.split("epoch ")[1].split(":")[0])  # the epoch it was in, or the one it had done
        expected = [f"Epoch {e}/5" for e in range(last if "taken during" in resuming else last + 1, 6)]
        assert [t.split(":")[0] for t in after if t.startswith("Epoch ")] == expected
        assert expected[0] != "Epoch 1/5"
        # the resumed epoch is timed from the resume (it had no epoch start of its own to time it from)
        timed = re.search(
            r"; ([0-9.]+) s \(training ([0-9.]+) images/s", next(t for t in after if t.startswith("Epoch "))
        )
        assert timed is not None and 0 < float(timed.group(1)) < 120 and float(timed.group(2)) > 0, after
    finally:
        third.stop()


def test_fasterrcnn_trains_on_the_real_multispectral_kitti_export(server: Server, client: httpx.Client) -> None:
    """The shared third-party export: 6-band uint16 LZW chips, 50 of the 306 map.txt lists, 7 classes."""
    if "/fileShares/real" not in server.stores:
        pytest.skip("shared/data is not beside this checkout")
    job_id = _submit(
        client, server, in_folder="/fileShares/real/kitti-phragmites-6band", output_name=in_share("phragmites"),
        model_type="FASTERRCNN", backbone_model="RESNET18", max_epochs=1, learning_rate=0.001, batch_size=4,
    )  # fmt: skip
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    assert any(t.startswith("256 of 306 chips listed in map.txt are missing") for t in texts)
    assert any(t.startswith("Epoch 1/1:") and "average_precision" in t for t in texts)
    uri = client.get(f"{server.url}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()["value"]["uri"]
    with zipfile.ZipFile(_local(server, uri)) as zf:
        emd = json.loads(zf.read("phragmites.emd"))
        weights = torch.load(__import__("io").BytesIO(zf.read("phragmites.pth")), weights_only=True)
        assert zf.read("ModelCharacteristics/show_results.png")[:4] == b"\x89PNG"
    assert emd["ModelType"] == "ObjectDetection" and emd["ModelName"] == "FasterRCNN"
    assert [c["Name"] for c in emd["Classes"]][-1] == "Phragmites" and emd["ExtractBands"] == [0, 1, 2, 3, 4, 5]
    assert set(emd["average_precision_score"]) == {c["Name"] for c in emd["Classes"]}
    assert 0.0 <= float(emd["mAP"]) <= 1.0 and emd["IsMultispectral"] is True
    assert emd["ModelParameters"]["input_size"] == 128  # 32 px chips are enlarged for the network
    from geotrain.training.models.detectors import build_detector

    fresh = build_detector("FASTERRCNN", "RESNET18", 6, 8, "RANDOM", emd["ModelParameters"]["input_size"], False, {})
    fresh.network.load_state_dict(weights, strict=True)


@pytest.mark.parametrize(
    ("model_type", "model_name", "arguments"),
    [
        ("PSPNET", "PSPNetClassifier", {"unet_aux_loss": "True", "pointrend": "True"}),
        ("PSPNET", "PSPNetClassifier", {"use_unet": "False", "pyramid_sizes": "[1, 2, 4]", "mixup": "True"}),
        ("DEEPLAB", "DeepLab", {"pointrend": "True", "keep_dilation": "False"}),
    ],
)
def test_pspnet_and_deeplab_train_through_the_api(
    server: Server, client: httpx.Client, model_type: str, model_name: str, arguments: dict[str, str]
) -> None:
    from geotrain.training.models.registry import build

    name = f"{model_type.lower()}{len(arguments)}"
    job_id = _submit(
        client, server, in_folder="/fileShares/chips/rgb8", output_name=in_share(name), model_type=model_type,
        backbone_model="RESNET18", max_epochs=1, learning_rate=0.001, monitor="MIOU", arguments=arguments,
    )  # fmt: skip
    emd, weights = _trained(client, server, job_id, name)
    assert emd["ModelName"] == model_name and "monitored_miou" in emd
    parsed = {k: json.loads(v.lower()) for k, v in arguments.items()}
    build(model_type, "RESNET18", 3, 3, "RANDOM", parsed).network.load_state_dict(weights, strict=True)


def test_feature_classifier_trains_through_the_api(server: Server, client: httpx.Client) -> None:
    from tests import formats

    formats.imagenet(Path(server.stores["/fileShares/chips"]) / "imagenet")
    job_id = _submit(
        client, server, in_folder="/fileShares/chips/imagenet", output_name=in_share("classes"),
        model_type="FEATURE_CLASSIFIER", backbone_model="RESNET18", max_epochs=1, learning_rate=0.001,
        monitor="ACCURACY", validation_percent=50, arguments={"mixup": "True", "oversample": "True"},
    )  # fmt: skip
    emd, weights = _trained(client, server, job_id, "classes")
    assert emd["ModelType"] == "ObjectClassification" and "monitored_accuracy" in emd
    from geotrain.training.classification import build_classifier

    build_classifier("RESNET18", 3, 3, "RANDOM").network.load_state_dict(weights, strict=True)


@pytest.mark.parametrize(
    ("model_type", "arguments", "model_kind"),
    [
        # RETINANET trains in tests/integration/test_train_shapes.py, its package checked by its own function
        (
            "SSD",
            {"zooms": "[1.0, 0.7]", "ratios": "[[1.0, 1.0]]", "focal_loss": "True", "bias": "-3"},
            "ObjectDetection",
        ),
        ("MASKRCNN", {"box_detections_per_img": "50", "pointrend": "True"}, "InstanceDetection"),
        # no anchors: fitted to the boxes, or COCO's when there are too few boxes (as here)
        ("YOLOV3", {"pretrained_backbone": "False"}, "ObjectDetection"),
    ],
)
def test_ssd_maskrcnn_and_yolov3_train_through_the_api(
    server: Server, client: httpx.Client, model_type: str, arguments: dict[str, str], model_kind: str
) -> None:
    from tests import formats

    store = Path(server.stores["/fileShares/chips"])
    folder = "rcnn" if model_type == "MASKRCNN" else "voc"
    if not (store / folder).exists():
        formats.rcnn_masks(store / folder, chips=4) if folder == "rcnn" else formats.pascal_voc(store / folder, 6)
    name = model_type.lower()
    job_id = _submit(
        client, server, in_folder=f"/fileShares/chips/{folder}", output_name=in_share(name), model_type=model_type,
        backbone_model="DARKNET53" if model_type == "YOLOV3" else "RESNET18", max_epochs=1, learning_rate=0.001,
        batch_size=2, validation_percent=34, arguments=arguments, monitor="AVERAGE_PRECISION",
    )  # fmt: skip
    emd, weights = _trained(client, server, job_id, name)
    assert emd["ModelType"] == model_kind and "monitored_average_precision" in emd
    if model_type == "MASKRCNN":
        assert emd["ModelParameters"]["pointrend"] is True
        assert any(k.startswith("roi_heads.mask_predictor.point_head.") for k in weights)
    from geotrain.training.models.detectors import build_detector

    parsed = {k: json.loads(v.lower()) for k, v in arguments.items()}
    if model_type == "SSD":  # ssd_version 2: the grids were fitted to the boxes, and the EMD says which
        job = client.get(f"{server.url}{TASK}/jobs/{job_id}", params={"f": "json"}).json()
        texts = [m["description"] for m in job["messages"]]
        assert emd["SSDVersion"] == 2 and f"SSD grids fitted to the training boxes: {emd['Grids']}." in texts
        parsed["grids"] = emd["Grids"]
    if model_type == "YOLOV3":
        job = client.get(f"{server.url}{TASK}/jobs/{job_id}", params={"f": "json"}).json()
        texts = [m["description"] for m in job["messages"]]
        assert emd["ModelParameters"]["anchors"][0] == [10, 13] and any("COCO anchors" in t for t in texts)
        assert any("pretrained_backbone False" in t for t in texts), texts
        parsed["anchors"] = emd["ModelParameters"]["anchors"]
    backbone = "DARKNET53" if model_type == "YOLOV3" else "RESNET18"
    fresh = build_detector(model_type, backbone, 3, 4, "RANDOM", emd["ModelParameters"]["input_size"], False, parsed)
    fresh.network.load_state_dict(weights, strict=True)
    if model_type == "YOLOV3":
        _function_gives_the_networks_detections(server, client, job_id, emd, fresh.network, store / folder)


def _function_gives_the_networks_detections(
    server: Server, client: httpx.Client, job_id: str, emd: dict[str, Any], network: torch.nn.Module, chips: Path
) -> None:
    """The package's own function, run apart from geotrain, finds on a training chip what the network finds."""
    import numpy as np
    import rasterio

    from geotrain.dlpk import verify
    from geotrain.dlpk.prf.geotrain_networks import filter_detections

    uri = client.get(f"{server.url}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()["value"]["uri"]
    with rasterio.open(sorted((chips / "images").glob("*.jpg"))[0]) as chip:
        pixels = chip.read()
    stats = emd["NormalizationStats"]
    mean, std = (np.asarray(stats[k], dtype=np.float32)[:, None, None] for k in ("band_mean_values", "band_std_values"))
    network.score_thresh = 0.0  # as the function's threshold 0 sets it: every box the network gives
    with torch.no_grad():
        found = network.eval()([torch.from_numpy((pixels.astype(np.float32) - mean) / std)])[0]
    found = filter_detections(found, 0.0, float(emd["NMSOverlap"]))
    features = verify.run_detector(_local(server, uri), pixels, chips.parent / f"run-{job_id}", {"threshold": 0.0})
    assert len(features) == len(found["boxes"]) > 0
    for feature, box, score in zip(features, found["boxes"].tolist(), found["scores"].tolist(), strict=True):
        ring = feature["geometry"]["rings"][0]
        assert abs(feature["attributes"]["Confidence"] - 100 * score) < 0.01
        assert np.allclose([ring[0][0], ring[0][1], ring[2][0], ring[2][1]], box, atol=0.01)
