"""Who is calling: the token a request carries (``token`` parameter, ``X-Esri-Authorization`` or
``Authorization: Bearer``), checked as ``GEOTRAIN_AUTH`` says: not at all (one anonymous user), against this
server's users, or against the configured ArcGIS portal. Bad tokens get ArcGIS's 498, missing ones 499."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from geotrain.api.deps import ParamsDep, SettingsDep
from geotrain.config import Settings
from geotrain.errors import GeotrainError, InvalidToken, TokenRequired
from geotrain.jobs.accounts import ANONYMOUS, Accounts

# a portal's answer for a token is trusted this long before it is asked again
PORTAL_CACHE_SECONDS = 60.0


def bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def token_of(request: Request, params: dict[str, str]) -> str | None:
    return (
        bearer(request.headers.get("x-esri-authorization"))
        or bearer(request.headers.get("authorization"))
        or (params.get("token") or "").strip()
        or None
    )


class PortalTokens:
    """Tokens of an ArcGIS portal, checked with the portal (``community/self`` names the token's user)."""

    def __init__(self, portal_url: str, verify: bool = True) -> None:
        self.portal_url = portal_url.rstrip("/")
        self.verify = verify
        self._known: dict[str, tuple[str | None, float]] = {}

    async def user_of(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._known.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            async with httpx.AsyncClient(timeout=10, verify=self.verify) as client:
                answer = await client.post(
                    f"{self.portal_url}/sharing/rest/community/self", data={"f": "json", "token": token}
                )
            body: Any = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise GeotrainError(
                "Unable to complete operation.", [f"The portal {self.portal_url} cannot check tokens now: {exc}"]
            ) from None
        user = body.get("username") if isinstance(body, dict) and "error" not in body else None
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key] = (str(user) if user else None, time.monotonic() + PORTAL_CACHE_SECONDS)
        return str(user) if user else None


def accounts(request: Request) -> Accounts:
    found: Accounts = request.app.state.accounts
    return found


async def current_user(request: Request, p: ParamsDep, settings: SettingsDep) -> str:
    if settings.auth == "none":
        return ANONYMOUS
    token = token_of(request, p)
    if token is None:
        raise TokenRequired(details=["This server needs a token: get one from its generateToken."])
    if settings.auth == "token":
        user = await run_in_threadpool(accounts(request).user_of, token)
    else:
        portal: PortalTokens = request.app.state.portal_tokens
        user = await portal.user_of(token)
    if user is None:
        raise InvalidToken(details=["Invalid Token: it is unknown or has expired; get a new one."])
    return user


async def optional_user(request: Request, p: ParamsDep, settings: SettingsDep) -> str:
    """The caller, or ANONYMOUS when the request carries no token (a portal's public content needs none);
    a token that is bad is still refused, so a client learns that its sign-in lapsed."""
    if settings.auth == "none" or token_of(request, p) is None:
        return ANONYMOUS
    return await current_user(request, p, settings)


def token_service(settings: Settings, base_url: str) -> str | None:
    """Where clients get tokens for this server (its info resource names it)."""
    if settings.auth == "token":
        return base_url.rstrip("/") + "/sharing/rest/generateToken"
    if settings.auth == "portal":
        return settings.portal_url.rstrip("/") + "/sharing/rest/generateToken"
    return None


UserDep = Annotated[str, Depends(current_user)]
OptionalUserDep = Annotated[str, Depends(optional_user)]
