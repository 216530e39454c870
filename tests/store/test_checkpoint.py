"""WAL checkpoints off the request path (``tokend.store.checkpoint``), SQLite only."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tokend.core.models import SecurityEvent
from tokend.store import SqlStore
from tokend.store.checkpoint import WalCheckpointer
from tokend.store.engine import create_db_engine, migrate


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    migrate(engine)
    s = SqlStore(engine)
    yield s
    s.close()


def _write(store: SqlStore, n: int, kind: str = "e") -> None:
    for i in range(n):
        with store.transaction() as tx:
            tx.record_event(SecurityEvent(kind, float(i), detail={"pad": "x" * 2000}))


def _autocheckpoint(store: SqlStore) -> int:
    return store._sqlite_conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def test_without_the_checkpointer_sqlite_checkpoints_on_commit(store: SqlStore) -> None:
    assert _autocheckpoint(store) == 1000


def test_checkpointer_takes_over_from_the_commits(store: SqlStore) -> None:
    before = store._sqlite_conn()  # a connection opened before the start is switched too
    assert store.start_checkpointer(interval=0.01, restart_frames=50)
    assert before.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    seen = []

    def in_another_thread() -> None:
        _write(store, 1)
        seen.append(_autocheckpoint(store))  # this thread's own, opened after the start

    other = threading.Thread(target=in_another_thread)
    other.start()
    other.join()
    assert seen == [0]
    assert store.start_checkpointer() is False  # once per store


def test_wal_is_rewound_under_steady_writes(store: SqlStore, tmp_path: Path) -> None:
    """Passive checkpoints alone never see the WAL empty while writes go on; the RESTART
    fallback rewinds it (the file stays bounded), and nothing written is lost."""
    assert store.start_checkpointer(interval=0.005, restart_frames=200)
    checkpointer = store._checkpointer
    deadline = time.monotonic() + 5
    written = 0
    while checkpointer.restarts < 2 and time.monotonic() < deadline:
        _write(store, 20)
        written += 20
        time.sleep(0.001)  # a server's writes come with gaps
    assert checkpointer.restarts >= 2
    assert len(store.list_events("e")) == written
    # Rewound, not grown: the file holds about restart_frames pages of ~4 KiB, plus what
    # was written while a check was due.
    wal = tmp_path / "cp.db-wal"
    assert wal.stat().st_size < 16 * 1024 * 1024, wal.stat().st_size


def test_stop_leaves_no_wal(store: SqlStore, tmp_path: Path) -> None:
    assert store.start_checkpointer(interval=60)  # only the last checkpoint will run
    _write(store, 30)
    wal = tmp_path / "cp.db-wal"
    assert wal.stat().st_size > 30 * 2000
    store.close()
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(tmp_path / "cp.db", isolation_level=None)
    assert conn.execute("SELECT count(*) FROM security_events").fetchone()[0] == 30
    conn.close()


def test_run_once_reports_sqlite_figures(tmp_path: Path) -> None:
    path = tmp_path / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x)")
    for _ in range(20):
        conn.execute("INSERT INTO t VALUES (?)", (os.urandom(3000),))
    cp = WalCheckpointer(path, restart_frames=10_000)
    busy, frames, done = cp.run_once()
    assert busy == 0 and frames >= 20 and done == frames
    cp.stop()
    conn.close()


def test_postgres_and_memory_have_no_checkpointer(db_url: str) -> None:
    store = SqlStore(create_db_engine(db_url if "postgresql" in db_url else "sqlite://"))
    try:
        assert store.start_checkpointer() is False
    finally:
        store.close()
