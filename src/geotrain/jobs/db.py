"""Engines and migrations for the embedded SQLite file or a shared PostgreSQL server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets pollers read while a worker writes; busy_timeout makes writers wait, not fail.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_dir() -> Path:
    """The migrations folder: beside the source tree, or in the working directory (container images)."""
    for candidate in (Path(__file__).resolve().parents[3] / "alembic", Path.cwd() / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        "the alembic/ migrations folder was not found beside the source or in the working directory"
    )


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """The database's migration revision (None: never migrated) and the newest one this code has."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    head = ScriptDirectory(str(alembic_dir())).get_current_head()
    assert head is not None
    return current, head


def migrate(url: str) -> None:
    """Bring the database schema to the newest migration."""
    from alembic.config import Config

    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(alembic_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    log.info("database migrated: %s", url.split("@")[-1])
