"""Shared pieces of the benchmark tools (bench/run.py, bench/scale.py, bench/memory.py):
a database to bench against, the tokend CLI, servers, wrk, and /proc accounting.

Nothing here imports tokend at module level: the tools drive tokend as an operator would
(the CLI and HTTP); only the explicitly in-process seeding helpers import it.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_wrk() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")


# -- the database ------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str  # "sqlite" | "postgres"
    url: str
    path: Path | None = None  # the SQLite file
    _pg: Any = None

    def server_pids(self) -> tuple[int, ...]:
        """PostgreSQL's postmaster (its backends are its children); none for SQLite."""
        if self._pg is None:
            return ()
        return (int((Path(self._pg.root) / "data" / "postmaster.pid").read_text().split()[0]),)

    def size_bytes(self) -> int:
        if self.path is not None:
            return sum(
                p.stat().st_size
                for p in (self.path, Path(f"{self.path}-wal"))
                if p.exists()
            )  # fmt: skip
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self._pg.port), "-U", "postgres", "-Atc",
             "SELECT pg_database_size('bench')"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(out.strip())


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[Database]:
    """A fresh SQLite file in ``tmp``, or a throwaway PostgreSQL server (durable: fsync on)
    started as in the test suite (tests/support/postgres.py)."""
    if kind == "sqlite":
        path = tmp / "bench.db"
        yield Database("sqlite", f"sqlite:///{path}", path)
        return
    from tests.support.postgres import PostgresServer

    pg = PostgresServer.start(durable=True)
    try:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-qc",
             "CREATE DATABASE bench"], check=True,
        )  # fmt: skip
        yield Database("postgres", pg.url("bench"), None, pg)
    finally:
        pg.stop()


def tokend_env(db_url: str, port: int) -> dict[str, str]:
    """The environment of the CLI and of `tokend serve` on ``port``. The issuer is set for
    both: tokens minted by `tokend tokens issue` carry it, and the server only accepts
    (introspects as active) access tokens of its own issuer."""
    env = {
        **os.environ,
        "TOKEND_DATABASE_URL": db_url,
        "TOKEND_PORT": str(port),
        "TOKEND_ISSUER": f"http://127.0.0.1:{port}",
        "TOKEND_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(36)).decode(),
        "TOKEND_LOG_LEVEL": "warning",
    }
    env.pop("TOKEND_REFRESH_REUSE_GRACE", None)
    return env


def tokend(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    """Run the tokend CLI (`python -m tokend.cli ...`); its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "tokend.cli", *args],
        env=env, input=stdin, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"tokend {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def issue_tokens(
    env: dict[str, str], client_id: str, user: str, scope: str, count: int
) -> list[dict[str, Any]]:
    """``tokend tokens issue --count COUNT``: one token response per family."""
    out = tokend(
        "tokens", "issue", "--client-id", client_id, "--user", user, "--scope", scope,
        "--count", str(count), env=env,
    )  # fmt: skip
    return [json.loads(line) for line in out.splitlines()]


def basic(client: dict[str, str]) -> str:
    return base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    workers: int
    log: Path | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor); the supervisor itself
        when it runs the app in-process (one worker)."""
        kids = [p for p in children(self.proc.pid) if _is_worker(p)]
        return kids or [self.proc.pid]


def _is_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"resource_tracker" not in cmd


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            detail = log.read_text()[-2000:] if log and log.exists() else ""
            raise SystemExit(f"server exited with {proc.returncode}\n{detail}")
        try:
            httpx.post(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {url}")


def _start(
    argv: list[str], port: int, workers: int, env: dict[str, str], log: Path, health: str
) -> Server:
    """Start a server process on ``port``; return once every worker answers ``health``."""
    base = f"http://127.0.0.1:{port}"
    with log.open("ab") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    server = Server(proc, base, workers, log)
    try:
        wait_healthy(f"{base}{health}", proc, log)
    except BaseException:
        server.stop()
        raise
    wait_workers(server)
    return server


def start_tokend(env: dict[str, str], workers: int, log: Path) -> Server:
    port = int(env["TOKEND_PORT"])
    argv = [sys.executable, "-m", "tokend.cli", "serve", "--port", str(port),
            "--workers", str(workers)]  # fmt: skip
    return _start(argv, port, workers, env, log, "/healthz")


def start_uvicorn(app: str, workers: int, env: dict[str, str], log: Path, path: str) -> Server:
    """A bench app (bench/noop_app.py, bench/probe_app.py) on tokend's stack and settings:
    uvicorn with uvloop and httptools, no access log."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--no-server-header", "--log-level", "warning"]  # fmt: skip
    return _start(argv, port, workers, env, log, path)


def wait_workers(server: Server) -> None:
    """With several workers, the first answer proves one of them up: wait for all."""
    if server.workers < 2:
        return
    for _ in range(300):
        if len(server.worker_pids()) >= server.workers:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # each worker finishes its startup (imports, key ring)


# -- /proc accounting ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and all its descendants (the uvicorn workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, ProcessLookupError):
            continue
        pids.extend(children(p))
    return total


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process, in kB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


# -- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    req_s: float
    requests: int
    non200: int
    missing: int
    errors: int
    exhausted: int
    p50_ms: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def run_wrk(
    base: str,
    lua: Path,
    conns: int,
    duration: int,
    env: dict[str, str],
    *,
    timeout: int = 10,
    path: str = "/",
) -> WrkResult:
    """wrk with one thread per connection (-t N -c N), so that each connection has its own
    Lua state (its own chain of tokens). Every bench/*.lua script prints the same summary:
    ``bad`` (responses other than 200), ``missing`` (200s without the expected field),
    ``exhausted`` (threads that ran out of single-use inputs and stopped)."""
    proc = subprocess.run(
        ["wrk", "-t", str(conns), "-c", str(conns), "-d", f"{duration}s", "--latency",
         "--timeout", f"{timeout}s", "-s", str(lua), base + path],
        env={**env, "WRK_THREADS": str(conns)}, capture_output=True, text=True,
    )  # fmt: skip
    out = proc.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    stats = dict(re.findall(r"(\w+)=([\d.]+)", out))
    if proc.returncode != 0 or m is None or "bad" not in stats:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{out}\n{proc.stderr}")
    errors = sum(int(stats[k]) for k in ("errors_connect", "errors_read", "timeouts"))
    return WrkResult(
        req_s=float(m.group(1)),
        requests=int(stats["requests"]),
        non200=int(stats["bad"]),
        missing=int(stats.get("missing", 0)),
        errors=errors,
        exhausted=int(stats.get("exhausted", 0)),
        p50_ms=float(stats["p50_ms"]),
        p99_ms=float(stats["p99_ms"]),
    )


def measure(
    server: Server,
    lua: Path,
    conns: int,
    duration: int,
    env: dict[str, str],
    *,
    timeout: int = 10,
    path: str = "/",
    extra_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """One wrk run, plus the server's CPU time (supervisor + workers) per request, and that
    of its database server (``extra_pids`` and their descendants: PostgreSQL's postmaster
    and backends, the peer's redis-server), also counted in ``cpu_ms_per_req``."""
    cpu0 = cpu_seconds(server.proc.pid)
    db0 = sum(cpu_seconds(p) for p in extra_pids)
    r = run_wrk(server.base, lua, conns, duration, env, timeout=timeout, path=path)
    db = sum(cpu_seconds(p) for p in extra_pids) - db0
    cpu = cpu_seconds(server.proc.pid) - cpu0 + db
    return {
        "req_s": r.req_s,
        "requests": r.requests,
        "non200": r.non200,
        "missing": r.missing,
        "errors": r.errors,
        "exhausted": r.exhausted,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "cpu_ms_per_req": round(cpu * 1000 / max(r.requests, 1), 3),
        "db_cpu_ms_per_req": round(db * 1000 / max(r.requests, 1), 3) if extra_pids else None,
    }


# -- reporting -----------------------------------------------------------------------------


def machine_line() -> str:
    import importlib.metadata as md

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown CPU",
    )  # fmt: skip
    versions = []
    for p in ("tokend", "starlette", "uvicorn", "sqlalchemy", "pyjwt", "cryptography"):
        try:
            versions.append(f"{p} {md.version(p)}")
        except md.PackageNotFoundError:
            continue
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    wrk = wrk.split(" [")[0].replace("wrk debian/", "wrk ")
    return (
        f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {_sqlite_version()}; "
        f"{', '.join(versions)}; {wrk}; git {_git_rev()}."
    )


def _sqlite_version() -> str:
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def _git_rev() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return (out.stdout.strip() or "?") + ("+dirty" if dirty else "")


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)
