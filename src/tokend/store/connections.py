"""``Database``: the engine, its connections, and the three doors every part of the store
goes through: ``transaction`` (writes), ``_read_row`` (a hot-path read at driver level)
and ``_read`` (an admin read through SQLAlchemy).

SQLite's hot path runs on one DBAPI connection per thread, kept outside the pool:
checking a connection out of SQLAlchemy's pool and back in cost more than the statements
themselves. Those connections have no busy handler; ``_retry_busy`` waits instead, in
shorter steps than SQLite's. PostgreSQL keeps the pool (a connection is a server process
there), without a ping at checkout: a pooled connection found dead by the first statement
of a transaction or a hot-path read (PostgreSQL restarted, the connection dropped while
idle) is replaced, with every connection pooled before it, and that statement sent again
on the fresh one, once (``_pg_replace``); nothing was sent on the dead one that could have
committed. Either way a database that cannot answer (busy past the timeout, disk full,
server gone) is ``TemporarilyUnavailable``, never an error shown raw.

A PostgreSQL server process has two engines on one database (``Engines``): asyncpg
(``engine.create_hot_engine``) for what runs inside ``sqlalchemy.util.greenlet_spawn`` (the
endpoints' work, ``tokend.web.offload``: the code is the same synchronous code, and each
wait for PostgreSQL is an ``await`` on the event loop), and psycopg everywhere else (threads,
the CLI, the tests' own calls). Each has its pool and its compiled statements (``_q``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util.concurrency import in_greenlet

from tokend import metrics
from tokend.core.errors import TemporarilyUnavailable
from tokend.dburl import sqlite_path
from tokend.store import engine as engine_mod
from tokend.store.checkpoint import WalCheckpointer
from tokend.store.statements import Compiled, Statements
from tokend.store.transaction import SqlTransaction

T = TypeVar("T")


class _Held:
    """A thread's own SQLite connection. Only that thread's ``threading.local`` holds it
    strongly: when the thread ends, the connection is collected and closed with it; the
    store keeps weak references, to close live ones on ``close()``."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


class _ThreadConnection(threading.local):
    """SQLite: the connection a thread keeps for the hot path."""

    held: _Held | None = None


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY (and its extended codes): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _retry_busy(fn: Callable[[], T]) -> T:
    """Run ``fn`` until SQLite stops answering SQLITE_BUSY, waiting in short steps.

    The hot path's connections have no busy handler (``busy_timeout=0``): SQLite's own
    one sleeps at least a whole millisecond between attempts, while the other process holds
    the write lock for ~0.1 ms, and a server that runs SQLite on its event loop is stalled
    for every one of those sleeps. Here the first retry comes after 50 µs, doubling to 2 ms,
    up to the same total as the busy timeout of every other connection."""
    try:
        return fn()
    except sqlite3.OperationalError as exc:
        if not _is_busy(exc):
            raise
    deadline = time.monotonic() + engine_mod.SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 50e-6
    while True:
        time.sleep(delay)
        metrics.busy_retry()
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        delay = min(delay * 2, 0.002)


# What says "the database cannot answer now" rather than "this statement is wrong": the
# errors psycopg and sqlite3 raise as OperationalError, asyncpg's connection errors (and the
# OSError or timeout of a connection attempt, which asyncpg raises as such), and the SQLSTATE
# classes psycopg maps to OperationalError: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources, program limit exceeded, object
# not in prerequisite state (lock not available), operator intervention (shutdown, crash),
# system error. asyncpg's server errors come as SQLAlchemy's generic ``Error`` with the code.
_NOT_NOW_TYPES: tuple[type[BaseException], ...] = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
    AsyncAdapt_asyncpg_dbapi.OperationalError,
    AsyncAdapt_asyncpg_dbapi.InterfaceError,
    OSError,
    TimeoutError,
)
_NOT_NOW_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "54", "55", "57", "58"})


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver's, or SQLAlchemy's around one) says the database cannot
    answer now: retryable, ``TemporarilyUnavailable``, and never shown raw."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, _NOT_NOW_TYPES):
        return True
    code = getattr(exc, "sqlstate", None)
    return isinstance(code, str) and code[:2] in _NOT_NOW_SQLSTATE_CLASSES


class Engines:
    """A process's engines on one database: ``sync`` (psycopg, or SQLite) everywhere, and
    on a PostgreSQL server ``hot`` (asyncpg) inside the greenlets of ``greenlet_spawn``,
    where its driver can await (``current``). Shared by the store and ``AccountStore``.

    An asyncpg connection belongs to the event loop it was opened on. A server has one
    loop per worker; a second loop in the same process (a test's) gets a fresh pool, and
    the first loop's connections are dropped with it (``aclose`` closes them properly on
    their own loop, at the end of a server's lifespan)."""

    __slots__ = ("_hot", "_hot_async", "_loop", "sync")

    def __init__(self, engine: Engine, hot: AsyncEngine | None = None) -> None:
        self.sync = engine
        self._hot_async = hot
        self._hot = None if hot is None else hot.sync_engine
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def hot(self) -> Engine | None:
        return self._hot

    def current(self) -> Engine:
        """The engine for the caller's context."""
        hot = self._hot
        if hot is None or not in_greenlet():
            return self.sync
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                hot.dispose(close=False)  # the other loop's connections cannot serve here
            self._loop = loop
        return hot

    async def aclose(self) -> None:
        """Close the asyncpg engine's connections, on the loop they were opened on."""
        if self._hot_async is not None:
            await self._hot_async.dispose()
            self._loop = None

    def close(self) -> None:
        """Close the sync engine's connections; drop the asyncpg engine's pool (its
        connections belong to an event loop: ``aclose`` closes them there)."""
        self.sync.dispose()
        if self._hot is not None:
            self._hot.dispose(close=False)
            self._loop = None


class Database:
    """The engine(s), the statements compiled for each dialect (``_q``), SQLite's
    per-thread connections and its WAL checkpointer. The base of every part of ``SqlStore``
    (``tokend.store.sqlstore``): the only state they share. ``hot``: a PostgreSQL server's
    asyncpg engine (see the module's docstring)."""

    def __init__(self, engine: Engine, *, hot: AsyncEngine | None = None) -> None:
        self.engines = Engines(engine, hot)
        self._q_sync = Statements(engine.dialect)
        hot_engine = self.engines.hot
        self._q_hot = None if hot_engine is None else Statements(hot_engine.dialect)
        self._sqlite = engine.dialect.name == "sqlite"
        self._local = _ThreadConnection()
        self._thread_conns: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._thread_conns_lock = threading.Lock()
        self._checkpointer: WalCheckpointer | None = None

    @property
    def engine(self) -> Engine:
        """The engine for this context (``Engines.current``)."""
        return self.engines.current()

    @property
    def _q(self) -> Statements:
        """The hot path's statements, compiled for this context's engine."""
        if self._q_hot is not None and in_greenlet():
            return self._q_hot
        return self._q_sync

    def start_checkpointer(self, **options: Any) -> bool:
        """SQLite: move WAL checkpoints from the hot path's commits to a background
        thread (``tokend.store.checkpoint``). For a server process; False where there is
        nothing to do (PostgreSQL, an in-memory database, already started)."""
        path = sqlite_path(self.engines.sync.url.render_as_string(hide_password=False))
        if not self._sqlite or path is None or self._checkpointer is not None:
            return False
        self._checkpointer = WalCheckpointer(path, **options)
        for conn in self._open_thread_conns():
            conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer.start()
        return True

    async def aclose(self) -> None:
        """Close the asyncpg engine's connections, on the event loop they were made on (a
        server's lifespan, before ``close``)."""
        await self.engines.aclose()

    def close(self) -> None:
        """Close every connection this store opened (the pool's and the threads' own).
        The asyncpg engine's pool is only dropped: its connections belong to an event loop
        (``aclose`` closes them there)."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        for conn in self._open_thread_conns():
            with suppress(Exception):
                conn.close()
        self.engines.close()

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

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
                assert conn is not None  # detached, not closed
                conn.execute("PRAGMA busy_timeout=0")  # waits are _retry_busy's
                if self._checkpointer is not None:
                    conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            except Exception as exc:
                if not unavailable(exc):
                    raise
                metrics.database_error("connect")
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
            metrics.database_error("transaction")
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        finally:
            with suppress(sqlite3.ProgrammingError):  # closed above
                cur.close()

    # -- the doors -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """A write transaction. SQLite: ``BEGIN IMMEDIATE`` on the thread's connection
        (writers queue for the lock up front); PostgreSQL: read committed on a pooled
        connection, with the token row locked by ``find_refresh_token``."""
        if self._sqlite:
            with self._sqlite_transaction() as tx:
                yield tx
            tx.committed()
            return
        link = _PgLink(self, self._pg_checkout())
        try:
            tx = SqlTransaction(link.conn.cursor(), self._q, reopen=link.reopen)
            try:
                try:
                    yield tx
                except BaseException:
                    if link.conn.is_valid:  # not if its replacement could not connect
                        link.conn.rollback()
                    raise
                link.conn.commit()
            finally:
                tx.close()
        except Exception as exc:
            if not unavailable(exc):
                raise
            # Connection lost, server shutting down: retryable, and never shown raw.
            link.conn.invalidate()  # a broken server connection must not go back to the pool
            metrics.database_error("transaction")
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        finally:
            link.conn.close()  # back to the pool
        tx.committed()

    # -- PostgreSQL: the pool without a ping -----------------------------------------------

    def _pg_checkout(self) -> PoolProxiedConnection:
        try:
            return self.engine.raw_connection()
        except Exception as exc:
            if not unavailable(exc):
                raise
            metrics.database_error("connect")
            raise TemporarilyUnavailable(debug=str(exc)) from exc

    def _pg_replace(
        self, conn: PoolProxiedConnection, exc: BaseException
    ) -> PoolProxiedConnection | None:
        """After ``exc`` from the first statement sent on ``conn``: if it says the connection
        is dead (closed or broken, as SQLAlchemy's own disconnect check reads psycopg), drop
        it and every connection the pool made before it (a restart of PostgreSQL ended them
        all) and return a fresh one; None for any other error (not retried)."""
        if not unavailable(exc) or not self._is_disconnect(exc, conn):
            return None
        self.engine.pool._invalidate(conn, exc)  # as SQLAlchemy does on a disconnect
        conn.close()
        return self._pg_checkout()

    def _is_disconnect(self, exc: BaseException, conn: PoolProxiedConnection) -> bool:
        dialect: Any = self.engine.dialect  # typed for SQLAlchemy's own DBAPI errors
        return bool(dialect.is_disconnect(exc, conn.dbapi_connection, None))

    def _pg_connect(self) -> Connection:
        """A pooled SQLAlchemy connection for an admin read, pinged first (these reads run
        statements of their own through SQLAlchemy, after which a retry is no longer
        transparent): a dead one is replaced as in ``_pg_replace``."""
        conn = self.engine.connect().execution_options(tokend_read=True)
        raw = conn.connection
        try:
            dialect: Any = self.engine.dialect
            dialect.do_ping(raw.dbapi_connection)
        except Exception as exc:
            if not unavailable(exc) or not self._is_disconnect(exc, raw):
                conn.close()
                raise
            self.engine.pool._invalidate(raw, exc)
            conn.close()
            conn = self.engine.connect().execution_options(tokend_read=True)
        return conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read-only connection (SQLite: a deferred transaction, never the write lock)."""
        try:
            if self._sqlite:
                conn = self.engine.connect().execution_options(tokend_read=True)
            else:
                conn = self._pg_connect()
            with conn:
                yield conn
        except Exception as exc:  # SQLAlchemy's, or the ping's at driver level
            if not unavailable(exc):
                raise
            metrics.database_error("read")
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            raise TemporarilyUnavailable(debug=str(cause)) from exc

    def _read_row(self, q: Compiled, params: dict[str, Any], *, all_rows: bool = False) -> Any:
        """One row of a hot-path read at driver level, or None (``all_rows``: every
        row)."""
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
                metrics.database_error("read")
                raise TemporarilyUnavailable(debug=str(exc)) from exc
        conn = self._pg_checkout()
        try:
            try:
                row = _pg_read(conn, q.sql, args, all_rows)
            except Exception as exc:
                fresh = self._pg_replace(conn, exc)
                if fresh is None:
                    raise
                conn = fresh
                row = _pg_read(conn, q.sql, args, all_rows)
        except Exception as exc:
            if not unavailable(exc):
                raise
            conn.invalidate()
            metrics.database_error("read")
            raise TemporarilyUnavailable(debug=str(exc)) from exc
        finally:
            conn.close()
        return row


def _pg_read(conn: PoolProxiedConnection, sql: str, args: Any, all_rows: bool) -> Any:
    """One statement in autocommit (its own snapshot, as in a transaction of its own): one
    round trip, where BEGIN, the statement and ROLLBACK were three."""
    dbapi: Any = conn.dbapi_connection
    dbapi.autocommit = True
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql, args)
            return cur.fetchall() if all_rows else cur.fetchone()
        finally:
            cur.close()
    finally:
        with suppress(Exception):  # a dead connection is invalidated by the caller
            dbapi.autocommit = False


class _PgLink:
    """A PostgreSQL transaction's connection: replaced by ``reopen`` if its first statement
    finds it dead (``SqlTransaction`` calls it then, and only then)."""

    __slots__ = ("conn", "db")

    def __init__(self, db: Database, conn: PoolProxiedConnection) -> None:
        self.db = db
        self.conn = conn

    def reopen(self, exc: BaseException) -> Any:
        """A cursor on a fresh connection if ``exc`` says this one is dead; else None."""
        fresh = self.db._pg_replace(self.conn, exc)
        if fresh is None:
            return None
        self.conn = fresh
        return fresh.cursor()
