"""The SQLAlchemy implementation of the domain's storage Protocols, plus the admin queries
the CLI needs. No ORM objects anywhere; the token endpoint's statements run at driver level."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.expression import Executable

from tokend.core.errors import AlreadyExists, TemporarilyUnavailable
from tokend.core.models import (
    Client,
    Family,
    SecurityEvent,
    StoredCode,
    StoredRefreshToken,
    User,
)
from tokend.core.throttle import Counter
from tokend.keys.storage import KeyRecord
from tokend.store import engine as engine_mod
from tokend.store.accounts import end_sessions
from tokend.store.checkpoint import WalCheckpointer
from tokend.store.schema import (
    abuse_counters,
    authorization_codes,
    browser_sessions,
    clients,
    dpop_proofs,
    refresh_tokens,
    revoked_access_tokens,
    security_events,
    signing_keys,
    token_families,
    users,
)

T = TypeVar("T")


rt, fam, cl = refresh_tokens.c, token_families.c, clients.c

# The hot path's statements: built once here with SQLAlchemy Core, compiled once per dialect
# (``_Compiled``), then run on the DBAPI cursor directly, skipping SQLAlchemy's per-execute
# machinery (result objects, events, cache-key generation): a refresh is a handful of
# primary-key statements, and that machinery cost more than the statements themselves.
_FAMILY_COLUMNS = (
    fam.id, fam.client_id, fam.user_id, fam.subject, fam.scope,
    fam.created_at, fam.expires_at, fam.auth_time, fam.revoked_at, fam.dpop_jkt,
)  # fmt: skip
# A refresh token and its family, by hash: the columns ``_token_from_row`` reads.
_TOKEN_BY_HASH = (
    select(
        rt.token_hash, rt.created_at, rt.expires_at, rt.spent_at, rt.successor_hash,
        *_FAMILY_COLUMNS,
    )
    .select_from(refresh_tokens.join(token_families))
    .where(rt.token_hash == bindparam("h"))
)  # fmt: skip
# The token's row and its family's, locked together (PostgreSQL FOR NO KEY UPDATE: neither
# row's key changes, so the successor's foreign-key check does not wait): the loser of a
# rotation race, or a refresh racing a revocation or a binding, reads both as they were
# committed, never a stale family beside a fresh token.
_FIND_TOKEN = _TOKEN_BY_HASH.with_for_update(of=(refresh_tokens, token_families), key_share=True)
_SPEND = (
    update(refresh_tokens)
    .where(rt.token_hash == bindparam("h"), rt.spent_at.is_(None))
    .values(spent_at=bindparam("at"), successor_hash=bindparam("succ"))
)
_INSERT_TOKEN = insert(refresh_tokens).values(
    token_hash=bindparam("h"),
    family_id=bindparam("fid"),
    created_at=bindparam("created"),
    expires_at=bindparam("expires"),
)
_IS_SPENT = select(rt.spent_at).where(rt.token_hash == bindparam("h"))
_COUNT_GRACE_RETRY = (
    update(refresh_tokens)
    .where(rt.token_hash == bindparam("h"), rt.grace_uses < bindparam("limit"))
    .values(grace_uses=rt.grace_uses + literal_column("1"))
)
_INSERT_FAMILY = insert(token_families).values(
    {c: bindparam(c) for c in ("id", "client_id", "user_id", "subject", "scope", "created_at",
                               "expires_at", "auth_time", "dpop_jkt")}
)  # fmt: skip
# RFC 9449 §5: bind an unbound family (or confirm the binding) to a DPoP key; compare-and-set.
_BIND_FAMILY_DPOP = (
    update(token_families)
    .where(
        fam.id == bindparam("fid"),
        or_(fam.dpop_jkt.is_(None), fam.dpop_jkt == bindparam("jkt")),
    )
    .values(dpop_jkt=bindparam("jkt"))
)
_REVOKE_FAMILY = (
    update(token_families)
    .where(fam.id == bindparam("fid"), fam.revoked_at.is_(None))
    .values(revoked_at=bindparam("at"), revoked_reason=bindparam("reason"))
)
_INSERT_EVENT = insert(security_events).values(
    {c: bindparam(c) for c in ("at", "kind", "client_id", "family_id", "user_id", "detail")}
)
ac = authorization_codes.c
_CODE_COLUMNS = (
    ac.code_hash, ac.client_id, ac.user_id, ac.subject, ac.redirect_uri, ac.scope, ac.nonce,
    ac.code_challenge, ac.auth_time, ac.created_at, ac.expires_at, ac.consumed_at, ac.family_id,
)  # fmt: skip
_INSERT_CODE = insert(authorization_codes).values(
    {c.name: bindparam(c.name) for c in _CODE_COLUMNS}
)
_FIND_CODE = select(*_CODE_COLUMNS).where(ac.code_hash == bindparam("code_hash")).with_for_update()
_CONSUME_CODE = (
    update(authorization_codes)
    .where(ac.code_hash == bindparam("h"), ac.consumed_at.is_(None))
    .values(consumed_at=bindparam("at"), family_id=bindparam("fid"))
)
_CLIENT_COLUMNS = (
    cl.client_id, cl.name, cl.public, cl.secret_hash, cl.grant_types, cl.redirect_uris,
    cl.scope, cl.refresh_grace, cl.access_token_ttl, cl.refresh_token_ttl,
    cl.refresh_idle_ttl, cl.subject_type, cl.dpop_nonce_required,
)  # fmt: skip
# The settings of a registered client that ``SqlStore.update_client`` may change.
UPDATABLE_CLIENT_FIELDS = frozenset({"dpop_nonce_required"})
_GET_CLIENT = select(*_CLIENT_COLUMNS).where(cl.client_id == bindparam("cid"))
# UserInfo: a family and its user in one read (LEFT JOIN: a family outliving its user shows).
_GET_FAMILY_USER = (
    select(
        fam.id, fam.client_id, fam.user_id, fam.subject, fam.scope,
        fam.created_at, fam.expires_at, fam.auth_time, fam.revoked_at,
        *(users.c[f] for f in User.__slots__),
    )
    .select_from(token_families.outerjoin(users, users.c.id == fam.user_id))
    .where(fam.id == bindparam("fid"))
)  # fmt: skip


# Revocation (RFC 7009) and introspection (RFC 7662): read-only, never a row lock.
_PEEK_TOKEN = _TOKEN_BY_HASH  # no row lock
_PEEK_FAMILY = select(*_FAMILY_COLUMNS).where(fam.id == bindparam("fid"))
rat = revoked_access_tokens.c
_IS_ACCESS_TOKEN_REVOKED = select(rat.jti).where(rat.jti == bindparam("jti"))


def _deny_access_token(dialect: Dialect) -> Executable:
    """INSERT of a deny-list row that does nothing if the jti is already there."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return (
        dialect_insert(revoked_access_tokens)
        .values({c: bindparam(c) for c in ("jti", "client_id", "revoked_at", "expires_at")})
        .on_conflict_do_nothing(index_elements=["jti"])
    )


def _record_dpop_proof(dialect: Dialect) -> Executable:
    """RFC 9449 §11.1 replay cache: INSERT that does nothing (rowcount 0) for a known hash.
    PostgreSQL makes a concurrent insert of the same hash wait for the first transaction."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return (
        dialect_insert(dpop_proofs)
        .values(jti_hash=bindparam("h"), expires_at=bindparam("exp"))
        .on_conflict_do_nothing(index_elements=["jti_hash"])
    )


# Abuse counters (``tokend.core.throttle``): one statement per failure, whatever the number
# of keys (rows in VALUES, sorted so that concurrent upserts lock them in one order), the
# same SQL on SQLite (>= 3.35) and PostgreSQL. SET expressions see the row before the update.
_UPSERT_COUNTERS = """
INSERT INTO abuse_counters (key_hash, window_end, hits) VALUES {rows}
ON CONFLICT (key_hash) DO UPDATE SET
  hits = CASE WHEN abuse_counters.window_end <= :now THEN 1
              ELSE abuse_counters.hits + 1 END,
  event_id = CASE WHEN abuse_counters.window_end <= :now THEN NULL
                  ELSE abuse_counters.event_id END,
  window_end = CASE WHEN abuse_counters.window_end <= :now THEN excluded.window_end
                    ELSE abuse_counters.window_end END
RETURNING key_hash, hits, window_end, event_id
"""
_MAX_COUNTER_KEYS = 4


def _upsert_counters(n: int) -> Executable:
    return text(_UPSERT_COUNTERS.format(rows=", ".join(f"(:k{i}, :e{i}, 1)" for i in range(n))))


def _read_counters(n: int) -> Executable:
    ab = abuse_counters.c
    return select(ab.key_hash, ab.hits, ab.window_end).where(
        ab.key_hash.in_([bindparam(f"k{i}") for i in range(n)])
    )


_INSERT_EVENT_RETURNING_ID = _INSERT_EVENT.returning(security_events.c.id)
_SET_COUNTER_EVENT = (
    update(abuse_counters)
    .where(abuse_counters.c.key_hash == bindparam("k"))
    .values(event_id=bindparam("eid"))
)
_SET_EVENT_COUNT = (
    update(security_events)
    .where(security_events.c.id == bindparam("eid"))
    .values(count=bindparam("n"))
)


def _client_from_row(row) -> Client:  # type: ignore[no-untyped-def]
    (client_id, name, public, secret_hash, grant_types, redirect_uris, scope, grace,
     access_ttl, refresh_ttl, idle_ttl, subject_type, dpop_nonce_required) = row  # fmt: skip
    return Client(
        client_id=client_id,
        name=name,
        public=bool(public),
        secret_hash=None if secret_hash is None else bytes(secret_hash),
        grant_types=frozenset(grant_types.split()),
        redirect_uris=tuple(json.loads(redirect_uris)),
        scopes=tuple(scope.split()),
        refresh_grace=grace,
        access_token_ttl=access_ttl,
        refresh_token_ttl=refresh_ttl,
        refresh_idle_ttl=idle_ttl,
        subject_type=subject_type,
        dpop_nonce_required=bool(dpop_nonce_required),
    )


def _token_from_row(row: Any) -> StoredRefreshToken:
    """A row of ``_TOKEN_BY_HASH``."""
    (h, created, expires, spent, succ, fid, cid, uid, sub, scope, fcreated, fexp, auth,
     revoked, jkt) = row  # fmt: skip
    family = Family(fid, cid, uid, sub, tuple(scope.split()), fcreated, fexp, auth, revoked, jkt)
    return StoredRefreshToken(
        bytes(h), family, created, expires, spent, None if succ is None else bytes(succ)
    )


class _Compiled:
    """One statement compiled for one dialect: SQL text plus how to order its parameters."""

    __slots__ = ("order", "sql")

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def args(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        order = self.order
        return params if order is None else tuple([params[k] for k in order])


class _Statements:
    """The hot path's statements compiled for one engine's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.find_token = _Compiled(_FIND_TOKEN, dialect)
        self.spend = _Compiled(_SPEND, dialect)
        self.insert_token = _Compiled(_INSERT_TOKEN, dialect)
        self.is_spent = _Compiled(_IS_SPENT, dialect)
        self.count_grace_retry = _Compiled(_COUNT_GRACE_RETRY, dialect)
        self.insert_family = _Compiled(_INSERT_FAMILY, dialect)
        self.revoke_family = _Compiled(_REVOKE_FAMILY, dialect)
        self.insert_event = _Compiled(_INSERT_EVENT, dialect)
        self.get_client = _Compiled(_GET_CLIENT, dialect)
        self.get_family_user = _Compiled(_GET_FAMILY_USER, dialect)
        self.insert_code = _Compiled(_INSERT_CODE, dialect)
        self.find_code = _Compiled(_FIND_CODE, dialect)
        self.consume_code = _Compiled(_CONSUME_CODE, dialect)
        self.bind_family_dpop = _Compiled(_BIND_FAMILY_DPOP, dialect)
        self.record_dpop_proof = _Compiled(_record_dpop_proof(dialect), dialect)
        self.peek_token = _Compiled(_PEEK_TOKEN, dialect)
        self.peek_family = _Compiled(_PEEK_FAMILY, dialect)
        self.is_access_token_revoked = _Compiled(_IS_ACCESS_TOKEN_REVOKED, dialect)
        self.deny_access_token = _Compiled(_deny_access_token(dialect), dialect)
        self.upsert_counters = [
            _Compiled(_upsert_counters(n), dialect) for n in range(1, _MAX_COUNTER_KEYS + 1)
        ]
        self.read_counters = [
            _Compiled(_read_counters(n), dialect) for n in range(1, _MAX_COUNTER_KEYS + 1)
        ]
        self.insert_event_returning_id = _Compiled(_INSERT_EVENT_RETURNING_ID, dialect)
        self.set_counter_event = _Compiled(_SET_COUNTER_EVENT, dialect)
        self.set_event_count = _Compiled(_SET_EVENT_COUNT, dialect)


class SqlTransaction:
    """``tokend.core.ports.Transaction`` over one DBAPI cursor inside an open transaction."""

    __slots__ = ("_cur", "_q")

    def __init__(self, cursor: Any, statements: _Statements) -> None:
        self._cur = cursor
        self._q = statements

    def _run(self, stmt: _Compiled, params: dict[str, Any]) -> Any:
        cur = self._cur
        cur.execute(stmt.sql, stmt.args(params))
        return cur

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        row = self._run(self._q.find_token, {"h": token_hash}).fetchone()
        return None if row is None else _token_from_row(row)

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
        return cur.rowcount == 1

    def record_event(self, event: SecurityEvent) -> None:
        self._run(self._q.insert_event, _event_params(event))

    def count_event(self, event: SecurityEvent, *, key: bytes, window: float) -> None:
        [(_, hits, _, event_id)] = self.add_failure({key: window}, now=event.at, raw=True)
        if event_id is None:  # the first occurrence of a window: a row of its own
            cur = self._run(self._q.insert_event_returning_id, _event_params(event))
            new_id = cur.fetchone()[0]
            self._run(self._q.set_counter_event, {"k": key, "eid": new_id})
        else:  # a repeat: that row's count, no new row
            self._run(self._q.set_event_count, {"eid": event_id, "n": hits})

    def add_failure(self, windows: dict[bytes, float], *, now: float, raw: bool = False) -> Any:
        """``tokend.core.throttle.CounterStore.add_failure`` inside this transaction."""
        keys = sorted(windows)
        params: dict[str, Any] = {"now": now}
        for i, k in enumerate(keys):
            params[f"k{i}"] = k
            params[f"e{i}"] = now + windows[k]
        rows = self._run(self._q.upsert_counters[len(keys) - 1], params).fetchall()
        if raw:
            return rows
        return {bytes(k): Counter(hits, end) for k, hits, end, _ in rows}

    def insert_authorization_code(self, code: StoredCode) -> None:
        values = {f: getattr(code, f) for f in StoredCode.__slots__}
        values["scope"] = " ".join(values.pop("scopes"))
        self._run(self._q.insert_code, values)

    def find_authorization_code(self, code_hash: bytes) -> StoredCode | None:
        row = self._run(self._q.find_code, {"code_hash": code_hash}).fetchone()
        if row is None:
            return None
        (h, cid, uid, sub, uri, scope, nonce, challenge, auth, created, expires, consumed,
         fid) = row  # fmt: skip
        return StoredCode(
            bytes(h), cid, uid, sub, uri, tuple(scope.split()), nonce, challenge, auth,
            created, expires, consumed, fid,
        )  # fmt: skip

    def consume_authorization_code(self, code_hash: bytes, *, at: float, family_id: str) -> bool:
        cur = self._run(self._q.consume_code, {"h": code_hash, "at": at, "fid": family_id})
        return cur.rowcount == 1


_CLIENT_ID_WIDTH = clients.c.client_id.type.length  # type: ignore[attr-defined]


def _possible_client_id(client_id: str) -> bool:
    """Could a stored client have this id? Not if the column cannot hold it, nor with a
    control character (no command makes one; PostgreSQL text cannot even hold NUL)."""
    return 0 < len(client_id) <= _CLIENT_ID_WIDTH and client_id.isprintable()


def _event_params(event: SecurityEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "kind": event.kind,
        "client_id": event.client_id,
        "family_id": event.family_id,
        "user_id": event.user_id,
        "detail": json.dumps(dict(event.detail), sort_keys=True),
    }


class _Held:
    """A thread's own SQLite connection. Only that thread's ``threading.local`` holds it
    strongly: when the thread ends, the connection is collected and closed with it; the
    store keeps weak references, to close live ones on ``close()``."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


class _ThreadConnection(threading.local):
    """SQLite: the connection a thread keeps for the hot path (see ``SqlStore``)."""

    held: _Held | None = None


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY (and its extended codes): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _retry_busy(fn: Callable[[], T]) -> T:
    """Run ``fn`` until SQLite stops answering SQLITE_BUSY, waiting in short steps.

    The hot path's connections have no busy handler (``busy_timeout=0``): SQLite's own one
    sleeps at least a whole millisecond between attempts, while the other process holds the
    write lock for ~0.1 ms, and a server that runs SQLite on its event loop is stalled for
    every one of those sleeps. Here the first retry comes after 50 µs, doubling to 2 ms, up
    to the same total as the busy timeout of every other connection."""
    try:
        return fn()
    except sqlite3.OperationalError as exc:
        if not _is_busy(exc):
            raise
    deadline = time.monotonic() + engine_mod.SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 50e-6
    while True:
        time.sleep(delay)
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        delay = min(delay * 2, 0.002)


class SqlStore:
    """``tokend.core.ports.Store`` and the admin operations, over one SQLAlchemy engine.

    SQLite's hot path (``transaction``, ``get_client`` and the other ``_read_row`` reads)
    runs on one DBAPI connection per thread, kept outside the pool: checking a connection out
    of SQLAlchemy's pool and back in cost more than the statements themselves. PostgreSQL
    keeps the pool (a connection is a server process there).

    Clients are cached once ``enable_client_cache`` is called (the server does; the CLI does
    not). Every change made through this store clears the cache at once; changes made by
    other processes (the admin CLI) are picked up by ``refresh_client_cache``, which the
    server calls every ``TOKEND_KEY_REFRESH_INTERVAL`` seconds."""

    _CLIENT_CACHE_SIZE = 10_000
    _UNKNOWN_CLIENT_CACHE_SIZE = 10_000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._q = _Statements(engine.dialect)
        self._sqlite = engine.dialect.name == "sqlite"
        dbapi = engine.dialect.dbapi
        self._operational_error: type[Exception] = dbapi.OperationalError  # type: ignore[union-attr]
        self._local = _ThreadConnection()
        self._thread_conns: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._thread_conns_lock = threading.Lock()
        self._clients: dict[str, Client] | None = None  # None: no cache
        self._unknown_clients: set[str] = set()  # ids read and not found (with the cache)
        self._clients_epoch = 0
        self._clients_fingerprint: tuple[Any, ...] | None = None
        self._checkpointer: WalCheckpointer | None = None

    def start_checkpointer(self, **options: Any) -> bool:
        """SQLite: move WAL checkpoints from the hot path's commits to a background thread
        (``tokend.store.checkpoint``). For a server process; False where there is nothing to
        do (PostgreSQL, an in-memory database, already started)."""
        path = engine_mod.sqlite_path(self.engine.url.render_as_string(hide_password=False))
        if not self._sqlite or path is None or self._checkpointer is not None:
            return False
        self._checkpointer = WalCheckpointer(path, **options)
        for conn in self._open_thread_conns():
            conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer.start()
        return True

    def close(self) -> None:
        """Close every connection this store opened (the pool's and the threads' own)."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        for conn in self._open_thread_conns():
            with suppress(Exception):
                conn.close()
        self.engine.dispose()

    # -- SQLite: one connection per thread -------------------------------------------------

    def _open_thread_conns(self) -> list[Any]:
        with self._thread_conns_lock:
            return [held.conn for held in self._thread_conns]

    def _sqlite_conn(self) -> Any:
        held = self._local.held
        if held is None:
            try:
                fairy = self.engine.raw_connection()  # runs the engine's connect PRAGMAs
                fairy.detach()  # this thread's own from now on, never back to the pool
                conn = fairy.dbapi_connection
                conn.execute("PRAGMA busy_timeout=0")  # waits are _retry_busy's
                if self._checkpointer is not None:
                    conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            except (OperationalError, self._operational_error) as exc:
                raise TemporarilyUnavailable(debug=str(exc)) from exc
            held = _Held(conn)
            with self._thread_conns_lock:
                self._thread_conns.add(held)
            self._local.held = held
        return held.conn

    def _drop_sqlite_conn(self, conn: Any) -> None:
        """Forget a connection after an error other than busy: the next use opens a new one."""
        held, self._local.held = self._local.held, None
        if held is not None:
            with self._thread_conns_lock:
                self._thread_conns.discard(held)
        with suppress(Exception):
            conn.close()

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[SqlTransaction]:
        conn = self._sqlite_conn()
        cur = conn.cursor()
        try:
            _retry_busy(lambda: cur.execute("BEGIN IMMEDIATE"))
            try:
                yield SqlTransaction(cur, self._q)
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(Exception):
                        cur.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            # Busy past the timeout, disk full, I/O error: retryable, and never shown raw.
            cur.close()
            if not _is_busy(exc):
                self._drop_sqlite_conn(conn)
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        finally:
            with suppress(sqlite3.ProgrammingError):  # closed above
                cur.close()

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """A write transaction. SQLite: ``BEGIN IMMEDIATE`` on the thread's connection
        (writers queue for the lock up front); PostgreSQL: read committed on a pooled
        connection, with the token row locked by ``find_refresh_token``."""
        if self._sqlite:
            with self._sqlite_transaction() as tx:
                yield tx
            return
        try:
            conn = self.engine.raw_connection()
        except (OperationalError, self._operational_error) as exc:
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        try:
            cur = conn.cursor()
            try:
                try:
                    yield SqlTransaction(cur, self._q)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            finally:
                cur.close()
        except self._operational_error as exc:
            # Connection lost, server shutting down: retryable, and never shown raw.
            conn.invalidate()  # a broken server connection must not go back to the pool
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        finally:
            conn.close()  # back to the pool

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read-only connection (SQLite: a deferred transaction, never the write lock)."""
        try:
            with self.engine.connect().execution_options(tokend_read=True) as conn:
                yield conn
        except OperationalError as exc:
            raise TemporarilyUnavailable(debug=str(exc.orig)) from exc

    def _read_row(self, q: _Compiled, params: dict[str, Any], *, all_rows: bool = False) -> Any:
        """One row of a hot-path read at driver level, or None (``all_rows``: every row)."""
        args = q.args(params)
        if self._sqlite:
            conn = self._sqlite_conn()
            try:
                if all_rows:
                    return _retry_busy(lambda: conn.execute(q.sql, args).fetchall())
                return _retry_busy(lambda: conn.execute(q.sql, args).fetchone())
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    self._drop_sqlite_conn(conn)
                raise TemporarilyUnavailable(debug=str(exc)) from exc
        try:
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                cur.execute(q.sql, args)
                row = cur.fetchall() if all_rows else cur.fetchone()
                cur.close()
                conn.rollback()  # end the implicit read transaction
            finally:
                conn.close()
        except (OperationalError, self._operational_error) as exc:
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        return row

    # -- clients ---------------------------------------------------------------------------

    def enable_client_cache(self) -> None:
        """Start caching clients. The first ``refresh_client_cache`` only sets the baseline
        it compares to, so it is taken here, before anything is cached."""
        if self._clients is None:
            self.refresh_client_cache()
            self._clients = {}

    def invalidate_client_cache(self) -> None:
        self._clients_epoch += 1
        if self._clients is not None:
            self._clients.clear()
        self._unknown_clients.clear()

    def refresh_client_cache(self) -> bool:
        """Drop the cached clients if the clients table changed since the last call (or if
        this is the first call); True when it did."""
        with self._read() as conn:
            fingerprint = tuple(
                conn.execute(
                    select(func.count(), func.max(cl.updated_at), func.sum(cl.updated_at))
                ).one()
            )
        if fingerprint == self._clients_fingerprint:
            return False
        self.invalidate_client_cache()
        self._clients_fingerprint = fingerprint
        return True

    def get_client(self, client_id: str) -> Client | None:
        """The client, or None. An id that no client can have (longer than the column,
        or with a control character) is None without a read; with the cache on, an unknown
        id is remembered as unknown (bounded), until the cache is next cleared: by a change
        through this store at once, by one through another process within the refresh
        interval. So unknown and garbage ids cost what a known client's does."""
        if not _possible_client_id(client_id):
            return None
        cache = self._clients
        if cache is not None:
            client = cache.get(client_id)
            if client is not None:
                return client
            unknown = self._unknown_clients
            if client_id in unknown:
                return None
        epoch = self._clients_epoch
        row = self._read_row(self._q.get_client, {"cid": client_id})
        client = None if row is None else _client_from_row(row)
        # Not if the cache was invalidated while this row was read: it may be the old one.
        if cache is not None and epoch == self._clients_epoch:
            if client is None:
                if len(unknown) >= self._UNKNOWN_CLIENT_CACHE_SIZE:
                    unknown.clear()
                unknown.add(client_id)
            else:
                if len(cache) >= self._CLIENT_CACHE_SIZE:
                    cache.clear()
                cache[client_id] = client
        return client

    def create_client(self, client: Client, *, now: float) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(clients),
                    {
                        "client_id": client.client_id,
                        "name": client.name,
                        "public": client.public,
                        "secret_hash": client.secret_hash,
                        "secret_rotated_at": None if client.public else now,
                        "grant_types": " ".join(sorted(client.grant_types)),
                        "redirect_uris": json.dumps(list(client.redirect_uris)),
                        "scope": " ".join(client.scopes),
                        "refresh_grace": client.refresh_grace,
                        "access_token_ttl": client.access_token_ttl,
                        "refresh_token_ttl": client.refresh_token_ttl,
                        "refresh_idle_ttl": client.refresh_idle_ttl,
                        "subject_type": client.subject_type,
                        "dpop_nonce_required": client.dpop_nonce_required,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        except IntegrityError as exc:
            raise AlreadyExists(client.client_id) from exc
        finally:
            self.invalidate_client_cache()

    def list_clients(self) -> list[Client]:
        with self._read() as conn:
            rows = conn.execute(select(*_CLIENT_COLUMNS).order_by(cl.created_at)).all()
        return [_client_from_row(r) for r in rows]

    def count_clients(self) -> int:
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(clients)).scalar_one()

    def delete_client(self, client_id: str) -> bool:
        try:
            with self.engine.begin() as conn:
                # Families and their refresh tokens go with it (ON DELETE CASCADE).
                stmt = delete(clients).where(clients.c.client_id == client_id)
                return conn.execute(stmt).rowcount == 1
        finally:
            self.invalidate_client_cache()

    def set_client_secret(self, client_id: str, secret_hash: bytes, *, now: float) -> bool:
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(clients)
                    .where(clients.c.client_id == client_id, clients.c.public.is_(False))
                    .values(secret_hash=secret_hash, secret_rotated_at=now, updated_at=now)
                )
                return result.rowcount == 1
        finally:
            self.invalidate_client_cache()

    def update_client(
        self, client_id: str, changes: dict[str, Any], *, now: float
    ) -> Client | None:
        """Set the given settings (``UPDATABLE_CLIENT_FIELDS``) of the client; the updated
        client, or None if there is no such client."""
        unknown = set(changes) - UPDATABLE_CLIENT_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        where = cl.client_id == client_id
        try:
            with self.engine.begin() as conn:
                stmt = update(clients).where(where).values(**changes, updated_at=now)
                if conn.execute(stmt).rowcount:
                    row = conn.execute(select(*_CLIENT_COLUMNS).where(where)).one()
                    return _client_from_row(row)
            return None
        finally:
            self.invalidate_client_cache()

    # -- users -----------------------------------------------------------------------------

    def create_user(self, user: User, *, now: float) -> None:
        values = {f: getattr(user, f) for f in User.__slots__}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users), {**values, "created_at": now, "updated_at": now})
        except IntegrityError as exc:
            raise AlreadyExists(user.username) from exc

    def get_user_by_username(self, username: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(
                select(*(users.c[f] for f in User.__slots__)).where(users.c.username == username)
            ).first()
        return None if row is None else User(*row)

    def get_family_and_user(self, family_id: str) -> tuple[Family, User | None] | None:
        """The family (revoked or not) and its user (None if deleted), in one read at
        driver level (the UserInfo endpoint's hot path); None for an unknown family."""
        row = self._read_row(self._q.get_family_user, {"fid": family_id})
        if row is None:
            return None
        family = Family(row[0], row[1], row[2], row[3], tuple(row[4].split()), *row[5:9])
        if row[9] is None:
            return family, None
        user = dict(zip(User.__slots__, row[9:], strict=True))
        for flag in ("email_verified", "phone_number_verified"):
            user[flag] = bool(user[flag])  # SQLite's driver returns 0/1
        return family, User(**user)

    def get_user(self, user_id: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(
                select(*(users.c[f] for f in User.__slots__)).where(users.c.id == user_id)
            ).first()
        return None if row is None else User(*row)

    def update_user(self, username: str, changes: dict[str, Any], *, now: float) -> User | None:
        """Set the given fields (any of ``User``'s but ``id`` and ``username``) of the user;
        the updated user, or None if there is no such user. A new password ends every
        browser session of the user in the same transaction (``accounts.end_sessions``):
        whoever signed in with the old one, or stole a session cookie, is signed out."""
        unknown = set(changes) - (set(User.__slots__) - {"id", "username"})
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        where = users.c.username == username
        with self.engine.begin() as conn:
            if conn.execute(update(users).where(where).values(**changes, updated_at=now)).rowcount:
                row = conn.execute(select(*(users.c[f] for f in User.__slots__)).where(where))
                user = User(*row.one())
                if "password_hash" in changes:
                    end_sessions(conn, user.id, now=now)
                return user
        return None

    # -- revocation and introspection (read-only lookups: no write lock, no row lock) -------

    def peek_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        """The refresh token with this hash and its family (with ``dpop_jkt``), or None: a
        plain read, unlike ``SqlTransaction.find_refresh_token`` (which locks the row)."""
        row = self._read_row(self._q.peek_token, {"h": token_hash})
        return None if row is None else _token_from_row(row)

    def peek_family(self, family_id: str) -> Family | None:
        """The family (revoked or not, with ``dpop_jkt``), or None; a plain driver-level read."""
        row = self._read_row(self._q.peek_family, {"fid": family_id})
        if row is None:
            return None
        return Family(row[0], row[1], row[2], row[3], tuple(row[4].split()), *row[5:])

    def is_access_token_revoked(self, jti: str) -> bool:
        return self._read_row(self._q.is_access_token_revoked, {"jti": jti}) is not None

    def revoke_access_token(
        self, jti: str, *, client_id: str, at: float, expires_at: float
    ) -> bool:
        """Put the access token on the deny list until ``expires_at``; False if it already
        was (concurrent revocations of one token are fine: the second does nothing)."""
        with self.transaction() as tx:
            return tx.revoke_access_token(jti, client_id=client_id, at=at, expires_at=expires_at)

    # -- abuse limits (tokend.core.throttle.CounterStore) ------------------------------------

    def read_counters(self, digests: list[bytes]) -> dict[bytes, Counter]:
        """The existing counters among ``digests``: one primary-key read, no lock."""
        if not digests:
            return {}
        q = self._q.read_counters[len(digests) - 1]
        rows = self._read_row(q, {f"k{i}": d for i, d in enumerate(digests)}, all_rows=True)
        return {bytes(k): Counter(hits, end) for k, hits, end in rows}

    def add_failure(self, windows: dict[bytes, float], *, now: float) -> dict[bytes, Counter]:
        """One failure under each key: a single upsert statement, in its own transaction."""
        with self.transaction() as tx:
            return tx.add_failure(windows, now=now)  # type: ignore[no-any-return]

    # -- DPoP (RFC 9449) -------------------------------------------------------------------

    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool:
        """A DPoP proof's replay check outside a grant (at a protected resource), in a
        transaction of its own: False if the proof was recorded before (a replay)."""
        with self.transaction() as tx:
            return tx.record_dpop_proof(replay_hash, expires_at=expires_at)

    # -- families --------------------------------------------------------------------------

    def revoke_families(
        self,
        *,
        now: float,
        reason: str,
        user_id: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
    ) -> int:
        """Set-based revocation: one UPDATE however many families match."""
        conds = [fam.revoked_at.is_(None)]
        if user_id is not None:
            conds.append(fam.user_id == user_id)
        if client_id is not None:
            conds.append(fam.client_id == client_id)
        if family_id is not None:
            conds.append(fam.id == family_id)
        if len(conds) == 1:
            raise ValueError("revoke_families needs a user, client or family")
        with self.engine.begin() as conn:
            result = conn.execute(
                update(token_families).where(*conds).values(revoked_at=now, revoked_reason=reason)
            )
            return result.rowcount

    def get_family(self, family_id: str) -> Family | None:
        with self._read() as conn:
            row = conn.execute(
                select(
                    fam.id, fam.client_id, fam.user_id, fam.subject, fam.scope,
                    fam.created_at, fam.expires_at, fam.auth_time, fam.revoked_at,
                ).where(fam.id == family_id)
            ).first()  # fmt: skip
        if row is None:
            return None
        return Family(row[0], row[1], row[2], row[3], tuple(row[4].split()), *row[5:])

    def list_events(self, kind: str | None = None) -> list[dict[str, object]]:
        stmt = select(security_events).order_by(security_events.c.id)
        if kind is not None:
            stmt = stmt.where(security_events.c.kind == kind)
        with self._read() as conn:
            return [
                {**row._asdict(), "detail": json.loads(row.detail)}
                for row in conn.execute(stmt).all()
            ]

    def gc(
        self, *, now: float, retention: float, event_retention: float | None = None
    ) -> dict[str, int]:
        """Delete what can never be valid again, once it is older than ``retention`` seconds:
        expired or revoked families (with their tokens), expired refresh tokens, expired
        authorization codes (consumed ones are kept that long for replay detection), ended
        browser sessions, deny-listed access tokens past their expiry (whatever
        ``retention``: an expired token is refused for its ``exp``), DPoP replay-cache
        rows past theirs (likewise: such a proof is refused for its ``iat``), abuse counters
        whose window has ended (they count nothing any more); and security
        events older than ``event_retention`` (the audit trail; defaults to ``retention``)."""
        cutoff = now - retention
        event_cutoff = now - (retention if event_retention is None else event_retention)
        with self.engine.begin() as conn:
            codes = conn.execute(
                delete(authorization_codes).where(authorization_codes.c.expires_at < cutoff)
            ).rowcount
            sessions = conn.execute(
                delete(browser_sessions).where(browser_sessions.c.expires_at < now)
            ).rowcount
            families = conn.execute(
                delete(token_families).where((fam.expires_at < cutoff) | (fam.revoked_at < cutoff))
            ).rowcount
            tokens = conn.execute(delete(refresh_tokens).where(rt.expires_at < cutoff)).rowcount
            events = conn.execute(
                delete(security_events).where(security_events.c.at < event_cutoff)
            ).rowcount
            # A deny-listed access token past its exp is refused for its expiry anyway.
            denied = conn.execute(
                delete(revoked_access_tokens).where(revoked_access_tokens.c.expires_at < now)
            ).rowcount
            # RFC 9449 §11.1: a proof past its acceptance window is refused for its iat.
            proofs = conn.execute(
                delete(dpop_proofs).where(dpop_proofs.c.expires_at < now)
            ).rowcount
            # An abuse counter whose window has ended counts nothing any more.
            counters = conn.execute(
                delete(abuse_counters).where(abuse_counters.c.window_end < now)
            ).rowcount
        return {
            "families": families,
            "refresh_tokens": tokens,
            "authorization_codes": codes,
            "browser_sessions": sessions,
            "security_events": events,
            "revoked_access_tokens": denied,
            "dpop_proofs": proofs,
            "abuse_counters": counters,
        }

    # -- signing keys ----------------------------------------------------------------------

    def insert_key(self, record: KeyRecord, *, retire_alg: str | None = None) -> None:
        """Store a new key; retire the previous active keys of ``retire_alg`` in the same
        transaction so that exactly one key per algorithm is current."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Serialise key writers (SQLite: BEGIN IMMEDIATE already does), so that the
                # UPDATE below sees a key another process has just inserted: without it two
                # concurrent first starts leave two current keys of one algorithm.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7424052)")
            if retire_alg is not None:
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.alg == retire_alg, signing_keys.c.retired_at.is_(None))
                    .values(retired_at=record.created_at)
                )
            conn.execute(
                insert(signing_keys),
                {f: getattr(record, f) for f in KeyRecord.__slots__},
            )

    def list_keys(self) -> list[KeyRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(*(signing_keys.c[f] for f in KeyRecord.__slots__)).order_by(
                    signing_keys.c.created_at
                )
            ).all()
        return [KeyRecord(*r) for r in rows]

    def keys_version(self) -> tuple[int, float]:
        """Cheap fingerprint of the key ring: changes whenever a key is added or retired."""
        with self._read() as conn:
            n, latest = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.max(func.coalesce(signing_keys.c.retired_at, 0.0)), 0.0)
                    + func.coalesce(func.max(signing_keys.c.created_at), 0.0),
                )
            ).one()
        return int(n), float(latest)

    def delete_keys_retired_before(self, cutoff: float) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                delete(signing_keys).where(signing_keys.c.retired_at < cutoff)
            ).rowcount

    # -- health ----------------------------------------------------------------------------

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))
