"""The token routes ArcGIS clients use: server info (where to get a token), generateToken, and the
signed-in user (``community/self``, which a geotrain in portal mode asks of the portal it trusts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from geotrain.api.auth import UserDep, accounts, current_user, token_service
from geotrain.api.deps import ParamsDep, SettingsDep, gp_route
from geotrain.api.render import render
from geotrain.config import Settings
from geotrain.errors import GeotrainError, ParameterError
from geotrain.task import metadata

TOKEN_FIELDS = ("username", "password", "client", "referer", "ip", "expiration")
router = APIRouter()


@gp_route(router, "/arcgis/rest/info")
async def rest_info(request: Request, p: ParamsDep, settings: SettingsDep) -> Response:
    service = token_service(settings, str(request.base_url))
    auth: dict[str, Any] = {"isTokenBasedSecurity": service is not None}
    if service is not None:
        auth |= {"tokenServicesUrl": service, "shortLivedTokenValidity": settings.token_minutes}
    return render({"currentVersion": metadata.CURRENT_VERSION, "authInfo": auth}, request.state.f, "Server info")


@gp_route(router, "/portal/sharing/rest/generateToken", TOKEN_FIELDS)
@gp_route(router, "/sharing/rest/generateToken", TOKEN_FIELDS)
@gp_route(router, "/arcgis/sharing/rest/generateToken", TOKEN_FIELDS)
@gp_route(router, "/arcgis/tokens/generateToken", TOKEN_FIELDS)
async def generate_token(request: Request, p: ParamsDep, settings: SettingsDep) -> Response:
    if settings.auth != "token":
        where = f" Tokens come from the portal: {settings.portal_url}." if settings.auth == "portal" else ""
        raise GeotrainError("Unable to generate token.", [f"This server does not issue tokens.{where}"])
    if request.method != "POST":
        # credentials in a URL end up in logs and browser history, so ArcGIS takes them by POST only
        raise GeotrainError("Unable to generate token.", ["Send username and password by POST."])
    username, password = p.get("username", "").strip(), p.get("password", "")
    if not username or not password:
        raise GeotrainError("Unable to generate token.", ["'username' and 'password' are required."])
    minutes_text = (p.get("expiration") or "").strip()
    try:
        minutes = int(float(minutes_text)) if minutes_text else settings.token_minutes
    except (ValueError, OverflowError):
        raise ParameterError("expiration", f"'{minutes_text}' is not a number of minutes") from None
    issued = await run_in_threadpool(accounts(request).issue_token, username, password, minutes)
    if issued is None:
        raise GeotrainError("Unable to generate token.", ["Invalid username or password."])
    token, expires = issued
    return render({"token": token, "expires": int(expires.timestamp() * 1000), "ssl": False}, request.state.f)


async def granted_settings(request: Request, settings: SettingsDep, user: UserDep) -> Settings:
    """The settings a request works with: only the data stores granted to its user."""
    if settings.auth != "token":
        return settings
    account = await run_in_threadpool(accounts(request).get, user)
    if account is None or account.stores is None:
        return settings
    return settings.restricted_to(account.stores)


SECURED = [Depends(current_user)]
GrantedDep = Annotated[Settings, Depends(granted_settings)]
