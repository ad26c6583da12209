"""Database writes that wait out a database briefly out of reach (a restart, dropped connections), so
that a worker or a training process carries on instead of failing its job over it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)
T = TypeVar("T")


def patient(call: Callable[..., T], seconds: float = 120.0) -> Callable[..., T]:
    """``call``, tried again with growing pauses while the database fails, for up to ``seconds``."""

    def patiently(*args: object) -> T:
        deadline, pause = time.monotonic() + seconds, 0.5
        while True:
            try:
                return call(*args)
            except DBAPIError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("database call failed (%s); retrying in %.1f s", type(exc.orig).__name__, pause)
                time.sleep(pause)
                pause = min(pause * 2, 10.0)

    return patiently
