"""``SqlTransaction``: ``tokend.core.ports.Transaction`` over one DBAPI cursor.

Every method runs one compiled statement of ``tokend.store.statements`` on the cursor
(``Database.transaction`` opens it) and decodes with that module's decoders: the token
endpoint's whole write path, at driver level."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tokend import metrics
from tokend.core.device import APPROVED, REDEEMED, StoredDevice
from tokend.core.events import EventKind, log_events
from tokend.core.models import (
    Family,
    SecurityEvent,
    StoredCode,
    StoredRefreshToken,
)
from tokend.core.throttle import Counter
from tokend.store.statements import (
    Compiled,
    Statements,
    code_from_row,
    device_from_row,
    token_from_row,
)

_KINDS = frozenset(EventKind)


class Cursor(Protocol):
    """The part of a DBAPI cursor (sqlite3, psycopg) that the transaction uses."""

    @property
    def rowcount(self) -> int: ...
    def execute(self, sql: str, params: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Sequence[Any]: ...
    def close(self) -> None: ...


class SqlTransaction:
    """``tokend.core.ports.Transaction`` over one DBAPI cursor inside an open transaction."""

    __slots__ = ("_cur", "_on_commit", "_q", "_reopen", "events")

    def __init__(
        self,
        cursor: Cursor,
        statements: Statements,
        *,
        reopen: Callable[[BaseException], Cursor | None] | None = None,
    ) -> None:
        self._cur = cursor
        self._q = statements
        # PostgreSQL, until the first statement has run: given that statement's error, a
        # cursor on a fresh connection if the pooled one was dead, else None
        # (``connections._PgLink``). Nothing had been sent on it, so nothing could commit.
        self._reopen = reopen
        # The events this transaction inserted (a new row each), and what to count
        # (tokend.metrics), for ``committed``: a rolled-back decision leaves no log line and
        # counts nothing.
        self.events: list[SecurityEvent] = []
        self._on_commit: list[Callable[[], None]] | None = None

    def _after_commit(self, count: Callable[[], None]) -> None:
        if self._on_commit is None:
            self._on_commit = []
        self._on_commit.append(count)

    def committed(self) -> None:
        """Called by ``Database.transaction`` after the commit: log the events it made
        durable, and count them and its revocations."""
        if self._on_commit is not None:
            for count in self._on_commit:
                count()
        if self.events:  # committed: now, and only now, they are facts
            log_events(self.events)

    def close(self) -> None:
        self._cur.close()

    def _run(self, stmt: Compiled, params: dict[str, Any]) -> Cursor:
        if self._reopen is not None:
            return self._run_first(stmt, params)
        cur = self._cur
        cur.execute(stmt.sql, stmt.args(params))
        return cur

    def _run_first(self, stmt: Compiled, params: dict[str, Any]) -> Cursor:
        """The transaction's first statement, sent again once on a fresh connection if the
        pooled one turns out dead."""
        reopen, self._reopen = self._reopen, None
        assert reopen is not None
        args = stmt.args(params)
        try:
            self._cur.execute(stmt.sql, args)
        except Exception as exc:
            cur = reopen(exc)
            if cur is None:
                raise
            self._cur = cur
            cur.execute(stmt.sql, args)
        return self._cur

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        row = self._run(self._q.find_token, {"h": token_hash}).fetchone()
        return None if row is None else token_from_row(row)

    def spend_refresh_token(self, token_hash: bytes, *, at: float, successor_hash: bytes) -> bool:
        cur = self._run(self._q.spend, {"h": token_hash, "at": at, "succ": successor_hash})
        return cur.rowcount == 1

    def insert_refresh_token(
        self, token_hash: bytes, *, family_id: str, created_at: float, expires_at: float
    ) -> None:
        self._run(
            self._q.insert_token,
            {"h": token_hash, "fid": family_id, "created": created_at, "expires": expires_at},
        )

    def rotate_refresh_token(
        self,
        token_hash: bytes,
        *,
        at: float,
        successor_hash: bytes,
        family_id: str,
        expires_at: float,
    ) -> bool:
        params = {
            "h": token_hash,
            "at": at,
            "succ": successor_hash,
            "fid": family_id,
            "expires": expires_at,
        }
        rotate = self._q.rotate
        if rotate is not None:  # PostgreSQL: one statement
            return self._run(rotate, params).rowcount == 1
        if not self.spend_refresh_token(token_hash, at=at, successor_hash=successor_hash):
            return False
        self.insert_refresh_token(
            successor_hash, family_id=family_id, created_at=at, expires_at=expires_at
        )
        return True

    def is_refresh_token_live(self, token_hash: bytes) -> bool:
        row = self._run(self._q.is_spent, {"h": token_hash}).fetchone()
        return row is not None and row[0] is None

    def count_grace_retry(self, token_hash: bytes, *, limit: int) -> bool:
        cur = self._run(self._q.count_grace_retry, {"h": token_hash, "limit": limit})
        return cur.rowcount == 1

    def create_family(self, family: Family) -> None:
        self._run(
            self._q.insert_family,
            {
                "id": family.id,
                "client_id": family.client_id,
                "user_id": family.user_id,
                "subject": family.subject,
                "scope": " ".join(family.scopes),
                "created_at": family.created_at,
                "expires_at": family.expires_at,
                "auth_time": family.auth_time,
                "dpop_jkt": family.dpop_jkt,
            },
        )

    def bind_family_dpop(self, family_id: str, jkt: str) -> bool:
        return self._run(self._q.bind_family_dpop, {"fid": family_id, "jkt": jkt}).rowcount == 1

    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool:
        cur = self._run(self._q.record_dpop_proof, {"h": replay_hash, "exp": expires_at})
        return cur.rowcount == 1

    def revoke_access_token(
        self, jti: str, *, client_id: str, at: float, expires_at: float
    ) -> bool:
        """Deny-list an access token (RFC 7009); False if it already is (no error)."""
        params = {"jti": jti, "client_id": client_id, "revoked_at": at, "expires_at": expires_at}
        return self._run(self._q.deny_access_token, params).rowcount == 1

    def revoke_family(self, family_id: str, *, at: float, reason: str) -> bool:
        cur = self._run(self._q.revoke_family, {"fid": family_id, "at": at, "reason": reason})
        if cur.rowcount != 1:
            return False
        self._after_commit(metrics.family_revoked(reason))
        return True

    def record_event(self, event: SecurityEvent) -> None:
        self._run(self._q.insert_event, event_params(event))
        self.events.append(event)
        self._after_commit(metrics.event_committed(event.kind, _KINDS))

    def count_event(self, event: SecurityEvent, *, key: bytes, window: float) -> None:
        self._after_commit(metrics.event_committed(event.kind, _KINDS))
        [(_, hits, _, event_id)] = self._upsert_counters({key: window}, now=event.at)
        if event_id is None:  # the first occurrence of a window: a row of its own
            cur = self._run(self._q.insert_event_returning_id, event_params(event))
            new_id = cur.fetchone()[0]
            self._run(self._q.set_counter_event, {"k": key, "eid": new_id})
            self.events.append(event)  # logged once per window too: a flood adds no lines
        else:  # a repeat: that row's count, no new row
            self._run(self._q.set_event_count, {"eid": event_id, "n": hits})

    def add_failure(self, windows: Mapping[bytes, float], *, now: float) -> dict[bytes, Counter]:
        """``tokend.core.throttle.CounterStore.add_failure`` inside this transaction."""
        rows = self._upsert_counters(windows, now=now)
        return {bytes(k): Counter(hits, end) for k, hits, end, _ in rows}

    def _upsert_counters(self, windows: Mapping[bytes, float], *, now: float) -> Sequence[Any]:
        """One upsert of every counter in ``windows``: rows (key, hits, window end, event id)."""
        keys = sorted(windows)
        params: dict[str, Any] = {"now": now}
        for i, k in enumerate(keys):
            params[f"k{i}"] = k
            params[f"e{i}"] = now + windows[k]
        return self._run(self._q.upsert_counters[len(keys) - 1], params).fetchall()

    def insert_authorization_code(self, code: StoredCode) -> None:
        values = {f: getattr(code, f) for f in StoredCode.__slots__}
        values["scope"] = " ".join(values.pop("scopes"))
        self._run(self._q.insert_code, values)

    def find_authorization_code(self, code_hash: bytes) -> StoredCode | None:
        row = self._run(self._q.find_code, {"code_hash": code_hash}).fetchone()
        return None if row is None else code_from_row(row)

    def consume_authorization_code(self, code_hash: bytes, *, at: float, family_id: str) -> bool:
        cur = self._run(self._q.consume_code, {"h": code_hash, "at": at, "fid": family_id})
        return cur.rowcount == 1

    def find_device_authorization(self, device_code_hash: bytes) -> StoredDevice | None:
        row = self._run(self._q.find_device, {"h": device_code_hash}).fetchone()
        return None if row is None else device_from_row(row)

    def record_device_poll(self, authorization_id: str, *, at: float, interval: int) -> None:
        self._run(self._q.poll_device, {"id": authorization_id, "at": at, "interval": interval})

    def redeem_device_authorization(
        self, authorization_id: str, *, at: float, family_id: str
    ) -> bool:
        params = {"id": authorization_id, "fid": family_id, "approved": APPROVED}
        cur = self._run(self._q.redeem_device, params | {"redeemed": REDEEMED})
        return cur.rowcount == 1


def event_params(event: SecurityEvent) -> dict[str, Any]:
    """The values of a ``security_events`` row (the detail as sorted JSON), for
    ``statements._INSERT_EVENT`` and ``tokend.store.events``."""
    return {
        "at": event.at,
        "kind": str(event.kind),
        "client_id": event.client_id,
        "family_id": event.family_id,
        "user_id": event.user_id,
        "detail": json.dumps(dict(event.detail), sort_keys=True, default=str),
        "address": event.address,
    }
