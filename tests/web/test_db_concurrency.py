"""PostgreSQL work of the endpoints runs on the event loop, in greenlets whose waits for the
database are awaits of asyncpg (``tokend.web.offload``), at most ``TOKEND_DB_CONCURRENCY``
at once per process (issue 6: more database sessions than cores only add contention).
SQLite runs inline on the event loop and needs no limit."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.util import await_only

from tests.conftest import BACKENDS, ISSUER, SECRET_KEY, new_postgres_database
from tokend.config import Settings
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not tested")


@pytest.fixture
def settings(postgres) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        database_url=new_postgres_database(postgres), secret_key=SECRET_KEY, issuer=ISSUER
    )


@contextmanager
def _runtime(settings: Settings, **overrides: object) -> Iterator[Runtime]:
    runtime = build_runtime(settings.model_copy(update=overrides), prepare=True)
    try:
        yield runtime
    finally:
        runtime.close()


async def _get(app: object, *paths: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        return list(await asyncio.gather(*(client.get(p) for p in paths)))


@pytest.mark.parametrize("limit", [1, 3])
def test_postgres_calls_are_limited(settings: Settings, limit: int) -> None:
    with _runtime(settings, db_concurrency=limit) as runtime:
        running = peak = 0

        def slow_ping() -> None:  # what /healthz calls, waiting on the loop as asyncpg does
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await_only(asyncio.sleep(0.05))
            running -= 1

        runtime.store.ping = slow_ping  # type: ignore[method-assign]
        app = create_app(runtime.settings, runtime=runtime)
        responses = asyncio.run(_get(app, *["/healthz"] * 8))
        assert [r.status_code for r in responses] == [200] * 8
        assert peak == limit


def test_a_slow_query_does_not_hold_up_the_event_loop(settings: Settings) -> None:
    """While one request waits 0.5 s on PostgreSQL, others are answered: the endpoint's
    work awaits asyncpg on the loop instead of blocking it (a psycopg call made inline on
    the loop would hold every other request for those 0.5 s)."""
    with _runtime(settings) as runtime:
        store = runtime.store
        seen: list[tuple[str, int]] = []

        def slow_ping() -> None:
            with store.engine.connect() as conn:  # type: ignore[attr-defined]
                seen.append((conn.dialect.driver, threading.get_ident()))
                conn.execute(text("SELECT pg_sleep(0.5)"))

        store.ping = slow_ping  # type: ignore[method-assign]
        app = create_app(runtime.settings, runtime=runtime)
        loop_thread: list[int] = []
        live_done: list[float] = []

        async def scenario() -> list[httpx.Response]:
            loop_thread.append(threading.get_ident())
            start = time.monotonic()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:

                async def live() -> httpx.Response:
                    await asyncio.sleep(0.1)  # the slow query has started
                    r = await client.get("/healthz/live")
                    live_done.append(time.monotonic() - start)
                    return r

                return list(await asyncio.gather(client.get("/healthz"), live(), live()))

        responses = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200, 200, 200]
        # asyncpg, on the event loop's own thread (no thread hop)
        assert seen == [("asyncpg", loop_thread[0])]
        assert max(live_done) < 0.4, live_done


def test_outside_the_event_loop_the_store_uses_psycopg(settings: Settings) -> None:
    """The CLI, background threads and tests call the store synchronously: psycopg."""
    with _runtime(settings) as runtime, runtime.store.engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.dialect.driver == "psycopg"
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_call_runs_to_its_end_when_its_request_is_cancelled(settings: Settings) -> None:
    """A cancelled request (the client went away) does not abandon its transaction between
    two statements: the call finishes, commits, and its connection serves the next call."""
    from tokend.web.offload import offloader

    with _runtime(settings) as runtime:
        store: Any = runtime.store
        call = offloader(inline=False, concurrency=1)  # the count waits for the write

        def slow_write() -> None:
            with store.engine.begin() as conn:
                conn.execute(text("CREATE TABLE IF NOT EXISTS probe (n int)"))
                conn.execute(text("SELECT pg_sleep(0.3)"))
                conn.execute(text("INSERT INTO probe VALUES (1)"))

        def count() -> int:
            with store.engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM probe")).scalar_one())

        async def scenario() -> int:
            task = asyncio.create_task(call(slow_write))
            await asyncio.sleep(0.1)  # inside pg_sleep
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            n = await call(count)
            await runtime.aclose()
            return n

        assert asyncio.run(scenario()) == 1
