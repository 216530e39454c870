"""Cursors: how far a reader of the security event trail has got (the ``cursors`` table,
migration 0009), and the trail read in id order after a position. The events webhook
(``tokend.web.webhook``) keeps its position here: the id of the last event delivered.

The API (on ``SqlStore``)::

    store.start_cursor(name, now=t) -> int        # the position; made at the newest event
    store.events_after(position, limit=n) -> rows  # the next events, by id
    store.move_cursor(name, position, expected=p, now=t) -> bool  # compare-and-set
    store.newest_event_id() -> int                 # 0 for an empty trail

``move_cursor`` moves only from the position its caller read (``expected``): two processes
that both believe they deliver (a lease taken over while its old holder still works) cannot
move the cursor back or past each other's work; the one whose move fails stops its round."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tokend.store.connections import Database
from tokend.store.events import event_row
from tokend.store.schema import cursors, security_events

ev = security_events.c


class Cursors(Database):
    def newest_event_id(self) -> int:
        """The id of the newest event in the trail, 0 when it is empty."""
        with self._read() as conn:
            return int(conn.execute(select(func.max(ev.id))).scalar() or 0)

    def start_cursor(self, name: str, *, now: float) -> int:
        """Cursor ``name``'s position; a cursor that does not exist yet is made at the newest
        event (a reader starts with what happens from now on, not with the history)."""
        where = cursors.c.name == name
        with self.engine.begin() as conn:
            position = conn.execute(select(cursors.c.position).where(where)).scalar()
            if position is not None:
                return int(position)
            newest = conn.execute(select(func.max(ev.id))).scalar() or 0
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(cursors).values(name=name, position=newest, updated_at=now)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=[cursors.c.name]))
            # Another process may have made it first: its position is the one.
            return int(conn.execute(select(cursors.c.position).where(where)).scalar_one())

    def move_cursor(self, name: str, position: int, *, expected: int, now: float) -> bool:
        """Move cursor ``name`` to ``position`` if it is still at ``expected`` (True)."""
        stmt = (
            update(cursors)
            .where(cursors.c.name == name, cursors.c.position == expected)
            .values(position=position, updated_at=now)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def events_after(self, position: int, *, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events with an id above ``position``, by id (the primary key's
        index), each with its ``id``."""
        stmt = select(security_events).where(ev.id > position).order_by(ev.id).limit(limit)
        with self._read() as conn:
            return [event_row(row) for row in conn.execute(stmt).all()]
