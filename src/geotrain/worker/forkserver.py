"""The worker's side of the fork server (``python -m geotrain.training.child --fork-server``).

The server imports the training stack once; each job's training process is forked from it in milliseconds
instead of spending seconds importing torch and its libraries. The forked processes are the server's children,
not the worker's, so the server reports their exit codes, and `Forked` gives the worker what it used of a
`subprocess.Popen`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# what a training process exits with when its parent is gone (``training.child._exit_with_parent``)
ORPHANED = 3


class Forked:
    """A training process forked by the fork server."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"training process {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def ended(self, returncode: int) -> None:
        self.returncode = returncode
        self._ended.set()


class ForkServer:
    """One fork server, started now; it imports the training stack while the worker goes on."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "geotrain.training.child", "--fork-server"], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._children: dict[int, Forked] = {}
        self._answers: dict[str, tuple[threading.Event, list[Forked | str]]] = {}
        self._closed = False
        threading.Thread(target=self._read, name="fork-server-replies", daemon=True).start()

    def alive(self) -> bool:
        return not self._closed and self.process.poll() is None

    def start(
        self, job_id: str, log_path: Path, timeout: float, meanwhile: Callable[[], object], every: float
    ) -> Forked | None:
        """The job's training process, forked; None when the server is gone, failed to fork, or did not answer
        within ``timeout``. A server still importing answers when it is done: ``meanwhile`` is called every
        ``every`` seconds until then (the worker keeps its lease)."""
        answered: tuple[threading.Event, list[Forked | str]] = (threading.Event(), [])
        with self._lock:
            if self._closed:
                return None
            self._answers[job_id] = answered
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(f"{job_id}\t{log_path}\n".encode())
            self.process.stdin.flush()
        except (OSError, ValueError):
            return None
        deadline = time.monotonic() + timeout
        while not answered[0].wait(min(every, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() < deadline:
                meanwhile()
                continue
            with self._lock:
                self._answers.pop(job_id, None)
            # it may yet fork the job: the line is in its pipe, so it cannot be reused
            self.close()
            log.warning("job %s: the fork server did not answer in %.0f s", job_id, timeout)
            return None
        answer = answered[1][0] if answered[1] else "the fork server ended"
        if isinstance(answer, str):
            log.warning("job %s: the fork server could not start it: %s", job_id, answer)
            return None
        return answer

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for raw in self.process.stdout:
                self._answer(raw.decode(errors="replace").strip())
        self._gone()

    def _answer(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        first, _, second = rest.partition(" ")
        if word == "ended":
            with self._lock:
                ended = self._children.pop(int(first), None)
            if ended is not None:
                ended.ended(int(second))
            return
        if word not in ("started", "failed"):
            return
        answer: Forked | str = second
        with self._lock:
            if word == "started":
                answer = Forked(int(second))
                self._children[answer.pid] = answer
            waiting = self._answers.pop(first, None)
        if waiting is not None:
            waiting[1].append(answer)
            waiting[0].set()

    def _gone(self) -> None:
        """The server ended: no more answers. Its training processes stop within their parent watch; each is
        reported as orphaned once it has."""
        with self._lock:
            self._closed = True
            waiting, self._answers = list(self._answers.values()), {}
            orphans, self._children = list(self._children.values()), {}
        for event, _ in waiting:
            event.set()
        for child in orphans:
            threading.Thread(target=_await_orphan, args=(child,), name="fork-server-orphan", daemon=True).start()

    def close(self) -> None:
        """End the server; training processes it forked, if any, stop within their parent watch."""
        with self._lock:
            self._closed = True
        self.process.kill()
        self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


def _await_orphan(child: Forked) -> None:
    try:
        pidfd = os.pidfd_open(child.pid)
    except ProcessLookupError:
        child.ended(ORPHANED)
        return
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)
    child.ended(ORPHANED)
