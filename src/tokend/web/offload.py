"""Where the endpoints' blocking work (storage, key reloads) runs: ``Call``, the one way an
endpoint calls into the store or a core service, ``await call(fn, *args, **kwargs)``.

SQLite work is a few µs of local I/O: it runs on the event loop. PostgreSQL work runs on
threads, at most ``concurrency`` at once per process: more threads than the pool has
connections only queue for them, and more database sessions than cores only add contention
(issue 6: on 2 cores, c=8 outran c=32 by a third).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
P = ParamSpec("P")


class Call(Protocol):
    def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        """Run ``fn(*args, **kwargs)`` where this app runs blocking work; await its result."""
        ...


def offloader(*, inline: bool, concurrency: int) -> Call:
    """The ``Call`` of one app: inline (SQLite), or on at most ``concurrency`` threads."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if inline:
            return fn(*args, **kwargs)
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=limiter
        )

    return call
