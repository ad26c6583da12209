"""The worker's claim loop and the supervision of one training process per job."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from geotrain import logs
from geotrain.config import Settings
from geotrain.jobs import wakeups
from geotrain.jobs.queue import JobRecord, Queue
from geotrain.jobs.retry import patient
from geotrain.training.child import OUTCOME, read_outcome
from geotrain.training.handback import HANDED_BACK
from geotrain.worker.forkserver import Forked, ForkServer
from geotrain.worker.gpus import gpu_memory

log = logging.getLogger(__name__)

# how long a job waits for the fork server's answer (it answers once it has imported the training stack)
FORK_TIMEOUT = 120.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(self, settings: Settings, queue: Queue, worker_id: str | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.worker_id = worker_id or new_worker_id()
        self.stopping = threading.Event()
        self._last_reap = 0.0
        self._last_clean = 0.0
        # forks each job's training process from a process that has the training stack imported already
        self._forks: ForkServer | None = None
        # set when a job is submitted or handed back (look at the queue now), or a cancel is requested
        self._work = threading.Event()
        self._cancel = threading.Event()
        queue.subscribe(self._wake)
        self.labels, self.gpus = settings.labels(), settings.visible_gpus()
        self._last_seen = 0.0
        self._seen()
        self._listener: wakeups.Listener | None = None
        if wakeups.listens(settings.effective_database_url):
            self._listener = wakeups.Listener(settings.effective_database_url, self._wake)

    def _seen(self) -> None:
        """Tell the queue this worker is alive and what it runs, at most every few seconds."""
        now = time.monotonic()
        if now - self._last_seen >= min(10.0, self.settings.heartbeat_seconds * 2):
            self._last_seen = now
            try:
                memory = gpu_memory(self.settings.gpu_ids()) if self.gpus else None
                self.queue.worker_seen(self.worker_id, self.labels, self.gpus, memory)
            except Exception:
                log.exception("worker %s: could not record itself; will retry", self.worker_id)

    def _wake(self, event: str, job_id: str) -> None:
        (self._cancel if event == wakeups.CANCEL else self._work).set()

    def stop(self) -> None:
        self.stopping.set()
        self._work.set()

    def run_forever(self) -> None:
        log.info("worker %s started", self.worker_id)
        if self._listener is not None:
            self._listener.start()
        self._fork_server()  # ready before the first job arrives: its seconds of imports overlap the wait for one
        while not self.stopping.is_set():
            try:
                self._work.clear()  # before looking: a submit from now on wakes the wait below
                if not self.run_once():
                    self._work.wait(self.settings.poll_seconds)
            except Exception:  # a database hiccup must not end the worker
                log.exception("worker loop error; retrying")
                self.stopping.wait(min(5.0, self.settings.poll_seconds * 4))
        if self._forks is not None:
            self._forks.close()
        if self._listener is not None:
            self._listener.stop()
        with contextlib.suppress(Exception):
            self.queue.worker_gone(self.worker_id)
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Reap expired leases now and then, claim one job and run it. False when the queue was empty."""
        self._seen()
        now = time.monotonic()
        if self.settings.retention_days > 0 and now - self._last_clean > 600:
            self._last_clean = now
            self.clean_up()
        if now - self._last_reap > self.settings.lease_seconds / 4:
            self._last_reap = now
            for job_id in self.queue.reap_expired():
                log.warning("job %s: lease expired", job_id)
        job = self.queue.claim(self.worker_id, self.settings.lease_seconds, self.labels)
        if job is None:
            return False
        self.supervise(job)
        return True

    def clean_up(self) -> list[str]:
        """Remove the working folders of jobs finished more than ``retention_days`` ago (their packages stay
        where they were published); the ids of the jobs cleaned."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.settings.retention_days)
        folders = (
            [p.name for p in self.settings.jobs_dir.iterdir() if p.is_dir()] if self.settings.jobs_dir.is_dir() else []
        )
        cleaned = []
        for start in range(0, len(folders), 500):
            for job_id in self.queue.finished_before(folders[start : start + 500], cutoff):
                shutil.rmtree(self.settings.jobs_dir / job_id, ignore_errors=True)
                cleaned.append(job_id)
        if cleaned:
            log.info("removed the working folders of %d jobs finished before %s", len(cleaned), cutoff.date())
        return cleaned

    def supervise(self, job: JobRecord) -> None:
        token = logs.job_id.set(job.id)  # this thread's log lines carry the job id until it is done
        try:
            self._supervise(job)
        finally:
            logs.job_id.reset(token)
        if not self.stopping.is_set():
            self._fork_server()  # started again now if it died, not during a job: its imports would slow that job

    def _supervise(self, job: JobRecord) -> None:
        workdir = self.settings.jobs_dir / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / OUTCOME).unlink(missing_ok=True)
        child = self._start(job, workdir / "train.log")
        self.queue.set_child(job.id, child.pid)
        log.info("job %s: training process %d", job.id, child.pid)
        interval = self._heartbeat_interval()
        while True:
            if self._wait_child(child, interval):
                break
            self._cancel.clear()  # the heartbeat below reads the job's cancel flag
            self._seen()
            try:
                beat = self.queue.heartbeat(job.id, self.worker_id, self.settings.lease_seconds)
            except Exception:
                log.exception("job %s: heartbeat failed; will retry", job.id)
                continue
            if beat == "cancel":
                self._end(child)
                self.queue.cancelled(job.id, self.worker_id)
                return
            if beat == "lost":
                log.warning("job %s: lease lost to another worker; stopping its training process", job.id)
                self._end(child)
                return
            if self.stopping.is_set():
                saved = self._hand_back(child)
                if not saved and read_outcome(workdir) is not None:
                    break  # it had done its training and finished the job instead
                how = "saved where it was and " if saved else ""
                self.queue.release(
                    job.id, self.worker_id, f"The worker stopped; the job was {how}put back in the queue."
                )
                return
        self._finish(job, child.wait(), workdir)  # it has ended: wait() only reads its exit code

    def _heartbeat_interval(self) -> float:
        return min(self.settings.heartbeat_seconds, self.settings.lease_seconds / 3)

    def _keep_lease(self, job: JobRecord) -> None:
        """A heartbeat whose answer waits: a cancel or a lost lease stays so until the next one reads it."""
        try:
            self.queue.heartbeat(job.id, self.worker_id, self.settings.lease_seconds)
        except Exception:
            log.exception("job %s: heartbeat failed; will retry", job.id)

    def _wait_child(self, child: Forked | subprocess.Popen[bytes], seconds: float) -> bool:
        """Wait up to ``seconds`` for the training process to exit (True), returning early (False) when a
        cancel is requested somewhere or the worker is stopping."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._cancel.is_set() and not self.stopping.is_set():
            try:
                child.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                return True
            except subprocess.TimeoutExpired:
                continue
        return child.poll() is not None

    def _fork_server(self) -> ForkServer:
        """The worker's fork server, started (again) when there is none alive."""
        if self._forks is None or not self._forks.alive():
            self._forks = ForkServer(self._child_environment())
        return self._forks

    def _child_environment(self) -> dict[str, str]:
        return {**os.environ, **self.settings.child_environment()}

    def _start(self, job: JobRecord, log_path: Path) -> Forked | subprocess.Popen[bytes]:
        """The job's training process: forked from the fork server, or started afresh if that cannot be."""
        log_path.touch()
        forked = self._fork_server().start(
            job.id, log_path, FORK_TIMEOUT, lambda: self._keep_lease(job), self._heartbeat_interval()
        )
        if forked is not None:
            return forked
        log.warning("job %s: starting its training process afresh", job.id)
        with open(log_path, "ab") as logfile:
            return subprocess.Popen(
                [sys.executable, "-m", "geotrain.training.child", job.id], env=self._child_environment(),
                stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a cancel ends its data loaders too
            )  # fmt: skip

    def _finish(self, job: JobRecord, returncode: int, workdir: Path) -> None:
        outcome = read_outcome(workdir)
        # the outcome is on disk: a database out of reach now is waited out, not a reason to train again
        succeed, fail = patient(self.queue.succeed), patient(self.queue.fail)
        if outcome is not None and outcome.get("status") == "succeeded" and isinstance(outcome.get("results"), dict):
            succeed(job.id, self.worker_id, outcome["results"])
            return
        if outcome is not None and outcome.get("status") == "failed":
            fail(job.id, self.worker_id, str(outcome.get("message")))
            return
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        fail(
            job.id,
            self.worker_id,
            f"The training process {how} without a result (out of memory?). See {workdir / 'train.log'}.",
        )

    def _hand_back(self, child: Forked | subprocess.Popen[bytes]) -> bool:
        """Ask the training process to checkpoint and exit (SIGUSR1, to it alone: its data loaders would
        die of it); end it if it does not in time. True when it handed the job back."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGUSR1)
        try:
            child.wait(timeout=self.settings.handback_seconds)
        except subprocess.TimeoutExpired:
            self._end(child)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # data loaders it left behind
        return child.returncode == HANDED_BACK

    def _end(self, child: Forked | subprocess.Popen[bytes]) -> None:
        """Stop the training process and everything it started; SIGKILL if it ignores SIGTERM."""
        for sig, wait in ((signal.SIGTERM, self.settings.kill_grace_seconds), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            try:
                child.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_embedded(settings: Settings, queue: Queue, count: int) -> list[tuple[Worker, threading.Thread]]:
    """Workers inside the server process (threads: the training itself runs in child processes)."""
    started = []
    for n in range(count):
        worker = Worker(settings, queue)
        thread = threading.Thread(target=worker.run_forever, name=f"geotrain-worker-{n}", daemon=True)
        thread.start()
        started.append((worker, thread))
    return started
