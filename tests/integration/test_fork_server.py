"""The fork server: training processes forked from one process that imported the training stack once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from geotrain.worker.forkserver import ForkServer


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_jobs_are_forked_from_one_server_in_their_own_session_and_their_exit_codes_come_back(tmp_path: Path) -> None:
    """Each job's process is the server's child, leads its own process group (a cancel's killpg reaches its data
    loaders), writes to the job's log, and its end comes back with its exit code. A job the training process
    cannot read ends in a failed outcome with the reason, exit code 1."""
    home = tmp_path / "home"
    env = {**os.environ, "GEOTRAIN_HOME": str(home)}  # a database without the job: main() fails it
    forks = ForkServer(env)
    beats: list[int] = []
    try:
        started = []
        for job_id in ("job-a", "job-b"):
            log_path = tmp_path / f"{job_id}.log"
            log_path.touch()
            child = forks.start(job_id, log_path, 120.0, lambda: beats.append(1), 0.2)
            assert child is not None
            started.append((job_id, child))
        for job_id, child in started:
            assert child.wait(timeout=60) == 1
            outcome = json.loads((home / "jobs" / job_id / "outcome.json").read_text())
            assert outcome["status"] == "failed" and outcome["message"].startswith("Training failed:"), outcome
            assert "Traceback" in (tmp_path / f"{job_id}.log").read_text()
        assert started[0][1].pid != started[1][1].pid
        # the first request waited for the imports and kept the lease meanwhile; the second was forked at once
        assert beats, "no heartbeat while the fork server imported"
        assert forks.alive()
    finally:
        forks.close()
    assert not forks.alive()
    assert forks.start("job-c", tmp_path / "job-c.log", 5.0, lambda: None, 1.0) is None


def test_a_forked_training_process_stops_when_its_server_dies_even_before_it_started_watching(
    tmp_path: Path,
) -> None:
    """kill -9 of the fork server (or of the worker, which ends the server's input): its training processes
    notice they are orphans and stop, and the worker hears of it. The job's log is a FIFO here, so the process
    waits in opening it until the server is dead: it still knows which parent it had."""
    forks = ForkServer({**os.environ, "GEOTRAIN_HOME": str(tmp_path / "home")})
    log_path = tmp_path / "job.log"
    os.mkfifo(log_path)
    child = forks.start("job-x", log_path, 120.0, lambda: None, 1.0)
    assert child is not None
    reader = None
    try:
        assert _parent(child.pid) == forks.process.pid
        assert os.getpgid(child.pid) == child.pid
        forks.process.send_signal(signal.SIGKILL)
        forks.process.wait()
        reader = os.open(log_path, os.O_RDONLY | os.O_NONBLOCK)  # lets it open its log and go on
        assert child.wait(timeout=10) == 3
    finally:
        forks.close()
        if reader is not None:
            os.close(reader)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            pytest.fail("the orphan did not stop")
