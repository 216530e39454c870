"""Security events written and read outside the token endpoint's ``SqlTransaction``: in a
SQLAlchemy transaction of an admin or account operation (``recording``), and the listing
``tokend events`` reads (``select_events``).

An event is inserted in the same transaction as the decision it records, and logged on
``tokend.security`` only after that transaction has committed (``tokend.core.events.
log_events``), as ``tokend.store.connections.Database.transaction`` does for the grants."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection, Select, insert, select

from tokend import metrics
from tokend.core.events import EventKind, log_events
from tokend.core.models import SecurityEvent
from tokend.store.schema import security_events
from tokend.store.transaction import event_params

ev = security_events.c
_KINDS = frozenset(EventKind)


class EventWriter:
    """Inserts events on one connection inside its transaction; remembers them to log."""

    __slots__ = ("conn", "events")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[SecurityEvent] = []

    def record(self, event: SecurityEvent | None, **changes: Any) -> None:
        """Insert ``event`` (nothing if None) with ``changes`` applied; ``detail=`` entries
        are added to its detail (the outcome the store knows: how many rows, which client)."""
        if event is None:
            return
        extra = changes.pop("detail", None)
        if extra:
            changes["detail"] = {**event.detail, **extra}
        if changes:
            event = dataclasses.replace(event, **changes)
        self.conn.execute(insert(security_events), event_params(event))
        self.events.append(event)


@contextmanager
def recording(begin: AbstractContextManager[Connection]) -> Iterator[EventWriter]:
    """``with recording(engine.begin()) as w:`` a write transaction whose events
    (``w.record``) are logged once it has committed, never if it rolls back."""
    with begin as conn:
        writer = EventWriter(conn)
        yield writer
    log_events(writer.events)
    for event in writer.events:  # and counted, like the grants' (tokend.metrics)
        metrics.event_committed(event.kind, _KINDS)()


def select_events(
    *, kinds: Sequence[str] = (), since: float | None = None, limit: int | None = None
) -> Select[Any]:
    """The newest ``limit`` events of ``kinds`` (all if empty) at or after ``since``,
    newest first (the caller reverses): with one kind, the (kind, at) index answers it;
    otherwise the (at) index, read backwards."""
    stmt = select(security_events)
    if len(kinds) == 1:
        stmt = stmt.where(ev.kind == kinds[0])
    elif kinds:
        stmt = stmt.where(ev.kind.in_(kinds))
    if since is not None:
        stmt = stmt.where(ev.at >= since)
    stmt = stmt.order_by(ev.at.desc(), ev.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def event_row(row: Any) -> dict[str, object]:
    """A ``security_events`` row as a dict, its detail decoded."""
    return {**row._asdict(), "detail": json.loads(row.detail)}
