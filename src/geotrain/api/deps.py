"""Typed dependencies shared by the routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile

from geotrain.api.render import response_format
from geotrain.config import Settings
from geotrain.errors import GeotrainError
from geotrain.jobs.queue import Queue


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_queue(request: Request) -> Queue:
    queue: Queue = request.app.state.queue
    return queue


async def gp_params(request: Request) -> dict[str, str]:
    """Every GP operation takes its values from the query string, a form body, or both (the form wins)."""
    params = dict(request.query_params)
    request.state.f = response_format(params.get("f"))
    if request.method == "POST" and "form" in request.headers.get("content-type", ""):
        try:
            form = await request.form()
        except Exception as exc:  # a malformed body is the client's error, never a 500
            raise GeotrainError("Unable to complete operation.", [f"The request body cannot be read: {exc}"]) from None
        params.update({k: v for k, v in form.items() if not isinstance(v, UploadFile)})
    request.state.f = response_format(params.get("f"))
    return params


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[Queue, Depends(get_queue)]
ParamsDep = Annotated[dict[str, str], Depends(gp_params)]


# every GP operation takes these besides its own
COMMON_FIELDS = ("f", "token")
Route = TypeVar("Route", bound=Callable[..., Any])


def gp_route(router: APIRouter, path: str, fields: tuple[str, ...] = (), **options: Any) -> Callable[[Route], Route]:
    """Register a GP operation for GET (values in the query) and POST (values in a form), as ArcGIS
    clients call them: two routes, so each has an OpenAPI operation of its own that names its fields."""
    names = (*fields, *COMMON_FIELDS)
    query = {"parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names]}
    form = {"type": "object", "properties": {n: {"type": "string"} for n in names}}
    body = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": form}}}}

    def register(endpoint: Route) -> Route:
        router.api_route(path, methods=["GET"], openapi_extra=query, **options)(endpoint)
        router.api_route(path, methods=["POST"], openapi_extra=body, **options)(endpoint)
        return endpoint

    return register
