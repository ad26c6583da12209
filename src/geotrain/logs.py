"""Logging for every geotrain process (API, worker, training process): plain text, or one JSON object a line
with ``GEOTRAIN_LOG_FORMAT=json``. Every line written while a job is worked on carries its job id, from
``job_id`` (a context variable: a worker thread sets it for the job it supervises, a training process for its
whole life)."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
OWN_HANDLERS = ("lightning_fabric", "pytorch_lightning", "lightning")
job_id: ContextVar[str | None] = ContextVar("geotrain_job_id", default=None)


class JobId(logging.Filter):
    """Puts the job being worked on into every record (``job_id``; absent outside a job), and the process's
    own fixed fields (a helper training process's ``rank``)."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        super().__init__()
        self.fixed = fixed

    def filter(self, record: logging.LogRecord) -> bool:
        current = job_id.get()
        if current is not None:
            record.job_id = current
        for key, value in self.fixed.items():
            setattr(record, key, value)
        return True


class _Text(logging.Formatter):
    def __init__(self, fixed: dict[str, Any]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.fixed = fixed

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [str(getattr(record, "job_id", ""))] + [f"{k} {v}" for k, v in self.fixed.items()]
        shown = ", ".join(t for t in tags if t)
        return text.replace(": ", f" [{shown}]: ", 1) if shown else text


class _Json(JsonFormatter):
    def process_log_record(self, log_record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_record.items() if v is not None}


def formatter(fmt: LogFormat, fixed: dict[str, Any]) -> logging.Formatter:
    if fmt == "json":
        return _Json(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return _Text(fixed)


def configure(level: str | int, fmt: LogFormat, **fixed: Any) -> None:
    """Route every logger (uvicorn's and Lightning's included, which propagate here) and Python's warnings
    through one handler on standard error, in the chosen format, with the job id and ``fixed`` added."""
    handler = logging.StreamHandler()
    handler.addFilter(JobId(fixed))
    handler.setFormatter(formatter(fmt, fixed))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    # Lightning gives its loggers a handler of their own, and stops them propagating, when imported before
    # this (the fork server imports it before any job configures logging): their lines come here instead
    for name in OWN_HANDLERS:
        own = logging.getLogger(name)
        for extra in list(own.handlers):
            own.removeHandler(extra)
        own.propagate = True
