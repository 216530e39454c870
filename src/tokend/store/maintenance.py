"""What the admin commands and the server's housekeeping run over many rows: bulk
revocation of families, the security events listing, garbage collection; and the abuse
counters of ``tokend.core.throttle`` (``CounterStore``), which gc also clears."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select, update

from tokend.core.models import SecurityEvent
from tokend.core.throttle import Counter
from tokend.store.connections import Database
from tokend.store.events import event_row, recording, select_events
from tokend.store.schema import (
    abuse_counters,
    authorization_codes,
    browser_sessions,
    device_authorizations,
    dpop_proofs,
    refresh_tokens,
    revoked_access_tokens,
    security_events,
    token_families,
)

fam = token_families.c

# Rows per gc statement (``Maintenance.gc``; a family's refresh tokens go with it): a batch
# is a few milliseconds of work. After each, gc rests as long again (GC_REST times as long).
GC_BATCH = 200
GC_REST = 1.0


class Maintenance(Database):
    # -- abuse limits (tokend.core.throttle.CounterStore) ------------------------------------

    def read_counters(self, digests: Sequence[bytes]) -> dict[bytes, Counter]:
        """The existing counters among ``digests``: one primary-key read, no lock."""
        if not digests:
            return {}
        q = self._q.read_counters[len(digests) - 1]
        rows = self._read_row(q, {f"k{i}": d for i, d in enumerate(digests)}, all_rows=True)
        return {bytes(k): Counter(hits, end) for k, hits, end in rows}

    def add_failure(self, windows: Mapping[bytes, float], *, now: float) -> dict[bytes, Counter]:
        """One failure under each key: a single upsert statement, in its own transaction."""
        with self.transaction() as tx:
            return tx.add_failure(windows, now=now)

    # -- families --------------------------------------------------------------------------

    def revoke_families(
        self,
        *,
        now: float,
        reason: str,
        user_id: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
        event: SecurityEvent | None = None,
    ) -> int:
        """Set-based revocation: one UPDATE however many families match. With ``event``,
        it is recorded in the same transaction, with the number of families revoked."""
        conds: list[ColumnElement[bool]] = [fam.revoked_at.is_(None)]
        if user_id is not None:
            conds.append(fam.user_id == user_id)
        if client_id is not None:
            conds.append(fam.client_id == client_id)
        if family_id is not None:
            conds.append(fam.id == family_id)
        if len(conds) == 1:
            raise ValueError("revoke_families needs a user, client or family")
        with recording(self.engine.begin()) as trail:
            result = trail.conn.execute(
                update(token_families).where(*conds).values(revoked_at=now, revoked_reason=reason)
            )
            trail.record(event, detail={"families": result.rowcount})
            return result.rowcount

    # -- security events -------------------------------------------------------------------

    def list_events(
        self,
        kind: str | None = None,
        *,
        kinds: Sequence[str] = (),
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, object]]:
        """Security events, oldest first: of ``kind`` (or any of ``kinds``; all if neither),
        at or after ``since``, the newest ``limit`` of them. The filters and the limit are
        SQL (the (kind, at) index), never a scan in Python."""
        if kind is not None:
            kinds = (kind, *kinds)
        stmt = select_events(kinds=kinds, since=since, limit=limit)
        with self._read() as conn:
            rows = [event_row(row) for row in conn.execute(stmt).all()]
        rows.reverse()
        return rows

    # -- garbage collection ----------------------------------------------------------------

    def gc(
        self,
        *,
        now: float,
        retention: float,
        event_retention: float | None = None,
        batch: int = GC_BATCH,
        rest: float = GC_REST,
        keep_going: Callable[[], bool] | None = None,
    ) -> dict[str, int]:
        """Delete what can never be valid again, once it is older than ``retention`` seconds:
        expired or revoked families (with their tokens), expired refresh tokens, expired
        authorization codes (consumed ones are kept that long for replay detection), expired
        device authorizations (likewise: a redeemed device code's replay rule), ended
        browser sessions, deny-listed access tokens past their expiry (whatever
        ``retention``: an expired token is refused for its ``exp``), DPoP replay-cache
        rows past theirs (likewise: such a proof is refused for its ``iat``), abuse counters
        whose window has ended (they count nothing any more); and security
        events older than ``event_retention`` (the audit trail; defaults to ``retention``).

        In batches, each its own short transaction, so that gc never holds a lock for long
        (SQLite has one writer; a refresh waits for the batch in progress, not for the
        whole gc): a set-based DELETE of at most ``batch`` rows (a family's refresh tokens
        go with it, by cascade). Where the condition has an index, each batch is
        ``DELETE ... WHERE key IN (SELECT key ... WHERE cond LIMIT :batch)``; where it has
        none (a family's ``revoked_at``, a refresh token's ``expires_at``), the table is
        walked in primary-key windows of ``batch`` rows, each window one read and one
        ranged DELETE, so no statement scans more than ``batch`` rows. After each batch gc
        rests ``rest`` times as long as the batch took, leaving the database's writer (SQLite)
        or its CPU and disk to the requests in between: without it, back-to-back batches
        take the write lock again the moment it is free, ahead of refreshes that are backing
        off. ``keep_going`` is called after each batch (the sweep renews its lease there):
        False stops gc, and the counts so far are returned."""
        if batch < 1:
            raise ValueError("gc batch must be at least 1")
        cutoff = now - retention
        event_cutoff = now - (retention if event_retention is None else event_retention)
        go = keep_going or (lambda: True)
        # What goes, run in this order (a family's refresh tokens go with it, by cascade,
        # before the expired tokens of live families are counted), and reported so.
        # (name, table, key column, condition, its indexed column or None)
        rt_ = refresh_tokens.c
        codes, sessions = authorization_codes.c, browser_sessions.c
        events, denied = security_events.c, revoked_access_tokens.c
        doomed: list[
            tuple[str, Table, ColumnElement[Any], ColumnElement[bool], ColumnElement[Any] | None]
        ] = [
            ("families", token_families, fam.id, fam.expires_at < cutoff, fam.expires_at),
            ("families", token_families, fam.id, fam.revoked_at < cutoff, None),
            ("refresh_tokens", refresh_tokens, rt_.token_hash, rt_.expires_at < cutoff, None),
            ("authorization_codes", authorization_codes, codes.code_hash,
             codes.expires_at < cutoff, codes.expires_at),
            ("device_authorizations", device_authorizations, device_authorizations.c.id,
             device_authorizations.c.expires_at < cutoff, device_authorizations.c.expires_at),
            ("browser_sessions", browser_sessions, sessions.id_hash, sessions.expires_at < now,
             sessions.expires_at),
            ("security_events", security_events, events.id, events.at < event_cutoff,
             events.at),
            # A deny-listed access token past its exp is refused for its expiry anyway.
            ("revoked_access_tokens", revoked_access_tokens, denied.jti, denied.expires_at < now,
             denied.expires_at),
            # RFC 9449 §11.1: a proof past its acceptance window is refused for its iat.
            ("dpop_proofs", dpop_proofs, dpop_proofs.c.jti_hash, dpop_proofs.c.expires_at < now,
             dpop_proofs.c.expires_at),
            # An abuse counter whose window has ended counts nothing any more.
            ("abuse_counters", abuse_counters, abuse_counters.c.key_hash,
             abuse_counters.c.window_end < now, abuse_counters.c.window_end),
        ]  # fmt: skip
        out = dict.fromkeys((name for name, *_ in doomed), 0)
        for name, table, key, cond, index in doomed:
            if index is None:
                batches = self._delete_by_windows(table, key, cond, batch)
            else:
                batches = self._delete_indexed(table, key, cond, index, batch)
            started = time.monotonic()
            for deleted in batches:
                out[name] += deleted
                if not go():
                    return out
                if rest > 0:
                    time.sleep(rest * (time.monotonic() - started))
                started = time.monotonic()
        return out

    def _delete_indexed(
        self,
        table: Table,
        key: ColumnElement[Any],
        cond: ColumnElement[bool],
        index: ColumnElement[Any],
        batch: int,
    ) -> Iterator[int]:
        """Batches of ``DELETE ... WHERE key IN (SELECT key ... WHERE cond ORDER BY index
        LIMIT batch)`` (``cond`` is a range of the indexed column ``index``), until one
        deletes fewer than ``batch`` rows. The ORDER BY holds PostgreSQL's planner to the
        index: where most rows match, a sequential scan looks as cheap, but it would read
        again, from the table's first page, the dead rows of every batch before."""
        doomed = select(key).where(cond).order_by(index).limit(batch)
        stmt = delete(table).where(key.in_(doomed))
        while True:
            with self.engine.begin() as conn:
                n = conn.execute(stmt).rowcount
            yield n
            if n < batch:
                return

    def _delete_by_windows(
        self, table: Table, key: ColumnElement[Any], cond: ColumnElement[bool], batch: int
    ) -> Iterator[int]:
        """Walk the table in windows of ``batch`` primary keys (``cond`` has no index): the
        window's last key, read without a lock, then one DELETE of the rows in the window
        that meet ``cond``. One pass over the table, never more than ``batch`` rows per
        statement."""
        after: Any = None
        while True:
            window = [] if after is None else [key > after]
            # The batch-th key from here (PostgreSQL has no max() of bytea); None: fewer
            # than ``batch`` rows are left, and this window is the last.
            last = select(key).where(*window).order_by(key).offset(batch - 1).limit(1)
            with self._read() as conn:
                end = conn.execute(last).scalar()
            if end is not None:
                window.append(key <= end)
            with self.engine.begin() as conn:
                yield conn.execute(delete(table).where(*window, cond)).rowcount
            if end is None:
                return
            after = end
