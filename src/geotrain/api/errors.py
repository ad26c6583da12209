"""The ArcGIS error envelope: every error any route raises is rendered here and nowhere else."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from geotrain.api.render import render, response_format
from geotrain.errors import GeotrainError

log = logging.getLogger(__name__)

_MESSAGES = {
    400: "Unable to complete operation.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "Error handling service request.",
}


def envelope(code: int, message: str, details: list[str]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _format(request: Request) -> str:
    return str(getattr(request.state, "f", None) or response_format(request.query_params.get("f")))


def _respond(request: Request, code: int, message: str, details: list[str]) -> Response:
    # ArcGIS Server answers errors with HTTP 200 and the real code in the body; its clients read the body.
    return render(envelope(code, message, details), _format(request), title=f"Error {code}")


def install(app: FastAPI) -> None:
    @app.exception_handler(GeotrainError)
    async def _domain(request: Request, exc: GeotrainError) -> Response:
        return _respond(request, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _respond(request, 400, _MESSAGES[400], details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _respond(request, exc.status_code, _MESSAGES.get(exc.status_code, str(exc.detail)), [str(exc.detail)])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _respond(request, 500, _MESSAGES[500], [])
