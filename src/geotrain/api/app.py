"""The FastAPI application: routers assembled in one place. Never imports torch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import geotrain
from geotrain.api import errors, oauth, portal, signals, tokens
from geotrain.api.auth import PortalTokens
from geotrain.api.gp import jobs_router, query_router, service_router, task_router
from geotrain.config import Settings
from geotrain.jobs.accounts import Accounts
from geotrain.jobs.db import make_engine, make_sessionmaker, migrate
from geotrain.jobs.items import Items
from geotrain.jobs.queue import Queue
from geotrain.jobs.stats import Stats
from geotrain.portal.content import Content
from geotrain.task import model_info
from geotrain.task.metadata import SERVICE_PATH, TASK_NAME
from geotrain.worker.loop import start_embedded


def create_app(settings: Settings | None = None, workers: int = 0) -> FastAPI:
    settings = settings or Settings()
    settings.ensure_dirs()
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        migrate(url)  # the embedded default migrates itself; a shared server is migrated with `geotrain migrate`
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    queue = Queue(sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded = start_embedded(settings, queue, workers)
        yield
        for worker, _ in embedded:
            worker.stop()
        for _, thread in embedded:
            thread.join(timeout=settings.handback_seconds + settings.kill_grace_seconds + 15)
        engine.dispose()

    app = FastAPI(title="geotrain", version=geotrain.__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.queue = queue
    app.state.engine = engine
    app.state.accounts = Accounts(sessions)
    app.state.portal_tokens = PortalTokens(settings.portal_url, settings.portal_verify)
    app.state.content = Content(Items(sessions), settings.items_dir)
    errors.install(app)
    signals.install(app, Stats(sessions))
    app.include_router(tokens.router)
    app.include_router(oauth.router)
    for sharing in portal.SHARING:
        app.include_router(portal.router, prefix=sharing)
    app.include_router(service_router)
    for prefix in (f"{SERVICE_PATH}/{TASK_NAME}", f"/{TASK_NAME}"):
        app.include_router(task_router, prefix=prefix)
        app.include_router(jobs_router, prefix=f"{prefix}/jobs")
    for prefix in (f"{SERVICE_PATH}/{model_info.TASK}", f"/{model_info.TASK}"):
        app.include_router(query_router, prefix=prefix)
        app.include_router(jobs_router, prefix=f"{prefix}/jobs")
    app.include_router(jobs_router, prefix="/jobs")
    return app
