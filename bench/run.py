"""One-command refresh-grant benchmark (issue 6 workload).

    .venv/bin/python bench/run.py [--db sqlite|postgres] [--duration 10] [--conns 1,8,32,128]
                                  [--workers 2] [--scope offline] [--noop] [--out FILE]

Starts `tokend serve --workers N` on a fresh database (SQLite file, or a throwaway
PostgreSQL server started as in the test suite), mints one token family per connection with
`tokend tokens issue`, drives the refresh grant with wrk (one thread per connection, each
chaining its rotated refresh token: bench/refresh.lua), and reports req/s, p50, p99, every
non-200, every 200 without a refresh token, and the server's CPU time per request. With
--noop, the same figures for a no-op endpoint of the same stack (bench/noop_app.py).
Results go to stdout as JSON lines and, with --out, are appended to a Markdown file.
"""

from __future__ import annotations

import argparse
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
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "refresh.lua"
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokend(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    return subprocess.run(
        [sys.executable, "-m", "tokend.cli", *args],
        env=env, input=stdin, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


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
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.post(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def run_wrk(base: str, conns: int, duration: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", str(conns), "-c", str(conns), "-d", f"{duration}s", "--latency",
         "-s", str(LUA), base],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    req_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    stats = dict(re.findall(r"(\w+)=([\d.]+)", out))
    return {
        "req_s": req_s,
        "requests": int(stats["requests"]),
        "non200": int(stats["non2xx"]),
        "missing_refresh_token": int(stats.get("missing", 0)),
        "errors": sum(int(stats[k]) for k in ("errors_connect", "errors_read", "timeouts")),
        "p50_ms": float(stats["p50_ms"]),
        "p99_ms": float(stats["p99_ms"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="1,8,32,128")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scope", default="offline", help='"openid offline" adds an id_token')
    ap.add_argument("--noop", action="store_true", help="also measure the no-op endpoint")
    ap.add_argument("--out", help="append a Markdown table to this file")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")

    tmp = Path(tempfile.mkdtemp(prefix="tokend-bench-"))
    pg = None
    if args.db == "postgres":
        from tests.support.postgres import PostgresServer

        pg = PostgresServer.start(durable=True)
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-qc",
             "CREATE DATABASE bench"], check=True,
        )  # fmt: skip
        db_url = pg.url("bench")
    else:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
    env = {
        **os.environ,
        "TOKEND_DATABASE_URL": db_url,
        "TOKEND_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(36)).decode(),
    }
    env.pop("TOKEND_REFRESH_REUSE_GRACE", None)
    results = []
    try:
        tokend("migrate", env=env)
        client = json.loads(
            tokend("clients", "create", "--name", "bench", "--scope", args.scope,
                   "--grant-type", "refresh_token", "--json", env=env)
        )  # fmt: skip
        tokend("users", "create", "bench", "--password-stdin", env=env, stdin="bench-password\n")
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode())
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "tokend.cli", "serve", "--port", str(port),
             "--workers", str(args.workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_healthy(f"{base}/healthz", server)
            for conns in (int(c) for c in args.conns.split(",")):
                lines = tokend(
                    "tokens", "issue", "--client-id", client["client_id"], "--user", "bench",
                    "--scope", args.scope, "--count", str(conns), env=env,
                )  # fmt: skip
                tokens = tmp / f"tokens-{conns}.txt"
                tokens.write_text(
                    "".join(json.loads(line)["refresh_token"] + "\n" for line in lines.splitlines())
                )
                wenv = {**env, "TOKENS_FILE": str(tokens), "BASIC": basic.decode()}
                cpu0 = cpu_seconds(server.pid)
                r = run_wrk(base, conns, args.duration, wenv)
                r["cpu_ms_per_req"] = round(
                    (cpu_seconds(server.pid) - cpu0) * 1000 / max(r["requests"], 1), 3
                )
                r.update(
                    endpoint="refresh",
                    db=args.db,
                    conns=conns,
                    workers=args.workers,
                    scope=args.scope,
                )
                results.append(r)
                print(json.dumps(r), flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        if args.noop:
            port = free_port()
            noop = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bench.noop_app:app", "--port", str(port),
                 "--workers", str(args.workers), "--loop", "uvloop", "--http", "httptools",
                 "--no-access-log", "--log-level", "warning"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_healthy(f"http://127.0.0.1:{port}/auth/v2/token", noop)
                for conns in (int(c) for c in args.conns.split(",")):
                    tokens = tmp / f"tokens-{conns}.txt"
                    wenv = {**env, "TOKENS_FILE": str(tokens), "BASIC": "eDp5"}
                    cpu0 = cpu_seconds(noop.pid)
                    r = run_wrk(f"http://127.0.0.1:{port}", conns, args.duration, wenv)
                    r["cpu_ms_per_req"] = round(
                        (cpu_seconds(noop.pid) - cpu0) * 1000 / max(r["requests"], 1), 3
                    )
                    r["missing_refresh_token"] = 0  # the no-op answers no refresh token by design
                    r.update(endpoint="noop", db="-", conns=conns, workers=args.workers, scope="-")
                    results.append(r)
                    print(json.dumps(r), flush=True)
            finally:
                noop.send_signal(signal.SIGTERM)
                noop.wait(timeout=30)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        write_markdown(Path(args.out), results, args)


def write_markdown(path: Path, results: list[dict], args: argparse.Namespace) -> None:
    import importlib.metadata as md

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    versions = ", ".join(
        f"{p} {md.version(p)}"
        for p in ("starlette", "uvicorn", "sqlalchemy", "pyjwt", "cryptography")
    )
    rows = [
        f"| {r['endpoint']} | {r['db']} | {r['scope']} | {r['conns']} | {r['req_s']:,.0f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_ms_per_req']:.2f} | "
        f"{r['non200']} | {r['missing_refresh_token']} |"
        for r in results
    ]
    text = "\n".join(
        [
            f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {args.db}, "
            f"{args.workers} workers, {args.duration} s per point",
            f"Machine: {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}; {versions}.",
            "",
            "| endpoint | db | scope | conns | req/s | p50 ms | p99 ms | server CPU ms/req "
            "| non-200 | 200 w/o refresh_token |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    with path.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
