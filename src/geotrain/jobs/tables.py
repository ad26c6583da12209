"""SQLAlchemy tables of the queue. Alembic migrations take their metadata from here."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(enum.StrEnum):
    """The ArcGIS esriJobStatus values, stored as they appear on the wire."""

    SUBMITTED = "esriJobSubmitted"
    EXECUTING = "esriJobExecuting"
    SUCCEEDED = "esriJobSucceeded"
    FAILED = "esriJobFailed"
    TIMED_OUT = "esriJobTimedOut"
    CANCELLING = "esriJobCancelling"
    CANCELLED = "esriJobCancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED)


class MessageType(enum.StrEnum):
    INFORMATIVE = "esriJobMessageTypeInformative"
    WARNING = "esriJobMessageTypeWarning"
    ERROR = "esriJobMessageTypeError"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A timestamp read back from these tables, in UTC: SQLite gives them back without their time zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(33), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(32))
    # parsed parameters, as echoed by inputs/<name>
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # the worker label the job needs ("gpu" or "cpu", from context.processorType); None: any worker
    requires: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # the submitter's token for the ArcGIS portal the job publishes to (GEOTRAIN_AUTH=portal without
    # publishing credentials of its own); dropped when the job ends
    portal_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    child_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    progress_percentage: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_utc_now, onupdate=_utc_now, server_default=func.now()
    )

    __table_args__ = (Index("ix_jobs_status_submitted", "status", "submitted_at"),)


class JobMessage(Base):
    __tablename__ = "job_messages"

    # The autoincrement id orders a job's messages: they are append-only and never reordered.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(48))
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)


class JobEpoch(Base):
    """One finished epoch of a job's training, as numbers (NaN stored as NULL). An epoch run again after a
    crash replaces its row."""

    __tablename__ = "job_epochs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    valid_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    images_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)


class User(Base):
    """A user of ``GEOTRAIN_AUTH=token``: a name, a salted scrypt hash of the password, and the data stores
    the user may read (None: all of them)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    stores: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)


class Token(Base):
    """A token ``generateToken`` gave out, kept as its SHA-256 digest: the database never holds a usable one."""

    __tablename__ = "tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)


class Worker(Base):
    """A running worker, as it last said: what it can run (its labels) and when it was last seen."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    labels: Mapped[list[str]] = mapped_column(JSON)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    # per GPU, as the NVIDIA driver reported it at the worker's last sign of life: {"index", "used", "total"} in bytes
    gpu_memory: Mapped[list[dict[str, int]] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now, index=True)


class Folder(Base):
    """A folder of a user's portal content."""

    __tablename__ = "folders"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    title: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)

    __table_args__ = (UniqueConstraint("owner", "title", name="uq_folders_owner_title"),)


class Item(Base):
    """A portal item of the embedded portal. Its file lies under ``GEOTRAIN_HOME/items/<id>/``; a multipart
    upload keeps its parts there until ``commit`` joins them."""

    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    folder_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    title: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(128))
    # the file's name (``x.dlpk``); None for an item without a file
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    type_keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    snippet: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the item's ``properties`` object (arcgis stamps the job that made it there)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # private | shared | org | public, as ArcGIS names them
    access: Mapped[str] = mapped_column(String(16), default="private")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # partial (parts still coming) | processing | completed | failed, as ``status`` reports it
    status: Mapped[str] = mapped_column(String(16), default="completed")
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now)
    modified_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc_now, onupdate=_utc_now)

    __table_args__ = (Index("ix_items_owner_title", "owner", "title"),)
