"""What operators watch, read from the queue's tables: jobs by status, the queue's depth and oldest job, job
durations, workers' last signs of life and their jobs, GPU memory, and whether the schema is current."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from geotrain.jobs.tables import Job, JobStatus, Worker, as_utc


@dataclass(frozen=True)
class WorkerState:
    id: str
    labels: list[str]
    seen_seconds_ago: float
    running: int  # jobs it holds (executing or cancelling)
    gpu_memory: list[dict[str, int]]


@dataclass(frozen=True)
class Snapshot:
    by_status: dict[str, int]
    queued: int
    oldest_queued_seconds: float  # 0 when none is queued
    durations: list[float]  # seconds from start to end of the finished jobs that ran
    workers: list[WorkerState]


class Stats:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def snapshot(self) -> Snapshot:
        now = dt.datetime.now(dt.UTC)
        with self._sessions() as session:
            by_status = {s.value: 0 for s in JobStatus}
            for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                by_status[status] = count
            oldest = session.scalar(select(func.min(Job.submitted_at)).where(Job.status == JobStatus.SUBMITTED))
            finished = [s.value for s in JobStatus if s.finished]
            spans = session.execute(
                select(Job.started_at, Job.finished_at).where(
                    Job.status.in_(finished), Job.started_at.is_not(None), Job.finished_at.is_not(None)
                )
            ).all()
            running = dict(
                session.execute(
                    select(Job.worker_id, func.count())
                    .where(Job.status.in_([JobStatus.EXECUTING, JobStatus.CANCELLING]), Job.worker_id.is_not(None))
                    .group_by(Job.worker_id)
                ).all()
            )
            workers = [
                WorkerState(
                    w.id,
                    list(w.labels),
                    (now - as_utc(w.seen_at)).total_seconds(),
                    running.get(w.id, 0),
                    list(w.gpu_memory or []),
                )
                for w in session.scalars(select(Worker).order_by(Worker.id))
            ]
        return Snapshot(
            by_status=by_status,
            queued=by_status[JobStatus.SUBMITTED.value],
            oldest_queued_seconds=(now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0,
            durations=[
                max(0.0, (as_utc(end) - as_utc(start)).total_seconds()) for start, end in spans if start and end
            ],
            workers=workers,
        )


def reachable(engine: Engine) -> str | None:
    """None when the database answers, else what went wrong."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # any driver's error: the answer is "not reachable", with its words
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
