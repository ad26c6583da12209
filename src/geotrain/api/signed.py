"""Short-lived signed values (OAuth sign-in states, authorization codes, refresh tokens): JSON, signed with
HMAC-SHA256 under the server's key, so any API process that shares the key can read what another wrote."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, purpose: str, data: dict[str, Any], seconds: float) -> str:
    body = _b64(json.dumps({**data, "_p": purpose, "_e": time.time() + seconds}, separators=(",", ":")).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(key: bytes, purpose: str, value: str) -> dict[str, Any] | None:
    """The data, when ``value`` was signed with ``key`` for ``purpose`` and has not expired; None otherwise."""
    body, _, mac = value.partition(".")
    try:
        good = hmac.compare_digest(_unb64(mac), hmac.new(key, body.encode(), hashlib.sha256).digest())
        data = json.loads(_unb64(body)) if good else None
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("_p") != purpose or float(data.get("_e", 0)) < time.time():
        return None
    return data
