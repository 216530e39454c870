"""PostgreSQL work runs on threads, at most ``TOKEND_DB_CONCURRENCY`` at once per process
(issue 6: more database sessions than cores only add contention). SQLite runs on the event
loop and needs no limit."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.conftest import ISSUER
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app


@pytest.mark.parametrize("limit", [1, 3])
def test_postgres_calls_are_limited(rt: Runtime, limit: int) -> None:
    if rt.is_sqlite:
        pytest.skip("SQLite work runs on the event loop")
    settings = rt.settings.model_copy(update={"db_concurrency": limit})
    runtime = build_runtime(settings, clock=rt.clock)
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
