"""Wake-ups: a job submitted, a cancel requested. Workers wait on them rather than polling the queue.

Within one process (the server's embedded workers) the queue calls its subscribers directly. On PostgreSQL
the queue also sends NOTIFY in the same transaction, and every worker process LISTENs, so a worker on any
host starts a queued job, or stops a cancelled one, within a moment of the commit. Polling stays as the
fallback (a lost connection, SQLite across processes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "geotrain_jobs"
SUBMITTED, CANCEL = "submitted", "cancel"

Subscriber = Callable[[str, str], None]  # (event, job id)


def listens(url: str) -> bool:
    return url.startswith("postgresql")


class Listener:
    """A thread holding a LISTEN connection, handing each notification to ``deliver``; it reconnects when
    the database goes away for a while."""

    def __init__(self, url: str, deliver: Subscriber) -> None:
        self.dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.deliver = deliver
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="geotrain-listen", daemon=True)

    def start(self) -> Listener:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        lost = False
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    if lost:
                        # what was notified while the connection was down is gone: look at the queue and at
                        # the running jobs' cancel flags now, rather than at the next poll or heartbeat
                        self.deliver(SUBMITTED, "")
                        self.deliver(CANCEL, "")
                        lost = False
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            event, _, job_id = note.payload.partition(":")
                            self.deliver(event, job_id)
            except psycopg.Error as exc:
                self.ready.clear()
                lost = True
                log.warning("listening for job notifications failed (%s); retrying", exc)
                # missed notifications only cost a poll interval; the caller is woken to look now
                self.deliver(SUBMITTED, "")
                self.stopping.wait(2.0)
