"""What operators and orchestrators poll: ``/health`` (the process answers), ``/ready`` (database reachable,
schema current, a worker alive within the lease time) and Prometheus ``/metrics``. Unauthenticated, as
probes and scrapers are; they show counts and worker names, no job's inputs or results."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

import geotrain
from geotrain.config import Settings
from geotrain.jobs.db import schema_revisions
from geotrain.jobs.stats import Stats, reachable

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

# job durations run from seconds (tiny CPU jobs) to days (large GPU jobs)
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)


class QueueCollector(Collector):
    """Read at every scrape from the tables every worker writes, so that one API shows all hosts' work."""

    def __init__(self, stats: Stats, lease_seconds: float) -> None:
        self.stats, self.lease_seconds = stats, lease_seconds

    def collect(self) -> Iterator[Any]:
        try:
            snap = self.stats.snapshot()
        except Exception:  # a scrape must answer, whatever the database does: the gauge below says it
            log.warning("metrics: the queue's tables could not be read", exc_info=True)
            yield GaugeMetricFamily("geotrain_database_up", "Whether the queue's tables could be read.", value=0)
            return
        yield GaugeMetricFamily("geotrain_database_up", "Whether the queue's tables could be read.", value=1)
        jobs = GaugeMetricFamily("geotrain_jobs", "Jobs in the queue's table by status.", labels=["status"])
        for status, count in sorted(snap.by_status.items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("geotrain_queue_depth", "Jobs waiting for a worker.", value=snap.queued)
        yield GaugeMetricFamily(
            "geotrain_queue_oldest_job_age_seconds", "How long the oldest waiting job has waited (0: none waits).",
            value=snap.oldest_queued_seconds,
        )  # fmt: skip
        buckets: list[tuple[str, float]] = [
            (str(bound), float(sum(1 for d in snap.durations if d <= bound))) for bound in DURATION_BUCKETS
        ]
        buckets.append(("+Inf", float(len(snap.durations))))
        yield HistogramMetricFamily(
            "geotrain_job_duration_seconds", "From start to end of the jobs that ran and finished.",
            buckets=buckets, sum_value=float(sum(snap.durations)),
        )  # fmt: skip
        alive = sum(1 for w in snap.workers if w.seen_seconds_ago <= self.lease_seconds)
        yield GaugeMetricFamily("geotrain_workers_alive", "Workers seen within the lease time.", value=alive)
        seen = GaugeMetricFamily(
            "geotrain_worker_last_seen_seconds", "Seconds since each worker's last heartbeat.", labels=["worker"]
        )
        running = GaugeMetricFamily("geotrain_worker_jobs", "Jobs each worker is running.", labels=["worker"])
        used = GaugeMetricFamily(
            "geotrain_gpu_memory_used_bytes", "GPU memory in use, per worker and GPU.", labels=["worker", "gpu"]
        )
        size = GaugeMetricFamily(
            "geotrain_gpu_memory_total_bytes", "GPU memory, per worker and GPU.", labels=["worker", "gpu"]
        )
        for worker in snap.workers:
            seen.add_metric([worker.id], worker.seen_seconds_ago)
            running.add_metric([worker.id], worker.running)
            for gpu in worker.gpu_memory:
                used.add_metric([worker.id, str(gpu["index"])], gpu["used"])
                size.add_metric([worker.id, str(gpu["index"])], gpu["total"])
        yield from (seen, running, used, size)


def install(app: FastAPI, stats: Stats) -> None:
    """/metrics's registry (one per app), the queue collector, and HTTP latency by route."""
    settings: Settings = app.state.settings
    registry = CollectorRegistry()
    registry.register(QueueCollector(stats, settings.lease_seconds))
    latency = Histogram(
        "geotrain_http_request_duration_seconds", "Time to answer HTTP requests, by route template.",
        ["method", "route", "status"], registry=registry,
    )  # fmt: skip
    app.state.metrics = registry

    @app.middleware("http")
    async def timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        latency.labels(request.method, _template(request.scope), str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    app.include_router(router)


def _template(scope: MutableMapping[str, Any]) -> str:
    """The request's path with its path parameters named (``…/jobs/{job_id}``): one series an endpoint, not
    one a job; "unmatched" for paths no route has (each would be a series of its own)."""
    if scope.get("route") is None:
        return "unmatched"
    names = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    return "/".join(f"{{{names[part]}}}" if part in names else part for part in str(scope["path"]).split("/"))


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": geotrain.__version__}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    checks: dict[str, dict[str, Any]] = {}
    problem = reachable(engine)
    checks["database"] = {"ok": problem is None} if problem is None else {"ok": False, "error": problem}
    if problem is None:
        current, head = schema_revisions(engine)
        checks["migrations"] = {"ok": current == head, "current": current, "head": head}
        if current == head:
            alive = request.app.state.queue.live_workers(settings.lease_seconds)
            checks["workers"] = {"ok": bool(alive), "alive": len(alive), "within_seconds": settings.lease_seconds}
        else:
            checks["workers"] = {"ok": False, "error": "unknown until the schema is current: run `geotrain migrate`"}
    else:
        checks["migrations"] = {"ok": False, "error": "the database is not reachable"}
        checks["workers"] = {"ok": False, "error": "the database is not reachable"}
    ok = all(check["ok"] for check in checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
