"""Users and tokens on real SQLite and PostgreSQL: passwords and tokens are never stored usable, tokens
expire, and a migrated schema holds the tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from geotrain.jobs.accounts import Accounts, password_matches
from geotrain.jobs.db import make_engine, make_sessionmaker, migrate
from geotrain.jobs.tables import Token, User


@pytest.fixture(params=["sqlite", "postgresql"])
def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Accounts]:
    url = f"sqlite:///{tmp_path / 'a.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrate(url)
    engine = make_engine(url)
    yield Accounts(make_sessionmaker(engine))
    engine.dispose()


def test_passwords_and_tokens_are_stored_only_as_hashes(accounts: Accounts) -> None:
    accounts.add("alice", "correct horse", ["/fileShares/chips"])
    issued = accounts.issue_token("alice", "correct horse", 60)
    assert issued is not None
    token, _ = issued
    with accounts._sessions() as session:
        stored = session.get(User, "alice")
        assert stored is not None and "correct horse" not in stored.password_hash
        assert stored.password_hash.startswith("scrypt$") and password_matches("correct horse", stored.password_hash)
        assert not password_matches("correct horsE", stored.password_hash)
        digests = session.scalars(select(Token.digest)).all()
        assert token not in digests and len(digests) == 1
    assert accounts.user_of(token) == "alice"
    assert accounts.issue_token("alice", "wrong", 60) is None
    assert accounts.get("alice") is not None and accounts.get("alice").stores == ("/fileShares/chips",)  # type: ignore[union-attr]


def test_an_expired_token_is_refused(accounts: Accounts) -> None:
    accounts.add("bob", "a long password")
    issued = accounts.issue_token("bob", "a long password", 60)
    assert issued is not None
    with accounts._sessions.begin() as session:
        session.execute(update(Token).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    assert accounts.user_of(issued[0]) is None
    with pytest.raises(ValueError, match="exists"):
        accounts.add("bob", "another password")
    assert accounts.remove("bob") and not accounts.remove("bob")
