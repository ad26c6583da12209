"""What operators watch, over real HTTP: /health, /ready and Prometheus /metrics (JSON logs with job ids:
tests/e2e/test_distributed.py, on the session server, which logs JSON)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from geotrain.jobs.db import make_engine, make_sessionmaker
from geotrain.jobs.queue import Queue
from geotrain.worker.gpus import gpu_memory
from tests.conftest import TASK, Server, arcgis_form, in_share


def _metrics(client: httpx.Client, server: Server) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get(server.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_health_answers_and_ready_is_true_with_the_embedded_worker_alive(server: Server, client: httpx.Client) -> None:
    health = client.get(server.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = client.get(server.url + "/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["migrations"]["ok"] is True and body["checks"]["migrations"]["current"] == "0006"
    assert body["checks"]["workers"]["ok"] is True and body["checks"]["workers"]["alive"] >= 1


def test_without_a_worker_ready_is_false_and_metrics_show_the_queue_jobs_workers_gpus_and_latency(
    tmp_path: Path, store_root: Path, client: httpx.Client
) -> None:
    server = Server(home=tmp_path / "home", stores={"/fileShares/chips": str(store_root)}, workers=0).start()
    try:
        ready = client.get(server.url + "/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert ready.json()["ready"] is False and checks["database"]["ok"] and checks["migrations"]["ok"]
        assert checks["workers"] == {"ok": False, "alive": 0, "within_seconds": 60.0}

        form = arcgis_form(in_folder="/fileShares/chips/rgb8", output_name=in_share("m"), model_type="UNET")
        ids = [client.post(server.url + TASK + "/submitJob", data=form).json()["jobId"] for _ in range(3)]
        client.get(f"{server.url}{TASK}/jobs/{ids[0]}", params={"f": "json"})
        # a worker on another host: it holds one job, finishes another, and reports its GPU's memory
        queue = Queue(make_sessionmaker(make_engine(f"sqlite:///{server.home / 'geotrain.db'}")))
        queue.worker_seen("gpu-host-1", frozenset({"gpu"}), 1, [{"index": 0, "used": 3 * 2**30, "total": 80 * 2**30}])
        first = queue.claim("gpu-host-1", 60)
        assert first is not None and queue.succeed(first.id, "gpu-host-1", {"out_item": {"uri": "x"}})
        assert queue.claim("gpu-host-1", 60) is not None

        m = _metrics(client, server)
        assert m["geotrain_database_up"] == [({}, 1.0)]
        by_status = {labels["status"]: value for labels, value in m["geotrain_jobs"]}
        assert by_status["esriJobSubmitted"] == 1 and by_status["esriJobExecuting"] == 1
        assert by_status["esriJobSucceeded"] == 1 and by_status["esriJobFailed"] == 0
        assert m["geotrain_queue_depth"] == [({}, 1.0)]
        assert m["geotrain_queue_oldest_job_age_seconds"][0][1] > 0
        assert m["geotrain_job_duration_seconds_count"] == [({}, 1.0)]
        assert ({"le": "+Inf"}, 1.0) in m["geotrain_job_duration_seconds_bucket"]
        assert m["geotrain_workers_alive"] == [({}, 1.0)]
        assert m["geotrain_worker_jobs"] == [({"worker": "gpu-host-1"}, 1.0)]
        assert 0 <= m["geotrain_worker_last_seen_seconds"][0][1] < 60
        assert m["geotrain_gpu_memory_used_bytes"] == [({"worker": "gpu-host-1", "gpu": "0"}, 3.0 * 2**30)]
        assert m["geotrain_gpu_memory_total_bytes"] == [({"worker": "gpu-host-1", "gpu": "0"}, 80.0 * 2**30)]
        # HTTP latency by route template: one series for every job's status page, not one a job id
        routes = {labels["route"] for labels, _ in m["geotrain_http_request_duration_seconds_count"]}
        assert f"{TASK}/submitJob" in routes and f"{TASK}/jobs/{{job_id}}" in routes
        assert not any(ids[0] in route for route in routes)
        assert client.get(server.url + "/ready").json()["checks"]["workers"]["alive"] == 1
        # the job page of the job still queued: its cancel button posts back and lands on the page again
        page = client.get(f"{server.url}{TASK}/jobs/{ids[2]}", params={"f": "html"}).text
        assert "Cancel job" in page and "no epoch yet" in page and "data-finished='false'" in page
        cancelled = client.post(f"{server.url}{TASK}/jobs/{ids[2]}/cancel", data={"f": "html"}, follow_redirects=False)
        assert cancelled.status_code == 303 and cancelled.headers["location"] == f"../{ids[2]}?f=html"
        assert "esriJobCancelled" in client.get(f"{server.url}{TASK}/jobs/{ids[2]}", params={"f": "html"}).text
    finally:
        server.stop()


def test_ready_names_the_missing_migrations_of_a_postgresql_database_never_migrated(
    tmp_path: Path, pg_url: str, client: httpx.Client
) -> None:
    server = Server(home=tmp_path / "home", stores={}, database_url=pg_url, workers=0).start()
    try:
        ready = client.get(server.url + "/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["migrations"] == {"ok": False, "current": None, "head": "0006"}
        assert _metrics(client, server)["geotrain_database_up"] == [({}, 0.0)]
    finally:
        server.stop()


def test_gpu_memory_is_read_from_the_nvidia_driver_and_limited_to_the_workers_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0, 1024, 81559\\n1, 0, 81559\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpu_memory({1}) == [{"index": 1, "used": 0, "total": 81559 * 2**20}]
    assert [g["used"] for g in gpu_memory() or []] == [2**30, 0]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpu_memory() is None
