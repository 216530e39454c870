"""PostgreSQL restarted or down under a warm pool (no ping at checkout,
``tokend.store.connections``): a restart costs no request once the server is back (the
first statement of a transaction or hot-path read that finds its pooled connection dead is
sent again on a fresh one), and an outage is ``temporarily_unavailable`` until it ends.

Every test runs twice: with the store called directly (psycopg: the CLI, threads) and as a
server's endpoints call it (asyncpg, in greenlets on one event loop that lives across the
restarts, ``tokend.web.offload``). Each test runs its own server (a restart would end the
sessions of every other test)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import event
from sqlalchemy.util import greenlet_spawn

from tests.conftest import BACKENDS, ISSUER, SECRET_KEY
from tests.store.test_sql import refresh
from tests.support.family import register_client, register_user, start_family
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.secrets import hash_secret
from tokend.runtime import Runtime, build_runtime

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL only")

T = TypeVar("T")
Run = Callable[..., Any]


@pytest.fixture
def pg() -> Iterator[object]:
    from tests.support.postgres import PostgresServer

    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prt(pg) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=pg.url("postgres"), secret_key=SECRET_KEY, issuer=ISSUER)
    runtime = build_runtime(settings, clock=FrozenClock(), prepare=True)
    yield runtime
    runtime.close()


@pytest.fixture(params=["psycopg", "asyncpg"])
def run(request: pytest.FixtureRequest, prt: Runtime) -> Iterator[Run]:
    """``run(fn, *args)``: ``fn(*args)`` as the store is called in this test's mode."""
    if request.param == "psycopg":
        yield lambda fn, *args: fn(*args)
        return
    with asyncio.Runner() as runner:  # one loop for the whole test, as a server worker has

        def in_greenlet(fn: Callable[..., T], *args: Any) -> T:
            return runner.run(greenlet_spawn(fn, *args))

        assert in_greenlet(lambda: prt.store.engine.dialect.driver) == "asyncpg"
        yield in_greenlet
        runner.run(prt.aclose())


def _warm(rt: Runtime, n: int = 4) -> None:
    """Leave ``n`` connections open in the pool (each checked out at once, then back)."""
    conns = [rt.store.engine.raw_connection() for _ in range(n)]  # type: ignore[attr-defined]
    for c in conns:
        c.cursor().execute("SELECT 1")
        c.rollback()
    for c in conns:
        c.close()
    assert rt.store.engine.pool.checkedin() >= n  # type: ignore[attr-defined]


def _pids(rt: Runtime) -> set[int]:
    raw = rt.store.engine.raw_connection()  # type: ignore[attr-defined]
    try:
        cur = raw.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        raw.rollback()
        return {pid}
    finally:
        raw.close()


def test_restart_between_two_refreshes_costs_no_request(pg, prt: Runtime, run: Run) -> None:  # type: ignore[no-untyped-def]
    reg = register_client(prt)
    user = register_user(prt)
    token = start_family(prt, reg, user, "openid offline").refresh_token
    assert token is not None
    token = run(refresh, prt, reg, token).refresh_token
    assert token is not None
    run(_warm, prt)
    before = run(_pids, prt)

    pg.restart()

    # A transaction (the refresh), then a hot-path read and an admin read: each on a pool
    # whose connections all died with the old server.
    token = run(refresh, prt, reg, token).refresh_token
    assert token is not None
    run(_warm, prt)
    pg.restart()
    assert run(prt.store.peek_refresh_token, hash_secret(token)) is not None
    pg.restart()
    run(prt.store.ping)
    assert run(_pids, prt).isdisjoint(before)
    # The chain goes on: exactly one successor per rotation, nothing replayed.
    assert run(refresh, prt, reg, token).refresh_token is not None


def test_outage_is_temporarily_unavailable_then_recovers(pg, prt: Runtime, run: Run) -> None:  # type: ignore[no-untyped-def]
    reg = register_client(prt)
    user = register_user(prt)
    token = start_family(prt, reg, user, "openid offline").refresh_token
    assert token is not None
    run(_warm, prt)

    pg.halt()
    try:
        for _ in range(3):  # every pooled connection is dead and no new one can be made
            with pytest.raises(TemporarilyUnavailable):
                run(refresh, prt, reg, token)
        with pytest.raises(TemporarilyUnavailable):
            run(prt.store.peek_refresh_token, hash_secret(token))
        with pytest.raises(TemporarilyUnavailable):
            run(prt.store.ping)
    finally:
        pg.resume()

    # Back: the token the failed attempts presented is still live (none of them committed).
    successor = run(refresh, prt, reg, token).refresh_token
    assert successor is not None
    assert run(refresh, prt, reg, successor).refresh_token is not None


def test_only_a_dead_connection_is_retried(pg, prt: Runtime, run: Run) -> None:  # type: ignore[no-untyped-def]
    """An error of the first statement that is not a lost connection (here: a duplicate key)
    is the transaction's own and is not sent again; a lost connection after the first
    statement is not retried either (the transaction could be half done)."""
    reg = register_client(prt)
    user = register_user(prt)
    first = start_family(prt, reg, user, "offline")
    assert first.refresh_token is not None
    family_id = prt.store.peek_refresh_token(hash_secret(first.refresh_token)).family.id  # type: ignore[union-attr]
    h = hash_secret(first.refresh_token)

    sent: list[str] = []
    engine = run(lambda: prt.store.engine)  # type: ignore[attr-defined]

    @event.listens_for(engine, "checkout")
    def _count(*_: object) -> None:
        sent.append("checkout")

    def duplicate() -> None:
        with prt.store.transaction() as tx:
            tx.insert_refresh_token(h, family_id=family_id, created_at=0, expires_at=1)

    with pytest.raises(Exception) as raised:
        run(duplicate)
    assert "duplicate" in str(raised.value) or "unique" in str(raised.value).lower()
    assert sent == ["checkout"]

    # The second statement finds the server gone: TemporarilyUnavailable, nothing retried.
    sent.clear()

    def server_gone_midway() -> None:
        with prt.store.transaction() as tx:
            assert tx.find_refresh_token(h) is not None
            pg.restart()
            tx.is_refresh_token_live(h)

    with pytest.raises(TemporarilyUnavailable):
        run(server_gone_midway)
    assert sent == ["checkout"]
    # And the next transaction runs on a fresh connection.
    assert run(refresh, prt, reg, first.refresh_token).refresh_token is not None
