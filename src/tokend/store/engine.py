"""Engines for the two supported databases, and running migrations.

SQLite (embedded default): WAL, ``synchronous=NORMAL``, foreign keys on, a busy timeout, and
every transaction opened with ``BEGIN IMMEDIATE`` so that writers queue on the busy handler at
the start of a transaction instead of failing with "database is locked" when a read lock
cannot be upgraded (the failure mode of SQLite's default deferred transactions).

PostgreSQL: a plain ``postgresql://`` URL gets the psycopg 3 driver. No ping at checkout (it
was a round trip per transaction): ``connections.Database`` replaces a connection found
dead by its first statement instead. A server also gets a second engine on the same
database, ``create_hot_engine``: asyncpg, for the work its endpoints run on the event loop
(``tokend.web.offload``), where every wait for PostgreSQL is an ``await`` instead of a
thread (issue 14).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokend.dburl import asyncpg_connect_args, is_sqlite, normalize_url, sqlite_path

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalize_url(url)
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            hide_parameters=True,  # statement parameters (hashes, ids) never reach a log
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,
    )


def create_hot_engine(url: str, *, pool_size: int = 10) -> AsyncEngine | None:
    """PostgreSQL: the engine of the server's event loop, asyncpg through SQLAlchemy's
    asyncio adapter; None for SQLite (its work is local I/O, run inline).

    Its connections exist only inside ``sqlalchemy.util.greenlet_spawn`` on one event loop
    (``tokend.store.connections.Engines`` picks it there, and the psycopg engine everywhere
    else: threads, the CLI). asyncpg is given the libpq form of the URL
    (``asyncpg_connect_args``), so what a psycopg URL says about the connection
    (``sslmode``, ``sslrootcert``, a Unix socket directory as ``host``, a passfile,
    ``connect_timeout``, ``options``) means the same here. Statements are prepared once per
    connection and kept (SQLAlchemy's cache of 100, asyncpg's own): the hot path's few
    statements are parsed and planned once, not on every request. A pooler in transaction
    mode in front must support protocol-level prepared statements (PgBouncer from 1.21,
    with ``max_prepared_statements`` set; docs/operations.md)."""
    if is_sqlite(url):
        return None
    import asyncpg  # type: ignore[import-untyped]  # (no stubs) only PostgreSQL needs it

    dsn, kwargs = asyncpg_connect_args(url)

    async def connect() -> Any:
        return await asyncpg.connect(dsn, **kwargs)

    return create_async_engine(
        "postgresql+asyncpg://",
        async_creator=connect,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,
    )


def _enable_wal(cur: sqlite3.Cursor) -> None:
    """Switch the database to WAL (persistent; usually already done). Changing the journal
    mode fails with "database is locked" *without* waiting on the busy handler while another
    connection is doing the same, which happens when several processes open a new database
    at once; so wait here, up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        if cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Reads (Database._read) take no write lock; everything else queues for it up front.
        read = conn.get_execution_options().get("tokend_read", False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent, safe to run concurrently)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7424051)")  # one migrator at a time
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
