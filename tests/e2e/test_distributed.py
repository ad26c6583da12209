"""A job trained by two processes with DistributedDataParallel (gloo on the CPU), over real HTTP."""

from __future__ import annotations

import io
import json
import re
import zipfile

import httpx
import torch

from tests.conftest import TASK, Server, arcgis_form, in_share, wait_for


def test_a_job_asking_for_two_processes_trains_with_ddp_over_gloo_and_rank_0_alone_writes_one_package(
    server: Server, client: httpx.Client
) -> None:
    """Also: the job's epochs as numbers (the job page's chart), and every log line of the job, the server's,
    rank 0's and rank 1's, one JSON object with the job's id (the session server logs JSON)."""
    form = arcgis_form(
        in_folder="/fileShares/chips/rgb8", output_name=in_share("ddp_unet"), model_type="UNET",
        backbone_model="RESNET18", batch_size=2, max_epochs=2, learning_rate=0, data_augmentation="NONE",
        stop_training=False, context={"processes": 2},
    )  # fmt: skip
    job_id = client.post(server.url + TASK + "/submitJob", data=form).json()["jobId"]
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    assert "Training UNET (resnet18) on CPU in 2 processes, DistributedDataParallel over gloo." in texts
    engine = next(t for t in texts if t.startswith("Engine:"))
    assert "batch size 2 per process (4 a step)" in engine and "1 CPU thread(s) per process" in engine, engine
    # rank 0's finder chose the rate; both ranks trained at it (one message, not one a rank)
    assert len([t for t in texts if t.startswith("The learning-rate finder chose")]) == 1
    epochs = [t for t in texts if t.startswith("Epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["Epoch 1/2", "Epoch 2/2"], texts
    # the epochs as numbers, agreeing with their messages
    numbers = client.get(f"{server.url}{TASK}/jobs/{job_id}/epochs", params={"f": "json"}).json()["epochs"]
    assert [e["epoch"] for e in numbers] == [1, 2]
    assert f"train_loss {numbers[1]['train_loss']:.4f}" in epochs[1] and set(numbers[1]["metrics"]) == {
        "accuracy",
        "miou",
    }
    # logs: one JSON object a line, the job's lines carrying its id; rank 1 logged apart, and trained
    folder = server.home / "jobs" / job_id
    ranked = [json.loads(line) for line in (folder / "train.rank1.log").read_text().splitlines() if line.strip()]
    assert ranked and all(line["job_id"] == job_id and line["rank"] == 1 for line in ranked)
    assert any(line["message"] == "first training step done" for line in ranked)
    trained = [json.loads(line) for line in (folder / "train.log").read_text().splitlines() if line.strip()]
    assert all(line["job_id"] == job_id and {"time", "level", "logger"} <= set(line) for line in trained)
    served = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    assert any(line["logger"] == "uvicorn.error" for line in served)
    assert any(line.get("job_id") == job_id and "training process" in line["message"] for line in served)

    _the_job_page_shows_it(server, client, job_id)
    uri = client.get(f"{server.url}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()["value"]["uri"]
    folder = server.home / "fileshare" / uri.removeprefix("/fileShares/geotrain/")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ddp_unet.dlpk"]
    # no rank but 0 wrote a package or kept checkpoints
    assert not list((server.home / "jobs" / job_id).rglob("*.dlpk"))
    assert not (server.home / "jobs" / job_id / "checkpoints").exists()
    with zipfile.ZipFile(folder) as zf:
        emd = json.loads(zf.read("ddp_unet.emd"))
        weights = torch.load(io.BytesIO(zf.read(emd["ModelFile"])), weights_only=True)
    assert all(w.is_contiguous() for w in weights.values())
    assert re.fullmatch(r"[0-9.e+-]+", str(emd["LearningRate"])) and float(emd["LearningRate"]) > 0


def _the_job_page_shows_it(server: Server, client: httpx.Client, job_id: str) -> None:
    """The job's page, read as a browser gets it: status, a full progress bar, the chart with both epochs of
    both losses and the metric, the messages, the package to download and its two pictures; and the jobs list."""
    url = f"{server.url}{TASK}/jobs/{job_id}"
    page = client.get(url, params={"f": "html"}).text
    assert "esriJobSucceeded" in page and "<progress id='progress' max='100' value='100'>" in page
    for series in ("train_loss", "valid_loss", "accuracy"):
        assert page.count(f"class='point {series}'") == 2, series
    assert "Epoch 2/2" in page and "Cancel job" not in page
    download = re.search(r"<a id='download' href='([^']+)'", page)
    assert download is not None and download.group(1) == f"{job_id}/package"
    package = client.get(f"{url}/package")
    assert package.status_code == 200 and zipfile.ZipFile(io.BytesIO(package.content)).testzip() is None
    for picture in ("loss_graph.png", "show_results.png"):
        assert f"{job_id}/package/{picture}" in page
        assert client.get(f"{url}/package/{picture}").content[:8] == b"\x89PNG\r\n\x1a\n"
    chart = client.get(f"{url}/chart.svg")
    assert chart.headers["content-type"].startswith("image/svg+xml") and chart.text.count("class='point ") == 6
    listed = client.get(f"{server.url}{TASK}/jobs", params={"f": "json"}).json()["jobs"]
    mine = next(j for j in listed if j["jobId"] == job_id)
    assert mine["jobStatus"] == "esriJobSucceeded" and mine["modelType"] == "UNET" and mine["duration"]
    assert f"href='{TASK}/jobs/{job_id}?f=html'" in client.get(f"{server.url}{TASK}/jobs").text
