"""The server's asyncpg engine (``tokend.store.engine.create_hot_engine``) connects as the
psycopg engine does with the same ``TOKEND_DATABASE_URL``: libpq's connection options mean
the same or are refused at start, never sent to the server as settings it rejects."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from tests.conftest import BACKENDS, new_postgres_database
from tokend.dburl import HOT_CONNECT_TIMEOUT, asyncpg_connect_args
from tokend.store.engine import create_db_engine, create_hot_engine


def test_the_libpq_url_goes_to_asyncpg_with_its_secrets_intact() -> None:
    dsn, kwargs = asyncpg_connect_args(
        "postgresql+psycopg://tokend:p%40ss%2Fw@db.internal:5433/tokend"
        "?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=tokend"
    )
    assert dsn == (
        "postgresql://tokend:p%40ss%2Fw@db.internal:5433/tokend"
        "?application_name=tokend&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
    )
    assert kwargs == {"timeout": HOT_CONNECT_TIMEOUT}


def test_connect_timeout_and_options_are_translated() -> None:
    _, kwargs = asyncpg_connect_args(
        "postgresql://h/db?connect_timeout=3&options=-c%20statement_timeout%3D5s"
        "%20-clock_timeout=100%20--idle-in-transaction-session-timeout=9"
    )
    assert kwargs == {
        "timeout": 3.0,
        "server_settings": {
            "statement_timeout": "5s",
            "lock_timeout": "100",
            "idle_in_transaction_session_timeout": "9",
        },
    }


@pytest.mark.parametrize(
    "query", ["keepalives=1", "tcp_user_timeout=100", "channel_binding=require", "options=-x"]
)
def test_options_asyncpg_cannot_honour_are_refused_without_the_secret(query: str) -> None:
    with pytest.raises(ValueError, match="TOKEND_DATABASE_URL") as refused:
        create_hot_engine(f"postgresql://tokend:hunter2secret@db/tokend?{query}")
    assert "hunter2secret" not in str(refused.value)


def test_sqlite_has_no_hot_engine() -> None:
    assert create_hot_engine("sqlite:///x.db") is None


@pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not tested")
def test_options_reach_the_server_through_both_engines(postgres) -> None:  # type: ignore[no-untyped-def]
    url = new_postgres_database(postgres) + "?options=-c%20statement_timeout%3D1234"
    sync = create_db_engine(url)
    with sync.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
    sync.dispose()
    hot = create_hot_engine(url)
    assert hot is not None

    async def show() -> str:
        async with hot.connect() as conn:
            value = (await conn.execute(text("SHOW statement_timeout"))).scalar()
        await hot.dispose()
        return str(value)

    assert asyncio.run(show()) == "1234ms"
