"""The training process: ``python -m geotrain.training.child <job_id>``, started by a worker per job.

It reads the job, trains, and leaves ``outcome.json`` in the job folder for its worker, which alone
decides the job's final state. Messages and progress go straight to the job.

``python -m geotrain.training.child --fork-server`` imports the training stack once and then forks a training
process for each line ``<job_id>\t<log file>`` on its standard input (``worker.forkserver`` is the worker's
side): a job does not wait the seconds that importing torch and its libraries takes.

``python -m geotrain.training.child --rank N <job_id>``: one more process of a job that trains on several
(``training.distributed``), started by the job's first process, which watches it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from geotrain import logs
from geotrain.jobs.retry import patient
from geotrain.training import handback

if TYPE_CHECKING:
    from geotrain.task.pretrained import Pretrained
    from geotrain.training.distributed import Group, Placement

OUTCOME = "outcome.json"
# how long a helper's failure waits for the job's first process to fail of the same cause, with its own words
HELPER_GRACE = 3.0


def _exit_with_parent(parent: int | None = None) -> None:
    """A worker that dies (kill -9) leaves its job to another worker: this process must not train on.
    ``parent``: the process that started this one, where it may have died before this is called."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while True:
            time.sleep(0.2)  # a cheap call; an orphan's last writes land within this
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _throttled(write: Callable[[float, str], None], seconds: float = 0.5) -> Callable[[float, str], None]:
    """Progress from a loop over thousands of chips: at most one database write per half second,
    but every change of stage (its text) goes through."""
    last_at, last_text = 0.0, ""

    def percent(pct: float, text: str) -> None:
        nonlocal last_at, last_text
        now = time.monotonic()
        if text != last_text or now - last_at >= seconds:
            last_at, last_text = now, text
            write(pct, text)

    return percent


def _import_stack() -> None:
    """Import what training needs (seconds of it: torch, Lightning, the encoders' libraries)."""
    import geotrain.training.captions
    import geotrain.training.classification
    import geotrain.training.cyclegan
    import geotrain.training.detection
    import geotrain.training.edges
    import geotrain.training.panoptic
    import geotrain.training.run
    import geotrain.training.segmentation
    import geotrain.training.translation  # noqa: F401


def _reply(text: str) -> None:
    # straight to the descriptor: a forked child must not inherit a buffer's lock held mid-write
    os.write(1, text.encode() + b"\n")


def fork_server() -> int:
    """Fork a training process for each ``<job_id>\t<log file>`` line read, with the stack imported already.

    Answers ``started <job_id> <pid>`` (or ``failed <job_id> <reason>``) at once and ``ended <pid> <returncode>``
    when that process exits. One thread only, so a fork never copies a lock another thread holds. It ends when
    its input does (its worker is gone), and its training processes follow it within their parent watch.
    """
    sys.stdout = sys.stderr  # a stray print must not land among the replies
    _import_stack()
    server = os.getpid()
    children: dict[int, int] = {}  # pidfd -> pid
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(0, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fd in children:
                    pid = children.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, status = os.waitpid(pid, 0)
                    _reply(f"ended {pid} {os.waitstatus_to_exitcode(status)}")
                    continue
                data = os.read(0, 65536)
                if not data:
                    return 0
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    job_id, log_path = line.decode().split("\t", 1)
                    ready, signal_ready = os.pipe()
                    try:
                        pid = os.fork()
                    except OSError as exc:
                        os.close(ready)
                        os.close(signal_ready)
                        _reply(f"failed {job_id} {exc}")
                        continue
                    if pid == 0:
                        for fd in (ready, *children):
                            os.close(fd)
                        selector.close()
                        os.setsid()  # its own process group: a cancel ends its data loaders with it
                        os.close(signal_ready)
                        _leave(functools.partial(_forked, job_id, log_path, server))
                    os.close(signal_ready)
                    os.read(ready, 1)  # end of file once the child leads its group (or died): killpg reaches it
                    os.close(ready)
                    pidfd = os.pidfd_open(pid)
                    children[pidfd] = pid
                    selector.register(pidfd, selectors.EVENT_READ)
                    _reply(f"started {job_id} {pid}")


def _forked(job_id: str, log_path: str, server: int) -> int:
    """The job's training process, just forked: its output to the job's log, then the job."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (1, 2):
        os.dup2(log, stream)
    os.close(log)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    return main(job_id, parent=server)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class Helpers:
    """Rank 0's side of a job on several processes: it starts the helper ranks and watches them. A helper that
    fails fails the job at once (rank 0 would otherwise wait in its next collective until the time-out),
    unless rank 0 ends first of the same cause and says so itself."""

    def __init__(self, job_id: str, workdir: Path, finish: Callable[[dict[str, object]], int]) -> None:
        self.job_id, self.workdir, self.finish = job_id, workdir, finish
        self.started: list[subprocess.Popen[bytes]] = []
        self.done = threading.Event()

    def start(self, plan: Placement, found: Pretrained | None) -> Group:
        from geotrain.training import distributed

        if plan.world > 1:
            plan, self.started = distributed.launch(
                plan, self.job_id, self.workdir, (found.local, found.label) if found is not None else None
            )
            threading.Thread(target=self._watch, name="helper-watch", daemon=True).start()
        return distributed.join(plan, 0)

    def _watch(self) -> None:
        while not self.done.wait(0.5):
            for rank, helper in enumerate(self.started, start=1):
                code = helper.poll()
                if code is None or code == 0:
                    continue
                if self.done.wait(HELPER_GRACE):
                    return
                log = self.workdir / f"train.rank{rank}.log"
                said = _last_line(log)
                self.finish({
                    "status": "failed",
                    "message": f"Training process {rank + 1} of {len(self.started) + 1} (rank {rank}) failed with exit "
                    f"code {code}{': ' + said.rstrip('.') if said else ''}. See {log}.",
                })  # fmt: skip
                self.exit(1)
                return

    def exit(self, code: int) -> None:
        """End this process now: its own training waits in a collective for a rank that is gone."""
        os._exit(code)

    def stop(self) -> None:
        self.done.set()
        for helper in self.started:
            if helper.poll() is None:
                helper.terminate()
        for helper in self.started:
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()


def helper(rank: int, job_id: str) -> int:
    """A helper rank: train beside the job's first process, which reports and writes; exit 0 when done."""
    _exit_with_parent()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TIMM_OFFLINE", "1")
    from geotrain.config import Settings
    from geotrain.jobs.db import make_engine, make_sessionmaker
    from geotrain.jobs.queue import Queue
    from geotrain.task.params import parse
    from geotrain.training import distributed
    from geotrain.training.run import train_helper

    settings = Settings()
    logs.job_id.set(job_id)
    logs.configure(logging.INFO, settings.log_format, rank=rank)
    engine = make_engine(settings.effective_database_url)
    try:
        params = parse(Queue(make_sessionmaker(engine)).get(job_id).inputs)
    finally:
        engine.dispose()
    given = distributed.handover()
    assert given.rank == rank, (given.rank, rank)
    train_helper(params, settings, settings.jobs_dir / job_id, given)
    return 0


def main(job_id: str, parent: int | None = None) -> int:
    _exit_with_parent(parent)
    # SIGTERM (cancel) unwinds through finally blocks, so no half-written file is left behind
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGUSR1, handback.on_signal)
    # Never reach for the network at run time: hub libraries read their caches only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TIMM_OFFLINE", "1")
    from geotrain.config import Settings
    from geotrain.errors import GeotrainError
    from geotrain.jobs.db import make_engine, make_sessionmaker
    from geotrain.jobs.queue import Queue
    from geotrain.jobs.tables import MessageType
    from geotrain.task.params import parse

    settings = Settings()
    logs.job_id.set(job_id)
    logs.configure(logging.INFO, settings.log_format)
    engine = make_engine(settings.effective_database_url)
    sessions = make_sessionmaker(engine)
    queue = Queue(sessions)
    workdir = settings.jobs_dir / job_id
    workdir.mkdir(parents=True, exist_ok=True)
    outcome = workdir / OUTCOME

    def finish(data: dict[str, object]) -> int:
        outcome.write_text(json.dumps(data))
        return 0 if data["status"] == "succeeded" else 1

    helpers = Helpers(job_id, workdir, finish)

    try:
        from geotrain.jobs.items import Items
        from geotrain.portal.content import Content
        from geotrain.publish.portal import publisher
        from geotrain.training.run import Progress, train

        job = queue.get(job_id)
        params = parse(job.inputs)
        progress = Progress(
            info=patient(lambda text: queue.add_message(job_id, text)),
            warn=patient(lambda text: queue.add_message(job_id, text, MessageType.WARNING)),
            percent=_throttled(patient(lambda pct, text: queue.set_progress(job_id, pct, text))),
            epoch=patient(
                lambda r: queue.add_epoch(
                    job_id, r.epoch,
                    {"train_loss": r.train_loss, "valid_loss": r.valid_loss, "seconds": r.seconds,
                     "images_per_second": r.train_images_per_second},
                    r.metrics,
                )
            ),
        )  # fmt: skip
        result = train(
            params,
            settings,
            workdir,
            progress,
            owner=job.owner,
            portal=publisher(settings, Content(Items(sessions), settings.items_dir), queue.portal_token(job_id)),
            start=helpers.start,
        )
        return finish({"status": "succeeded", "results": {"out_item": result}})
    except GeotrainError as exc:
        return finish({"status": "failed", "message": " ".join([exc.message, *exc.details]).strip()})
    except Exception as exc:  # the job must end with a message, whatever broke
        traceback.print_exc()
        return finish({"status": "failed", "message": f"Training failed: {type(exc).__name__}: {exc}"})
    finally:
        helpers.stop()
        engine.dispose()


def read_outcome(workdir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((workdir / OUTCOME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _leave(run: Callable[[], int]) -> NoReturn:
    """Run, then exit without the interpreter's teardown: with torch and Lightning loaded it took 1.5 s a
    job on 2 cores, after the outcome was on disk and every file closed."""
    try:
        code = run()
    except SystemExit as exc:  # a cancel's SIGTERM, after the finally blocks have run
        code = exc.code if isinstance(exc.code, int) else 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "--fork-server":
        _leave(fork_server)
    if sys.argv[1] == "--rank":
        _leave(lambda: helper(int(sys.argv[2]), sys.argv[3]))
    _leave(lambda: main(sys.argv[1]))
