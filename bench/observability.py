"""What issue 12's observability costs a request: the request id, the timing and counting of
every answer (``tokend.web.metrics.RequestObserver``) and the token endpoint's counter.

    python bench/observability.py [--rounds 20] [--batch 3000] [--refresh-batch 300]

A wrk A/B between two builds cannot resolve a cost of about 1% on a shared 2-core machine
(paired rounds of bench/run.py spread by +-10%), so this measures in one process, on the
app itself (ASGI calls, no sockets), in prometheus_client's multiprocess mode as
`tokend serve` runs it:

1. ``GET /healthz/live`` (an endpoint that does nothing) through the whole app, in
   alternating batches with the layer on and off (off: no request id, no header wrapper,
   no observer); the difference is the layer's CPU per request.
2. The token endpoint's counter (``TokenRequests.count``), on its own.
3. A refresh-token rotation through the same app (the hot path), for the ratio.

CPU is ``time.process_time()`` (every thread of the process); each figure is the minimum
over the batches (the least disturbed), the median is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tokend-bench-metrics-")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from tests.support.family import register_client, register_user, start_family

import tokend.web.app as webapp
from tokend.config import Settings
from tokend.runtime import build_runtime

Message = dict[str, Any]


def scope_of(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[Message]:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    out: list[Message] = []

    async def send(message: Message) -> None:
        out.append(message)

    await app(scope, receive, send)
    assert out[0]["status"] == 200, out
    return out


@contextlib.contextmanager
def layer_off(app: Any) -> Iterator[None]:
    """The app without issue 12's per-request layer (what it did before that issue)."""
    saved = (webapp.bind_request, webapp._with_headers, app._observer)
    webapp.bind_request = lambda headers: (b"x-request-id", b"0" * 32)
    webapp._with_headers = lambda send, headers: send
    app._observer = None
    try:
        yield
    finally:
        webapp.bind_request, webapp._with_headers, app._observer = saved


async def cpu_per_call(fn: Callable[[], Awaitable[None]], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - start) / n * 1e6


async def main(args: argparse.Namespace) -> None:
    smoke = args.smoke
    tmp = tempfile.mkdtemp(prefix="tokend-bench-")
    settings = Settings(
        database_url=f"sqlite:///{tmp}/tokend.db", secret_key="b" * 40, issuer="http://localhost"
    )
    rt = build_runtime(settings, prepare=True)
    reg = register_client(rt, scopes="offline")
    user = register_user(rt, username="bench")
    token = start_family(rt, reg, user, "offline").refresh_token
    app = webapp.create_app(settings, runtime=rt)
    basic = b"Basic " + base64.b64encode(f"{reg.client_id}:{reg.secret}".encode())
    live = scope_of("GET", "/healthz/live", [])

    async def probe() -> None:
        await call(app, live)

    async def refresh() -> None:
        nonlocal token
        body = f"grant_type=refresh_token&refresh_token={token}".encode()
        headers = [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"authorization", basic),
            (b"content-length", str(len(body)).encode()),
        ]
        out = await call(app, scope_of("POST", "/auth/v2/token", headers), body)
        token = orjson.loads(out[1]["body"])["refresh_token"]

    counter = app.direct_routes[("POST", "/auth/v2/token")]._count

    async def count() -> None:
        counter("refresh_token", "success")

    async with app.router.lifespan_context(app):
        await cpu_per_call(probe, args.batch)  # warm up
        await cpu_per_call(refresh, args.refresh_batch)
        on: list[float] = []
        off: list[float] = []
        for i in range(args.rounds):  # alternate which goes first
            for layer in (True, False) if i % 2 else (False, True):
                if layer:
                    on.append(await cpu_per_call(probe, args.batch))
                else:
                    with layer_off(app):
                        off.append(await cpu_per_call(probe, args.batch))
        counts = [await cpu_per_call(count, args.batch) for _ in range(args.rounds)]
        refreshes = [await cpu_per_call(refresh, args.refresh_batch) for _ in range(args.rounds)]
    rt.close()

    def fig(xs: list[float]) -> str:
        return f"{min(xs):8.1f} (median {statistics.median(xs):.1f})"

    layer = min(on) - min(off)
    total = layer + min(counts)
    print(f"GET /healthz/live, layer on   µs CPU/request: {fig(on)}")
    print(f"GET /healthz/live, layer off  µs CPU/request: {fig(off)}")
    print(f"token endpoint counter        µs CPU/request: {fig(counts)}")
    print(f"refresh grant (whole app)     µs CPU/request: {fig(refreshes)}")
    print(
        f"observability per refresh: {layer:.1f} + {min(counts):.1f} = {total:.1f} µs "
        f"= {100 * total / min(refreshes):.1f}% of a refresh's CPU in the app"
        + (" (smoke: two small batches, a check that it runs, not a measurement)" if smoke else "")
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=3000, help="requests per probe batch")
    ap.add_argument("--refresh-batch", type=int, default=300, help="refreshes per batch")
    ap.add_argument("--smoke", action="store_true", help="a few small batches (CI)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.batch, args.refresh_batch = 2, 200, 20
    asyncio.run(main(args))
