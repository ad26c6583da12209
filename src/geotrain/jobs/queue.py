"""Every statement of a job's life: submit, claim under a lease, heartbeat, messages, finish, cancel, reap."""

from __future__ import annotations

import datetime as dt
import math
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from geotrain.errors import JobNotFound
from geotrain.jobs.tables import Job, JobEpoch, JobMessage, JobStatus, MessageType, Worker
from geotrain.jobs.wakeups import CANCEL, CHANNEL, SUBMITTED, Subscriber


def new_job_id() -> str:
    return "j" + secrets.token_hex(16)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Message:
    type: str
    description: str


@dataclass(frozen=True)
class JobRecord:
    id: str
    task: str
    owner: str
    status: JobStatus
    inputs: dict[str, Any]
    results: dict[str, Any] | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    worker_id: str | None
    child_pid: int | None
    progress_percentage: float | None
    progress_message: str | None
    messages: tuple[Message, ...] = ()
    submitted_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Job, messages: tuple[Message, ...] = ()) -> JobRecord:
        return cls(
            id=row.id,
            task=row.task,
            owner=row.owner,
            status=JobStatus(row.status),
            inputs=row.inputs,
            results=row.results,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            cancel_requested=row.cancel_requested,
            worker_id=row.worker_id,
            child_pid=row.child_pid,
            progress_percentage=row.progress_percentage,
            progress_message=row.progress_message,
            messages=messages,
            submitted_at=row.submitted_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


Heartbeat = Literal["ok", "cancel", "lost"]


class Queue:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(event, job_id)`` after a submit or a cancel request commits in this process."""
        self._subscribers.append(subscriber)

    def _announce(self, session: Session, event: str, job_id: str) -> None:
        """NOTIFY the other processes (PostgreSQL delivers it at commit, and not at all on rollback)."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_notify(CHANNEL, f"{event}:{job_id}")))

    def _tell(self, event: str, job_id: str) -> None:
        for subscriber in self._subscribers:
            subscriber(event, job_id)

    def submit(
        self,
        task: str,
        owner: str,
        inputs: dict[str, Any],
        max_attempts: int,
        requires: str | None = None,
        portal_token: str | None = None,
    ) -> JobRecord:
        """Queue a job; ``requires``: the worker label it needs (e.g. "gpu"), None for any worker;
        ``portal_token``: the submitter's token for the portal the job publishes to (kept until it ends)."""
        job = Job(
            id=new_job_id(),
            task=task,
            owner=owner,
            status=JobStatus.SUBMITTED,
            inputs=inputs,
            max_attempts=max_attempts,
            attempts=0,
            cancel_requested=False,
            requires=requires,
            portal_token=portal_token,
        )
        with self._sessions.begin() as session:
            session.add(job)
            session.flush()
            session.add(JobMessage(job_id=job.id, type=MessageType.INFORMATIVE, description="Submitted."))
            self._announce(session, SUBMITTED, job.id)
            record = JobRecord.from_row(job)
        self._tell(SUBMITTED, record.id)
        return record

    def record(
        self, task: str, owner: str, inputs: dict[str, Any], results: dict[str, Any] | None, error: str | None
    ) -> JobRecord:
        """A job a task did at once (no worker): stored finished, succeeded with ``results`` or failed with
        ``error``, so that clients follow it like any other job."""
        now = _now()
        status = JobStatus.FAILED if error is not None else JobStatus.SUCCEEDED
        job = Job(id=new_job_id(), task=task, owner=owner, status=status, inputs=inputs, results=results,
                  max_attempts=1, attempts=1, cancel_requested=False, started_at=now, finished_at=now)  # fmt: skip
        with self._sessions.begin() as session:
            session.add(job)
            session.flush()
            session.add(JobMessage(job_id=job.id, type=MessageType.INFORMATIVE, description="Submitted."))
            if error is not None:
                session.add(JobMessage(job_id=job.id, type=MessageType.ERROR, description=error))
            else:
                session.add(JobMessage(job_id=job.id, type=MessageType.INFORMATIVE, description="Succeeded."))
            session.flush()
            return JobRecord.from_row(job)

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        with self._sessions() as session:
            job = session.get(Job, job_id)
            if job is None or (owner is not None and job.owner != owner):
                raise JobNotFound(job_id)
            rows = session.scalars(select(JobMessage).where(JobMessage.job_id == job_id).order_by(JobMessage.id))
            return JobRecord.from_row(job, tuple(Message(m.type, m.description) for m in rows))

    def of_owner(self, owner: str | None, limit: int = 200) -> list[JobRecord]:
        """``owner``'s jobs (None: everyone's), newest first, without their messages."""
        with self._sessions() as session:
            query = select(Job).order_by(Job.submitted_at.desc(), Job.id).limit(limit)
            if owner is not None:
                query = query.where(Job.owner == owner)
            return [JobRecord.from_row(row) for row in session.scalars(query)]

    def claim(self, worker_id: str, lease_seconds: float, labels: frozenset[str] | None = None) -> JobRecord | None:
        """Take the oldest queued job under a lease that needs no label or one of ``labels`` (None: any
        job); None when there is none.

        One statement, so two workers never take the same job: on PostgreSQL the sub-select skips
        rows another worker has locked; SQLite runs the statement under its single writer lock.
        """
        now = _now()
        oldest = (
            select(Job.id)
            .where(
                Job.status == JobStatus.SUBMITTED,
                *([] if labels is None else [or_(Job.requires.is_(None), Job.requires.in_(sorted(labels)))]),
            )
            .order_by(Job.submitted_at, Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(Job)
            .where(Job.id == oldest, Job.status == JobStatus.SUBMITTED)
            .values(
                status=JobStatus.EXECUTING,
                worker_id=worker_id,
                attempts=Job.attempts + 1,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                started_at=now,
                child_pid=None,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            job_id = session.execute(stmt).scalar_one_or_none()
            if job_id is None:
                return None
            job = session.get_one(Job, job_id)
            session.refresh(job)
            note = (
                "Executing..." if job.attempts == 1 else f"Executing (attempt {job.attempts} of {job.max_attempts})..."
            )
            session.add(JobMessage(job_id=job_id, type=MessageType.INFORMATIVE, description=note))
            return JobRecord.from_row(job)

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> Heartbeat:
        """Extend the lease. 'lost' when the job is no longer this worker's; 'cancel' when asked to stop."""
        with self._sessions.begin() as session:
            stmt = (
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.worker_id == worker_id,
                    Job.status.in_([JobStatus.EXECUTING, JobStatus.CANCELLING]),
                )
                .values(lease_expires_at=_now() + dt.timedelta(seconds=lease_seconds))
                .returning(Job.cancel_requested)
                .execution_options(synchronize_session=False)
            )
            cancel = session.execute(stmt).scalar_one_or_none()
        if cancel is None:
            return "lost"
        return "cancel" if cancel else "ok"

    def set_child(self, job_id: str, pid: int | None) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(child_pid=pid))

    def add_message(self, job_id: str, description: str, type: MessageType = MessageType.INFORMATIVE) -> None:
        with self._sessions.begin() as session:
            session.add(JobMessage(job_id=job_id, type=type, description=description))

    def add_epoch(self, job_id: str, epoch: int, numbers: dict[str, float], metrics: dict[str, float]) -> None:
        """Record a finished epoch (``numbers``: train_loss, valid_loss, seconds, images_per_second); an epoch
        recorded before (run again after a crash) is replaced."""

        def finite(value: float | None) -> float | None:
            return value if value is not None and math.isfinite(value) else None

        with self._sessions.begin() as session:
            session.merge(
                JobEpoch(
                    job_id=job_id, epoch=epoch, train_loss=finite(numbers.get("train_loss")),
                    valid_loss=finite(numbers.get("valid_loss")),
                    metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
                    seconds=finite(numbers.get("seconds")), images_per_second=finite(numbers.get("images_per_second")),
                )
            )  # fmt: skip

    def epochs(self, job_id: str, owner: str | None = None) -> list[dict[str, Any]]:
        """The job's finished epochs in order, as the job page's chart reads them."""
        with self._sessions() as session:
            found = session.scalar(select(Job.owner).where(Job.id == job_id))
            if found is None or (owner is not None and found != owner):
                raise JobNotFound(job_id)  # as get: another user's job is not there
            rows = session.scalars(select(JobEpoch).where(JobEpoch.job_id == job_id).order_by(JobEpoch.epoch))
            return [
                {"epoch": r.epoch, "train_loss": r.train_loss, "valid_loss": r.valid_loss, "metrics": dict(r.metrics),
                 "seconds": r.seconds, "images_per_second": r.images_per_second}
                for r in rows
            ]  # fmt: skip

    def set_progress(self, job_id: str, percentage: float, message: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(progress_percentage=round(percentage, 1), progress_message=message)
            )

    def _finish(self, job_id: str, worker_id: str, status: JobStatus, message: Message | None, **values: Any) -> bool:
        with self._sessions.begin() as session:
            done = session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.worker_id == worker_id,
                    Job.status.in_([JobStatus.EXECUTING, JobStatus.CANCELLING]),
                )
                .values(
                    status=status,
                    finished_at=_now(),
                    lease_expires_at=None,
                    child_pid=None,
                    portal_token=None,
                    **values,
                )
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if done is not None and message is not None:
                session.add(JobMessage(job_id=job_id, type=message.type, description=message.description))
            return done is not None

    def succeed(self, job_id: str, worker_id: str, results: dict[str, Any]) -> bool:
        return self._finish(
            job_id, worker_id, JobStatus.SUCCEEDED, Message(MessageType.INFORMATIVE, "Succeeded."), results=results
        )

    def fail(self, job_id: str, worker_id: str, reason: str) -> bool:
        return self._finish(job_id, worker_id, JobStatus.FAILED, Message(MessageType.ERROR, reason))

    def cancelled(self, job_id: str, worker_id: str) -> bool:
        return self._finish(job_id, worker_id, JobStatus.CANCELLED, Message(MessageType.WARNING, "Cancelled."))

    def release(self, job_id: str, worker_id: str, reason: str) -> bool:
        """Hand a claimed job back to the queue (the worker is stopping): a graceful stop costs it no
        attempt."""
        with self._sessions.begin() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.EXECUTING)
                .values(
                    status=JobStatus.SUBMITTED,
                    worker_id=None,
                    lease_expires_at=None,
                    child_pid=None,
                    attempts=Job.attempts - 1,
                )
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if done is not None:
                session.add(JobMessage(job_id=job_id, type=MessageType.WARNING, description=reason))
                self._announce(session, SUBMITTED, job_id)
        if done is not None:
            self._tell(SUBMITTED, job_id)
        return done is not None

    def request_cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        """Queued jobs are cancelled at once; running ones are flagged for their worker; finished ones stay."""
        with self._sessions.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or (owner is not None and job.owner != owner):
                raise JobNotFound(job_id)
            if job.status == JobStatus.SUBMITTED:
                job.status = JobStatus.CANCELLED
                job.finished_at = _now()
                session.add(JobMessage(job_id=job_id, type=MessageType.WARNING, description="Cancelled."))
            elif job.status == JobStatus.EXECUTING:
                job.status = JobStatus.CANCELLING
                job.cancel_requested = True
                session.add(JobMessage(job_id=job_id, type=MessageType.WARNING, description="Cancel requested."))
                self._announce(session, CANCEL, job_id)
        self._tell(CANCEL, job_id)
        return self.get(job_id)

    def portal_token(self, job_id: str) -> str | None:
        """The submitter's portal token a running job publishes with (never shown by the API)."""
        with self._sessions() as session:
            return session.scalar(select(Job.portal_token).where(Job.id == job_id))

    def finished_before(self, job_ids: list[str], before: dt.datetime) -> list[str]:
        """Those of ``job_ids`` that finished before ``before``."""
        finished = [s.value for s in JobStatus if s.finished]
        with self._sessions() as session:
            rows = session.scalars(
                select(Job.id).where(Job.id.in_(job_ids), Job.status.in_(finished), Job.finished_at < before)
            )
            return list(rows)

    def worker_seen(
        self, worker_id: str, labels: frozenset[str], gpus: int, gpu_memory: list[dict[str, int]] | None = None
    ) -> None:
        """Record that a worker is alive, what it can run and its GPUs' memory in use (every few seconds)."""
        now = _now()
        with self._sessions.begin() as session:
            found = session.get(Worker, worker_id)
            if found is None:
                session.add(Worker(id=worker_id, labels=sorted(labels), gpus=gpus, started_at=now, seen_at=now,
                                   gpu_memory=gpu_memory))  # fmt: skip
            else:
                found.labels, found.gpus, found.seen_at, found.gpu_memory = sorted(labels), gpus, now, gpu_memory

    def worker_gone(self, worker_id: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(Worker).where(Worker.id == worker_id))

    def live_workers(self, within_seconds: float) -> list[tuple[str, list[str]]]:
        """(id, labels) of the workers seen in the last ``within_seconds``."""
        since = _now() - dt.timedelta(seconds=within_seconds)
        with self._sessions() as session:
            rows = session.scalars(select(Worker).where(Worker.seen_at >= since).order_by(Worker.id)).all()
            return [(w.id, list(w.labels)) for w in rows]

    def reap_expired(self) -> list[str]:
        """Jobs whose worker stopped heartbeating go back to the queue, or fail after their last attempt."""
        now = _now()
        reaped: list[str] = []
        with self._sessions.begin() as session:
            expired = session.scalars(
                select(Job)
                .where(
                    Job.status.in_([JobStatus.EXECUTING, JobStatus.CANCELLING]),
                    Job.lease_expires_at < now,
                )
                .with_for_update(skip_locked=True)
            ).all()
            for job in expired:
                reaped.append(job.id)
                lost = f"The worker running this job ({job.worker_id}) stopped responding."
                job.worker_id, job.lease_expires_at, job.child_pid = None, None, None
                if job.status == JobStatus.CANCELLING:
                    job.status, job.finished_at = JobStatus.CANCELLED, now
                    text, kind = f"{lost} Cancelled.", MessageType.WARNING
                elif job.attempts >= job.max_attempts:
                    job.status, job.finished_at = JobStatus.FAILED, now
                    text = f"{lost} The job failed after {job.attempts} of {job.max_attempts} attempts."
                    kind = MessageType.ERROR
                else:
                    job.status = JobStatus.SUBMITTED
                    text, kind = f"{lost} The job was put back in the queue.", MessageType.WARNING
                    self._announce(session, SUBMITTED, job.id)
                session.add(JobMessage(job_id=job.id, type=kind, description=text))
        return reaped
