"""A throwaway PostgreSQL server for the test run (Debian's `postgresql`, as user postgres).

PostgreSQL refuses to run as root, so when the tests run as root the server's programs run
as the `postgres` user through `runuser`, on a data directory that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass


def _bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return os.path.dirname(candidates[0])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise RuntimeError(
        "PostgreSQL server binaries not found: install Debian's `postgresql` "
        "(the test command ./dev test does this when run as root), or set "
        "TOKEND_TEST_BACKENDS=sqlite to skip the PostgreSQL half of the suite"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    root: str
    port: int
    bindir: str
    as_postgres: bool
    options: str = ""  # pg_ctl -o, for ``resume``

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"{self.base_url}/{database}"

    def _run(self, *args: str) -> None:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        """A fresh cluster. Tests run it with fsync off (it is thrown away); benchmarks ask
        for ``durable`` (fsync, synchronous_commit on: what production runs)."""
        bindir = _bindir()
        root = tempfile.mkdtemp(prefix="tokend-pg-")
        as_postgres = os.geteuid() == 0
        if as_postgres:
            shutil.chown(root, "postgres", "postgres")
        server = cls(root=root, port=free_port(), bindir=bindir, as_postgres=as_postgres)
        data = os.path.join(root, "data")
        server._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        opts = (
            f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300" + ("" if durable else " -c fsync=off -c full_page_writes=off")
        )
        server.options = opts
        server.resume()
        return server

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", os.path.join(self.root, "data"), "-w", *args)

    def restart(self) -> None:
        """Restart the server as an operator would (fast shutdown: every session ends)."""
        self._pg_ctl("-m", "fast", "restart")

    def halt(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again)."""
        self._pg_ctl("-m", "fast", "stop")

    def resume(self) -> None:
        self._pg_ctl("-l", os.path.join(self.root, "log"), "start", "-o", self.options)

    def stop(self) -> None:
        try:
            self._run(
                "pg_ctl", "-D", os.path.join(self.root, "data"), "-m", "immediate", "-w", "stop"
            )
        finally:
            # A whole test run leaves hundreds of databases (~10^5 files): deleting them can
            # take minutes on a busy disk, which the session's last test would be charged
            # for (and time out on). A detached `rm` removes the directory after the run.
            subprocess.Popen(
                ["rm", "-rf", "--", self.root],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
