"""SQLite WAL checkpoints off the request path (issue 6).

In WAL mode every commit appends pages to the ``-wal`` file; a *checkpoint* copies them back
into the database file and ``fsync``s both (``synchronous=NORMAL``: this is where SQLite's
durability is paid). By default the connection that commits runs one whenever the WAL
passes 1,000 pages, inside that commit: on this project's 2-core reference VM that made one
refresh in ~250 wait ~20 ms for the disk, and since the server runs SQLite on its event loop,
every request queued on that worker waited too (a p99 of 80+ ms at 32 connections).

Here each server process runs one background thread with its own connection that checkpoints
every ``interval`` seconds (PASSIVE: it never blocks a writer), and the server's hot-path
connections turn automatic checkpoints off (``SqlStore.start_checkpointer``). The fsyncs
happen on that thread, with the GIL released, while the event loop keeps serving.

A passive checkpoint under steady writes can copy every page but almost never finds the WAL
*empty* at the instant a writer starts, which is when SQLite rewinds the WAL to its start;
so the file would grow forever. When more than ``restart_frames`` pages are in the WAL, the
thread runs a RESTART checkpoint instead: it waits (at most ``busy_timeout_ms``) for the
writer of the moment to commit, holds new writers off while it copies what is left (little:
the passive runs kept up), and makes the next writer start the WAL file over from its
beginning. Writers wait for it in ``SqlStore``'s short busy steps. Not TRUNCATE: a WAL file
cut to zero is then grown again page by page, and every append that extends a file waits
on the filesystem's journal behind the checkpoint's fsyncs; measured with 10^6 stored
families at c=1, refresh p99 was 43-54 ms with TRUNCATE, 27-30 ms with checkpoints on commit
(SQLite's default) and 13-18 ms with RESTART. Stopping does one last TRUNCATE.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("tokend.store")


class WalCheckpointer:
    def __init__(
        self,
        path: Path,
        *,
        interval: float = 0.2,
        restart_frames: int = 4096,
        busy_timeout_ms: int = 2000,
    ) -> None:
        self.path = path
        self.interval = interval
        self.restart_frames = restart_frames
        self.busy_timeout_ms = busy_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.restarts = 0  # how often the WAL was rewound (for tests and logs)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def run_once(self) -> tuple[int, int, int]:
        """One checkpoint: ``(busy, frames in the WAL, frames checkpointed)`` as SQLite's
        ``wal_checkpoint`` pragma reports them (-1, -1 when another one was running)."""
        conn = self._connection()
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self.restart_frames:
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if not busy:
                self.restarts += 1
        return busy, frames, done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except sqlite3.Error:
                log.exception("WAL checkpoint failed; retrying in %.1f s", self.interval)
                self._close_connection()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tokend-wal-checkpoint")
            self._thread.daemon = True
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint, so no WAL is left behind."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
            try:
                self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                log.exception("last WAL checkpoint failed")
        self._close_connection()

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
