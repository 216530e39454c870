"""Where the endpoints' storage work runs: ``Call``, the one way an endpoint calls into the
store or a core service, ``await call(fn, *args, **kwargs)``.

SQLite work is a few µs of local I/O: it runs inline, on the event loop. PostgreSQL work
runs on the event loop too, in a greenlet (``sqlalchemy.util.greenlet_spawn``): the store
and the domain stay synchronous code, and every wait for PostgreSQL inside them is an
``await`` of asyncpg (the store's hot engine, ``tokend.store.connections.pick``), so the
loop serves other requests meanwhile. Before issue 14 it ran on threads: each call cost a
thread hop and the psycopg driver's Python, ~0.15 ms of CPU per refresh
(bench/pg_drivers.py measures the modes side by side).

At most ``concurrency`` calls are in flight at once per process: more database sessions
than cores only add contention (issue 6: on 2 cores, c=8 outran c=32 by a third). A call,
once started, runs to its end even if the request is cancelled (the client went away): a
transaction is never abandoned between its statements, and a commit whose outcome the
client will not learn is the same whether or not it waited for it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

import anyio
from sqlalchemy.util import greenlet_spawn

T = TypeVar("T")
P = ParamSpec("P")


class Call(Protocol):
    def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        """Run ``fn(*args, **kwargs)`` where this app runs storage work; await its result."""
        ...


def offloader(*, inline: bool, concurrency: int) -> Call:
    """The ``Call`` of one app: inline (SQLite), or in a greenlet, at most ``concurrency``
    at once (PostgreSQL)."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def run(work: Callable[[], T]) -> T:
        async with limiter:
            result: T = await greenlet_spawn(work)
        return result

    async def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if inline:
            return fn(*args, **kwargs)
        # A task of its own: cancelling the request's task stops the wait, not the work.
        return await asyncio.shield(run(functools.partial(fn, *args, **kwargs)))

    return call
