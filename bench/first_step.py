"""Time to first step: from a client's submitJob to the job's first optimizer step on a warm worker (its fork
server started and holding the training stack), on SQLite and on PostgreSQL; and how long the API itself takes
to start, and that it never imports torch. ``--gap 0`` submits each job as soon as the one before has ended
(jobs back to back); the default waits 5 s between them.

The first step's moment is the "first training step done" line the training process writes to the job's
train.log (same machine, same clock). A UNET-ResNet18 job on 8 chips of 64 px.

    .venv/bin/python bench/first_step.py [--jobs 3] [--gap 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import arcgis_form, free_port
from tests.exports import ExportSpec, write_classified_tiles

ADMIN = "host=127.0.0.1 user=postgres dbname=test"
TASK = "/arcgis/rest/services/System/RasterAnalysisTools/GPServer/TrainDeepLearningModel"


def api_start(env: dict[str, str]) -> tuple[float, bool]:
    """Seconds to import geotrain's API and build the app (migrations included), and whether torch came with it."""
    code = (
        "import sys, time; t = time.perf_counter(); from geotrain.api.app import create_app; create_app(); "
        "print(time.perf_counter() - t, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    seconds, torch = out.split()
    return float(seconds), torch == "True"


def first_steps(env: dict[str, str], home: Path, jobs: int, gap: float) -> tuple[float, list[float]]:
    """The first job's seconds (``gap`` after the server answered) and the next ``jobs``'."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "geotrain.cli", "--log-level", "warning", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(300):
                try:
                    client.get(url + TASK, params={"f": "json"})
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            seconds = []
            for n in range(jobs + 1):  # the first job is reported apart
                time.sleep(gap)
                form = arcgis_form(
                    in_folder="/fileShares/b/chips", output_name={"uri": f"/fileShares/b/out/m{n}"},
                    model_type="UNET", backbone_model="RESNET18", max_epochs=1, learning_rate=0.001,
                )  # fmt: skip
                submitted = time.time()
                job_id = client.post(url + TASK + "/submitJob", data=form).json()["jobId"]
                while client.get(f"{url}/jobs/{job_id}", params={"f": "json"}).json()["jobStatus"] not in (
                    "esriJobSucceeded", "esriJobFailed"):  # fmt: skip
                    time.sleep(0.2)
                line = next(x for x in (home / "jobs" / job_id / "train.log").read_text().splitlines()
                            if "first training step done" in x)  # fmt: skip
                stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                seconds.append(stamp - submitted)
            return seconds[0], seconds[1:]
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between a job's end and the next submit")
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/first_step.py --jobs {args.jobs} --gap {args.gap:g}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_classified_tiles(root / "b" / "chips", ExportSpec(chips=8, size=64, bands=3, dtype="uint8",
                                                                values=(1, 2), absent=None))  # fmt: skip
        database = f"geotrain_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        try:
            for name, url in (
                ("SQLite", ""),
                ("PostgreSQL", f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"),
            ):
                home = root / f"home-{name}"
                env = {**os.environ, "GEOTRAIN_HOME": str(home), "GEOTRAIN_CHECK_PACKAGES": "false",
                       "GEOTRAIN_DATA_STORES": json.dumps({"/fileShares/b": str(root / "b")})}  # fmt: skip
                if url:
                    env["GEOTRAIN_DATABASE_URL"] = url
                    subprocess.run([sys.executable, "-m", "geotrain.cli", "migrate"], env=env, check=True,
                                   capture_output=True)  # fmt: skip
                started, torch = api_start(env)
                first, steps = first_steps(env, home, args.jobs, args.gap)
                shown = ", ".join(f"{s:.2f}" for s in steps)
                print(
                    f"{name}: API import + app {started:.2f} s (torch imported: {torch}); submit -> first "
                    f"training step on a warm worker: {shown} s (median {sorted(steps)[len(steps) // 2]:.2f} s); "
                    f"the server's first job, {args.gap:g} s after it answered: {first:.2f} s"
                )
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
