"""Leases: work that one process of many does at a time (the gc sweep, event delivery),
across every worker and every server on one database (the ``leases`` table, migration 0007).

The API (on ``SqlStore``)::

    store.take_lease(name, holder, now=t, ttl=s) -> bool   # take, or renew if ours
    store.release_lease(name, holder) -> bool              # give it up early

``holder`` is unique per process (host, pid and a random part: ``new_holder_id()``). A
process calls ``take_lease`` before each round of the work and does the work only on True;
it calls it again (a renewal: same statement) within ``ttl`` to keep it, and
``release_lease`` when it stops, so another takes over at once; a holder that crashes or
hangs loses the lease ``ttl`` seconds after its last renewal. The ``ttl`` must outlast a
round of work, or the round must renew as it goes (``tokend.store.maintenance`` does).

Taking is one compare-and-set statement, the same on SQLite and PostgreSQL::

    INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :now + :ttl)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE leases.expires_at < :now OR leases.holder = :holder
    RETURNING holder

It returns a row only when it inserted the row or its guarded update applied. Two takers
cannot both win: on SQLite writers are serialized; on PostgreSQL the second upsert waits on
the row lock of the first and then evaluates the ``WHERE`` against the committed row (read
committed re-checks the newest version), which names the other holder and an unexpired
time. Clocks of different servers must agree to well within ``ttl`` (NTP does)."""

from __future__ import annotations

import os
import secrets
import socket

from sqlalchemy import delete, or_
from sqlalchemy.dialects import postgresql, sqlite

from tokend.store.connections import Database
from tokend.store.schema import leases

MAX_HOLDER_CHARS = 64  # leases.holder is String(64)


def new_holder_id() -> str:
    """A holder id unique to this process: host, pid, and random bits (a pid is reused
    across containers, a host name across restarts)."""
    tail = f":{os.getpid()}:{secrets.token_hex(6)}"
    return socket.gethostname()[: MAX_HOLDER_CHARS - len(tail)] + tail


class Leases(Database):
    def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        """Take lease ``name`` for ``holder`` until ``now + ttl``, or renew it if ``holder``
        has it: True when ``holder`` holds it now, False when another unexpired holder does."""
        if ttl <= 0:
            raise ValueError("a lease needs a positive ttl")
        if not 0 < len(holder) <= MAX_HOLDER_CHARS:
            raise ValueError(f"a lease holder id is 1 to {MAX_HOLDER_CHARS} characters")
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        ins = insert(leases).values(name=name, holder=holder, expires_at=now + ttl)
        stmt = ins.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={"holder": ins.excluded.holder, "expires_at": ins.excluded.expires_at},
            where=or_(leases.c.expires_at < now, leases.c.holder == holder),
        ).returning(leases.c.holder)
        with self.engine.begin() as conn:
            return conn.execute(stmt).first() is not None

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up lease ``name`` if ``holder`` has it (True), so another may take it at once."""
        with self.engine.begin() as conn:
            stmt = delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            return conn.execute(stmt).rowcount == 1
