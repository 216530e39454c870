"""PostgreSQL work runs on threads, at most ``TOKEND_DB_CONCURRENCY`` at once per process
(issue 6: more database sessions than cores only add contention). SQLite runs on the event
loop and needs no limit."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.conftest import BACKENDS, ISSUER, SECRET_KEY, new_postgres_database
from tokend.config import Settings
from tokend.runtime import build_runtime
from tokend.web.app import create_app

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not tested")


@pytest.mark.parametrize("limit", [1, 3])
def test_postgres_calls_are_limited(postgres, limit: int) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=new_postgres_database(postgres),
        secret_key=SECRET_KEY,
        issuer=ISSUER,
        db_concurrency=limit,
    )
    runtime = build_runtime(settings, prepare=True)
    running = peak = 0
    lock = threading.Lock()

    def slow_ping() -> None:  # what /healthz calls, held long enough to overlap
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    runtime.store.ping = slow_ping  # type: ignore[method-assign]
    app = create_app(settings, runtime=runtime)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            responses = await asyncio.gather(*(client.get("/healthz") for _ in range(8)))
        return [r.status_code for r in responses]

    try:
        assert asyncio.run(burst()) == [200] * 8
    finally:
        runtime.close()
    assert peak == limit
