"""The portal's built-in OAuth 2.0 sign-in, as ArcGIS portals offer it and as ``GIS(url, username, password)``
drives it: ``oauth2/authorize`` shows a sign-in page whose script carries ``oAuthInfo`` (with the
``oauth_state``), ``oauth2/signin`` checks the password and answers with a token in the redirect's fragment
(implicit grant) or a code (``<title>SUCCESS code=…</title>`` for out-of-band clients), and ``oauth2/token``
trades a code or a refresh token for a token. States, codes and refresh tokens are signed values: nothing
about a sign-in in progress is kept on the server."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from geotrain.api import signed
from geotrain.api.auth import accounts
from geotrain.api.deps import ParamsDep, SettingsDep, gp_route
from geotrain.config import Settings
from geotrain.jobs.accounts import MAX_TOKEN_MINUTES

OOB = "urn:ietf:wg:oauth:2.0:oob"
STATE_SECONDS = 15 * 60
CODE_SECONDS = 5 * 60
REFRESH_MINUTES = MAX_TOKEN_MINUTES
SHARING = ("/portal/sharing", "/sharing", "/arcgis/sharing")
AUTHORIZE_FIELDS = ("client_id", "response_type", "redirect_uri", "state", "expiration")
SIGNIN_FIELDS = ("oauth_state", "username", "password", "expiration", "authorize")
TOKEN_FIELDS = ("grant_type", "client_id", "code", "redirect_uri", "refresh_token", "expiration")
router = APIRouter()


def _redirect_allowed(request: Request, redirect_uri: str) -> bool:
    """Out-of-band, or back to this server itself: a token never travels to a site that asked for it by
    naming itself as the redirect."""
    if redirect_uri == OOB:
        return True
    parts = urlsplit(redirect_uri)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.url.netloc.lower()


def _page(title: str, info: dict[str, Any], body: str = "", status: int = 200) -> HTMLResponse:
    # oAuthInfo stands alone on its line, the first with a brace: clients find it with a one-line pattern
    script = json.dumps(info).replace("<", "\\u003c").replace("'", "\\u0027")
    return HTMLResponse(
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<script>var oAuthInfo = {script};</script>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '</head>\n<body style="font-family:sans-serif;margin:2em;max-width:28em">\n'
        f"{body}\n</body>\n</html>\n",
        status_code=status,
    )


def _signin_form(action: str, state: str, messages: list[str]) -> str:
    errors = "".join(f'<p style="color:#a00">{html.escape(m)}</p>' for m in messages)
    return (
        "<h2>Sign in to geotrain</h2>\n"
        f'{errors}\n<form method="post" action="{html.escape(action)}">\n'
        f'<input type="hidden" name="oauth_state" value="{html.escape(state)}">\n'
        '<p><label>Username<br><input name="username" autocomplete="username" required></label></p>\n'
        '<p><label>Password<br><input name="password" type="password" autocomplete="current-password" '
        'required></label></p>\n<p><button type="submit">Sign in</button></p>\n</form>'
    )


def _refused(message: str, status: int = 400) -> HTMLResponse:
    return _page("Error", {"error": {"code": status, "message": message}}, f"<p>{html.escape(message)}</p>", status)


def _minutes(text: str | None, default: int) -> int:
    try:
        value = int(float(text)) if text else default
    except (ValueError, OverflowError):
        value = default
    return max(1, min(value, MAX_TOKEN_MINUTES))


def _signin_url(request: Request) -> str:
    path = request.url.path
    sharing = path[: path.index("/rest/oauth2/")] if "/rest/oauth2/" in path else "/sharing"
    return f"{sharing}/oauth2/signin"


def _token_issuer(settings: Settings) -> str | None:
    if settings.auth == "token":
        return None
    if settings.auth == "portal":
        return f"Sign in at the portal this server trusts: {settings.portal_url}."
    return "This server has no users to sign in (GEOTRAIN_AUTH=none): use it without signing in."


async def authorize(request: Request, p: ParamsDep, settings: SettingsDep) -> Response:
    refusal = _token_issuer(settings)
    if refusal is not None:
        return _refused(refusal)
    client_id = p.get("client_id", "").strip()
    response_type = (p.get("response_type") or "code").strip()
    redirect_uri = (p.get("redirect_uri") or OOB).strip()
    if not client_id:
        return _refused("Error: Invalid client_id: client_id is required.")
    if response_type not in ("token", "code"):
        return _refused(f"Error: Invalid response_type '{response_type}': token or code.")
    if not _redirect_allowed(request, redirect_uri):
        return _refused(f"Error: Invalid redirect_uri: {redirect_uri} is not this portal or {OOB}.")
    state = signed.sign(
        settings.signing_key(), "oauth-state",
        {"client_id": client_id, "response_type": response_type, "redirect_uri": redirect_uri,
         "state": p.get("state", ""), "minutes": _minutes(p.get("expiration"), settings.token_minutes)},
        STATE_SECONDS,
    )  # fmt: skip
    info = {"oauth_state": state, "client_id": client_id, "appTitle": client_id, "locale": "en-US"}
    return _page("Sign in - geotrain", info, _signin_form(_signin_url(request), state, []))


async def signin(request: Request, p: ParamsDep, settings: SettingsDep) -> Response:
    refusal = _token_issuer(settings)
    if refusal is not None:
        return _refused(refusal)
    given_state = p.get("oauth_state", "")
    state = signed.unsign(settings.signing_key(), "oauth-state", given_state)
    if state is None:
        return _refused("The sign-in has expired or its oauth_state is not this portal's: start again.")
    username, password = p.get("username", "").strip(), p.get("password", "")
    if request.method != "POST" or not username or not password:
        return _page("Sign in - geotrain", {"oauth_state": given_state},
                     _signin_form(request.url.path, given_state, []))  # fmt: skip
    if not await run_in_threadpool(accounts(request).check_password, username, password):
        messages = ["Invalid username or password."]
        info = {"oauth_state": given_state, "code": "OAUTH_0015", "messages": messages}
        return _page("Sign in - geotrain", info, _signin_form(request.url.path, given_state, messages))
    redirect_uri, client_state = str(state["redirect_uri"]), str(state.get("state") or "")
    if state["response_type"] == "token":
        minutes = _minutes(p.get("expiration"), int(state["minutes"]))
        token, _ = await run_in_threadpool(accounts(request).new_token, username, minutes)
        fragment = {"access_token": token, "expires_in": minutes * 60, "username": username,
                    "ssl": str(request.url.scheme == "https").lower(), "persist": "false"}  # fmt: skip
        if client_state:
            fragment["state"] = client_state
        return RedirectResponse(f"{redirect_uri}#{urlencode(fragment)}", status_code=302)
    code = signed.sign(
        settings.signing_key(), "oauth-code",
        {"user": username, "client_id": state["client_id"], "redirect_uri": redirect_uri}, CODE_SECONDS,
    )  # fmt: skip
    if redirect_uri == OOB:
        return _page(f"SUCCESS code={code}", {"oauth_state": given_state}, "<p>Signed in. You may close this page.</p>")
    query = {"code": code, **({"state": client_state} if client_state else {})}
    return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)


async def token(request: Request, p: ParamsDep, settings: SettingsDep) -> Response:
    refusal = _token_issuer(settings)
    if refusal is not None:
        return _oauth_error("invalid_request", refusal)
    key, grant = settings.signing_key(), p.get("grant_type", "")
    if grant == "authorization_code":
        code = signed.unsign(key, "oauth-code", p.get("code", ""))
        if (
            code is None
            or code["client_id"] != p.get("client_id")
            or code["redirect_uri"] != (p.get("redirect_uri") or OOB)
        ):
            return _oauth_error("invalid_grant", "The code is invalid, expired, or for another client.")
        user = str(code["user"])
    elif grant == "refresh_token":
        refresh = signed.unsign(key, "oauth-refresh", p.get("refresh_token", ""))
        if refresh is None or refresh["client_id"] != p.get("client_id"):
            return _oauth_error("invalid_grant", "The refresh token is invalid or expired: sign in again.")
        user = str(refresh["user"])
        if await run_in_threadpool(accounts(request).get, user) is None:
            return _oauth_error("invalid_grant", f"User '{user}' no longer exists.")
    else:
        return _oauth_error("unsupported_grant_type", "grant_type must be authorization_code or refresh_token.")
    minutes = _minutes(p.get("expiration"), settings.token_minutes)
    access, _ = await run_in_threadpool(accounts(request).new_token, user, minutes)
    body: dict[str, Any] = {"access_token": access, "expires_in": minutes * 60, "username": user,
                            "token_type": "bearer", "ssl": request.url.scheme == "https"}  # fmt: skip
    if grant == "authorization_code":
        body["refresh_token"] = signed.sign(
            key, "oauth-refresh", {"user": user, "client_id": p.get("client_id")}, REFRESH_MINUTES * 60
        )
        body["refresh_token_expires_in"] = REFRESH_MINUTES * 60
    return JSONResponse(body)


def _oauth_error(kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": 400, "error": kind, "error_description": message, "message": message,
                                   "details": []}})  # fmt: skip


for _sharing in SHARING:
    gp_route(router, f"{_sharing}/rest/oauth2/authorize", AUTHORIZE_FIELDS)(authorize)
    gp_route(router, f"{_sharing}/oauth2/signin", SIGNIN_FIELDS)(signin)
    gp_route(router, f"{_sharing}/rest/oauth2/token", TOKEN_FIELDS)(token)
