"""Queue benchmark: the job queue's throughput and latency on SQLite and PostgreSQL.

enqueue      jobs/s submitted one by one (a transaction each, as submitJob does)
claim        jobs/s claimed and finished by --claimers threads at once (each job exactly once)
start        PostgreSQL: seconds from a submit's commit until an idle claimer, woken only by
             LISTEN/NOTIFY (its poll is 30 s), has claimed the job: p50 / p99
status GET   a real server (uvicorn, no workers) with --table jobs in its table (two messages each):
             GET /jobs/<id>?f=json latency under --pollers concurrent pollers: p50 / p99, requests/s

  .venv/bin/python bench/job_queue.py [--jobs 2000] [--table 100000] [--pollers 50] [--db sqlite postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import insert

from geotrain.jobs import wakeups
from geotrain.jobs.db import make_engine, make_sessionmaker, migrate
from geotrain.jobs.queue import Queue, new_job_id
from geotrain.jobs.tables import Job, JobMessage, JobStatus, MessageType

ADMIN = "host=127.0.0.1 user=postgres dbname=test"
INPUTS = {"in_folder": "/fileShares/chips/x", "output_name": '{"name": "m"}', "model_type": "UNET"}


def _database(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'bench.db'}"
    name = f"geotrain_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def enqueue_and_claim(url: str, jobs: int, claimers: int) -> dict[str, float]:
    engine = make_engine(url)
    queue = Queue(make_sessionmaker(engine))
    start = time.perf_counter()
    for _ in range(jobs):
        queue.submit("TrainDeepLearningModel", "bench", INPUTS, 3)
    enqueue = jobs / (time.perf_counter() - start)

    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        worker = f"bench-{n}"
        while True:
            job = queue.claim(worker, 60)
            if job is None:
                return
            queue.succeed(job.id, worker, {"out_item": {}})
            with lock:
                claimed.append(job.id)

    start = time.perf_counter()
    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claim = len(claimed) / (time.perf_counter() - start)
    assert len(claimed) == jobs == len(set(claimed)), "every job claimed exactly once"
    engine.dispose()
    return {"enqueue_jobs_per_s": round(enqueue, 1), "claim_jobs_per_s": round(claim, 1)}


def start_latency(url: str, samples: int) -> dict[str, float]:
    """An idle claimer that only LISTEN/NOTIFY wakes: the time from submit's commit to its claim."""
    engine = make_engine(url)
    queue = Queue(make_sessionmaker(engine))
    woken = threading.Event()
    claimed_at: dict[str, float] = {}
    stop = threading.Event()
    listener = wakeups.Listener(url, lambda event, job_id: woken.set()).start()
    listener.ready.wait(10)

    def claimer() -> None:
        while not stop.is_set():
            woken.clear()
            job = queue.claim("bench", 60)
            if job is None:
                woken.wait(30.0)
                continue
            claimed_at[job.id] = time.perf_counter()
            queue.succeed(job.id, "bench", {})

    thread = threading.Thread(target=claimer)
    thread.start()
    time.sleep(0.5)
    latencies = []
    for _ in range(samples):
        before = time.perf_counter()
        job = queue.submit("TrainDeepLearningModel", "bench", INPUTS, 3)
        committed = time.perf_counter()
        while job.id not in claimed_at:
            time.sleep(0.0005)
        latencies.append(claimed_at[job.id] - committed)
        assert claimed_at[job.id] >= before
        time.sleep(random.uniform(0.01, 0.03))
    stop.set()
    woken.set()
    thread.join()
    listener.stop()
    engine.dispose()
    p50, p99 = _percentiles(latencies)
    return {"start_p50_ms": round(p50 * 1000, 2), "start_p99_ms": round(p99 * 1000, 2)}


def _fill(url: str, rows: int) -> list[str]:
    """``rows`` finished jobs with two messages each, inserted in bulk."""
    engine = make_engine(url)
    now = dt.datetime.now(dt.UTC)
    ids = [new_job_id() for _ in range(rows)]
    with engine.begin() as conn:
        for start in range(0, rows, 5000):
            chunk = ids[start : start + 5000]
            conn.execute(insert(Job), [
                {"id": i, "task": "TrainDeepLearningModel", "owner": "anonymous", "status": JobStatus.SUCCEEDED,
                 "inputs": INPUTS, "results": {"out_item": {"uri": "/fileShares/geotrain/models/m/m.dlpk"}},
                 "attempts": 1, "max_attempts": 3, "cancel_requested": False, "submitted_at": now,
                 "finished_at": now, "updated_at": now}
                for i in chunk
            ])  # fmt: skip
            conn.execute(insert(JobMessage), [
                {"job_id": i, "type": t, "description": d, "created_at": now}
                for i in chunk
                for t, d in ((MessageType.INFORMATIVE, "Submitted."), (MessageType.INFORMATIVE, "Succeeded."))
            ])  # fmt: skip
    engine.dispose()
    return ids


def status_latency(url: str, table: int, pollers: int, seconds: float, home: Path) -> dict[str, float]:
    ids = _fill(url, table)
    port = 18000 + random.randint(0, 999)
    env = {**os.environ, "GEOTRAIN_HOME": str(home), "GEOTRAIN_DATABASE_URL": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "geotrain.cli", "--log-level", "warning", "serve", "--port", str(port),
         "--workers", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/arcgis/rest/info?f=json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        latencies: list[float] = []

        async def poller(client: httpx.AsyncClient, until: float) -> None:
            while time.perf_counter() < until:
                job_id = random.choice(ids)
                start = time.perf_counter()
                response = await client.get(f"{base}/jobs/{job_id}", params={"f": "json"})
                latencies.append(time.perf_counter() - start)
                assert response.json()["jobId"] == job_id

        async def run() -> None:
            limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                until = time.perf_counter() + seconds
                await asyncio.gather(*(poller(client, until) for _ in range(pollers)))

        asyncio.run(run())
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50, p99 = _percentiles(latencies)
    return {"status_p50_ms": round(p50 * 1000, 1), "status_p99_ms": round(p99 * 1000, 1),
            "status_requests_per_s": round(len(latencies) / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--claimers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--table", type=int, default=100_000)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    for kind in args.db:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            figures: dict[str, float | str] = {"db": kind, "cores": os.cpu_count() or 0}
            url = _database(kind, folder)
            try:
                migrate(url)
                figures |= enqueue_and_claim(url, args.jobs, args.claimers)
                if wakeups.listens(url):
                    figures |= start_latency(url, args.samples)
            finally:
                _drop(url)
            url = _database(kind, folder / "status")
            (folder / "status").mkdir(exist_ok=True)
            try:
                migrate(url)
                figures |= status_latency(url, args.table, args.pollers, args.seconds, folder / "home")
            finally:
                _drop(url)
            print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
