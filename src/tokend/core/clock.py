"""Time as an explicit dependency, so expiry rules are tested without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    __slots__ = ()

    def now(self) -> float:
        return time.time()


class FrozenClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def rfc3339(at: float) -> str:
    """``at`` (Unix seconds) as RFC 3339 UTC to the millisecond: ``2026-12-01T04:41:14.123Z``
    (a conversion, not a clock read; here because only this module of the core may import
    ``datetime``)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
