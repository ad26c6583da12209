"""Stress test: N `geotrain worker` processes on one PostgreSQL queue, M tiny training jobs submitted over
HTTP, optionally with workers killed (SIGKILL) at random moments and started again.

It counts the training runs themselves, not the statuses: every training process appends to its job's
``train.log``, and Lightning writes "`Trainer.fit` stopped" there when a run's training loop completes (a job
that ran twice would show two), and each trained epoch posts one "Epoch k/2" message when it ends.
Printed: jobs succeeded / lost / failed, completed training runs, the
jobs whose training restarted after a kill (they resume from their checkpoint), wall time, jobs/minute.

    .venv/bin/python bench/stress.py [--jobs 200] [--workers 3] [--kills 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import arcgis_form
from tests.exports import ExportSpec, write_classified_tiles

ADMIN = "host=127.0.0.1 user=postgres dbname=test"
TASK = "/arcgis/rest/services/System/RasterAnalysisTools/GPServer/TrainDeepLearningModel"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()

    name = f"geotrain_stress_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="geotrain-stress-"))
    chips = tmp / "chips"
    write_classified_tiles(chips / "tiny", ExportSpec(chips=4, size=32, bands=3, dtype="uint8", absent=None))
    env = {
        **os.environ, "GEOTRAIN_HOME": str(tmp / "home"), "GEOTRAIN_DATABASE_URL": url,
        "GEOTRAIN_DATA_STORES": json.dumps({"/fileShares/chips": str(chips)}), "GEOTRAIN_CHECK_PACKAGES": "false",
        "GEOTRAIN_LEASE_SECONDS": "6", "GEOTRAIN_HEARTBEAT_SECONDS": "1", "GEOTRAIN_MAX_ATTEMPTS": "5",
    }  # fmt: skip
    subprocess.run([sys.executable, "-m", "geotrain.cli", "migrate"], env=env, check=True)
    logs = open(tmp / "processes.log", "wb")  # noqa: SIM115 - open for the processes' lifetime
    api = subprocess.Popen(
        [sys.executable, "-m", "geotrain.cli", "--log-level", "warning", "serve", "--port", str(args.port),
         "--workers", "0"], env=env, stdout=logs, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "geotrain.cli", "worker"], env=env, stdout=logs,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    workers = [worker() for _ in range(args.workers)]
    base = f"http://127.0.0.1:{args.port}"
    client = httpx.Client(timeout=30)
    for _ in range(120):
        try:
            if client.get(f"{base}/arcgis/rest/info?f=json").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    started = time.monotonic()
    ids = []
    for i in range(args.jobs):
        form = arcgis_form(in_folder="/fileShares/chips/tiny", output_name={"name": f"s{i}"}, model_type="UNET",
                           backbone_model="RESNET18", max_epochs=2, learning_rate=0.001, batch_size=2)  # fmt: skip
        ids.append(client.post(f"{base}{TASK}/submitJob", data=form).json()["jobId"])
    kills_at = sorted(random.uniform(0.15, 0.7) for _ in range(args.kills))
    killed = 0
    finished: dict[str, str] = {}
    while len(finished) < len(ids):
        done_share = len(finished) / len(ids)
        if killed < len(kills_at) and done_share >= kills_at[killed]:
            victim = random.randrange(len(workers))
            os.killpg(workers[victim].pid, signal.SIGKILL)  # the worker and its training process, as a host dies
            workers[victim].wait()
            workers[victim] = worker()
            killed += 1
            print(f"killed worker {victim} at {done_share:.0%} done", flush=True)
        for job_id in ids:
            if job_id not in finished:
                status = client.get(f"{base}/jobs/{job_id}", params={"f": "json", "returnMessages": "false"}).json()
                if status["jobStatus"] in ("esriJobSucceeded", "esriJobFailed", "esriJobCancelled"):
                    finished[job_id] = status["jobStatus"]
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    for process in workers:
        process.terminate()
    for process in workers:
        process.wait(timeout=180)
    api.terminate()
    api.wait(timeout=30)

    runs = {job_id: _completed_runs(tmp / "home" / "jobs" / job_id / "train.log") for job_id in ids}
    resumed = {job_id for job_id in ids if _resumed(tmp / "home" / "jobs" / job_id / "train.log")}
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        attempts = dict(conn.execute("SELECT id, attempts FROM jobs").fetchall())  # type: ignore[arg-type]
        epochs = dict(
            conn.execute(
                "SELECT job_id, count(*) FROM job_messages WHERE description LIKE 'Epoch %' GROUP BY job_id"
            ).fetchall()  # type: ignore[arg-type]
        )
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    figures = {
        "jobs": len(ids), "workers": args.workers, "kills": killed,
        "succeeded": sum(s == "esriJobSucceeded" for s in finished.values()),
        "failed": sum(s == "esriJobFailed" for s in finished.values()),
        "lost": len(ids) - len(finished),
        "completed_training_runs": sum(runs.values()),
        "jobs_run_more_than_once": sum(n > 1 for n in runs.values()),
        "jobs_run_never": sum(n == 0 for n in runs.values()),
        "jobs_resumed_after_a_kill": len(resumed),
        # each epoch reports once when it ends: a job trained twice would report more than max_epochs (2)
        "jobs_with_other_than_2_epochs_trained": sum(epochs.get(job_id, 0) != 2 for job_id in ids),
        "jobs_with_attempt_2_or_more": sum(a > 1 for a in attempts.values()),
        "seconds": round(elapsed, 1), "jobs_per_minute": round(len(ids) / elapsed * 60, 1),
    }  # fmt: skip
    print(json.dumps(figures), flush=True)


def _completed_runs(log: Path) -> int:
    return log.read_text(errors="replace").count("`Trainer.fit` stopped") if log.is_file() else 0


def _resumed(log: Path) -> bool:
    return log.is_file() and "Restoring states from the checkpoint" in log.read_text(errors="replace")


if __name__ == "__main__":
    main()
