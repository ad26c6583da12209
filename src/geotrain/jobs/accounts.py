"""Users and tokens of ``GEOTRAIN_AUTH=token``: salted scrypt password hashes, tokens kept as digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from geotrain.jobs.tables import Token, User, as_utc

# the one user of GEOTRAIN_AUTH=none, and whoever calls without a token
ANONYMOUS = "anonymous"
# scrypt's cost: about 50 ms and 16 MiB a check, as OWASP suggests for interactive logins
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_TOKEN_MINUTES = 60 * 24 * 14


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(found.hex(), digest)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Account:
    name: str
    stores: tuple[str, ...] | None  # None: every data store
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(user.name, tuple(user.stores) if user.stores is not None else None, user.created_at)


class Accounts:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, name: str, password: str, stores: list[str] | None = None) -> None:
        """A new user; ValueError when the name is taken."""
        with self._sessions.begin() as session:
            if session.get(User, name) is not None:
                raise ValueError(f"user '{name}' exists")
            session.add(User(name=name, password_hash=hash_password(password), stores=stores))

    def remove(self, name: str) -> bool:
        with self._sessions.begin() as session:
            user = session.get(User, name)
            if user is None:
                return False
            session.execute(delete(Token).where(Token.user == name))
            session.delete(user)
            return True

    def grant(self, name: str, stores: list[str] | None) -> bool:
        """Set the data stores ``name`` may read (None: all)."""
        with self._sessions.begin() as session:
            user = session.get(User, name)
            if user is None:
                return False
            user.stores = stores
            return True

    def list(self) -> list[Account]:
        with self._sessions() as session:
            return [Account.of(u) for u in session.scalars(select(User).order_by(User.name)).all()]

    def get(self, name: str) -> Account | None:
        with self._sessions() as session:
            user = session.get(User, name)
            return Account.of(user) if user is not None else None

    def check_password(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (the same work for an unknown name as for a wrong password)."""
        with self._sessions() as session:
            user = session.get(User, name)
            stored = user.password_hash if user is not None else hash_password(secrets.token_hex(8))
            return password_matches(password, stored) and user is not None

    def new_token(self, name: str, minutes: int) -> tuple[str, dt.datetime]:
        """A new token for ``name`` valid ``minutes`` (capped at two weeks)."""
        with self._sessions.begin() as session:
            token = secrets.token_urlsafe(32)
            expires = _now() + dt.timedelta(minutes=max(1, min(minutes, MAX_TOKEN_MINUTES)))
            session.add(Token(digest=_digest(token), user=name, expires_at=expires))
            # tokens past their time are of no use to anyone: drop them as new ones are made
            session.execute(delete(Token).where(Token.expires_at < _now()))
            return token, expires

    def issue_token(self, name: str, password: str, minutes: int) -> tuple[str, dt.datetime] | None:
        """A new token for ``name`` valid ``minutes``; None for a wrong name or password."""
        if not self.check_password(name, password):
            return None
        return self.new_token(name, minutes)

    def user_of(self, token: str) -> str | None:
        """The user a valid, unexpired token belongs to; None otherwise."""
        with self._sessions() as session:
            found = session.get(Token, _digest(token))
            if found is None:
                return None
            return found.user if as_utc(found.expires_at) > _now() else None
