"""What one refresh costs, for the capacity model in docs/operations.md.

    .venv/bin/python bench/capacity.py --db postgres [--conns 8] [--duration 20] [--workers 2]
    .venv/bin/python bench/capacity.py --db sqlite

Starts a server on a fresh database (as bench/run.py does), drives the refresh grant with
wrk (bench/refresh.lua, each connection chaining its own family's rotated token) and
reports per refresh, from counters read before and after the run:

- tokend CPU: utime + stime of the server and its workers (/proc/<pid>/stat);
- PostgreSQL CPU: the same over the postmaster and every backend and auxiliary process;
- bytes written: WAL (``pg_current_wal_lsn()`` difference; ``pg_stat_wal``: records, full
  page images, WAL flushes), and block-layer writes of each process tree
  (``write_bytes`` in /proc/<pid>/io); on SQLite, the growth of the database file;
- transactions and rows (``pg_stat_database``);
- SQL statements (= round trips: psycopg sends one statement per round trip, without
  pipelining), counted from the server's own log with ``log_statement = all`` switched on
  (``ALTER SYSTEM``) for a separate, short, sequential run of --logged refreshes, so that
  logging does not weigh on the CPU figures.

    .venv/bin/python bench/capacity.py --round-trips

measures instead what one round trip costs on both sides (psycopg 3 directly, on the same
kind of throwaway server): an empty statement (SQLAlchemy's pre-ping), BEGIN + COMMIT, and a
primary-key SELECT, as CPU time of this process and of its backend per call.

CPU time per request is what this reports, not throughput: it stays put when other
programs share the machine, throughput does not.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common


def proc_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(common.children(p))
    return out


def write_bytes(pid: int) -> int:
    """Bytes this process tree caused to be written to storage (/proc/<pid>/io)."""
    total = 0
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


class Pg:
    def __init__(self, db: common.Database) -> None:
        self.server = db._pg
        self.port = self.server.port
        data = Path(self.server.root) / "data"
        self.postmaster = int((data / "postmaster.pid").read_text().split()[0])
        self.log = Path(self.server.root) / "log"

    def sql(self, query: str) -> list[str]:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "bench",
             "-Atc", query], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return out.strip().splitlines()

    def counters(self) -> dict[str, float]:
        (lsn,) = self.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        (wal,) = self.sql(
            "SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal"
        )
        (dbs,) = self.sql(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "tup_returned, tup_fetched FROM pg_stat_database WHERE datname = 'bench'"
        )
        c: dict[str, float] = {"wal_lsn_bytes": float(lsn)}
        for k, v in zip(
            ("wal_records", "wal_fpi", "wal_bytes", "wal_write", "wal_sync"),
            wal.split("|"),
            strict=True,
        ):
            c[k] = float(v)
        for k, v in zip(
            ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
             "tup_returned", "tup_fetched"), dbs.split("|"), strict=True,
        ):  # fmt: skip
            c[k] = float(v)
        (upd,) = self.sql(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'refresh_tokens'"
        )
        c["refresh_tokens_updates"], c["refresh_tokens_hot_updates"] = map(float, upd.split("|"))
        c["pg_cpu_s"] = common.cpu_seconds(self.postmaster)
        c["pg_write_bytes"] = float(write_bytes(self.postmaster))
        return c

    def statements(self, run: Any) -> tuple[int, Counter[str]]:
        """Run ``run()`` with every statement logged; the statements the server received."""
        self.sql("ALTER SYSTEM SET log_statement = 'all'")
        self.sql("SELECT pg_reload_conf()")
        time.sleep(0.5)
        start = self.log.stat().st_size
        try:
            n = run()
        finally:
            self.sql("ALTER SYSTEM RESET log_statement")
            self.sql("SELECT pg_reload_conf()")
        with self.log.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        seen: Counter[str] = Counter()
        for m in re.finditer(r"LOG:  (?:statement|execute [^:]*): (.*)", text):
            stmt = re.sub(r"\s+", " ", m.group(1)).strip()
            if "pg_reload_conf" in stmt or "log_statement" in stmt:
                continue
            seen[stmt[:90]] += 1
        return n, seen


def chain(base: str, basic: str, token: str, n: int) -> int:
    """n sequential refreshes of one family, one keep-alive connection."""
    with httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(n):
            r = http.post(
                "/auth/v2/token",
                headers={"Authorization": f"Basic {basic}"},
                data={"grant_type": "refresh_token", "refresh_token": token},
            )
            r.raise_for_status()
            token = r.json()["refresh_token"]
    return n


def round_trips(calls: int = 5000) -> None:
    import psycopg
    from tests.support.postgres import PostgresServer

    pg = PostgresServer.start(durable=True)
    try:
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            conn.execute("CREATE TABLE t (k bytea PRIMARY KEY, v int)")
            key = bytes(32)
            cases = {
                "empty statement (';', the pre-ping)": lambda: conn.execute(";"),
                "BEGIN + COMMIT (two round trips)": lambda: (
                    conn.execute("BEGIN"),
                    conn.execute("COMMIT"),
                ),
                "SELECT by primary key": lambda: conn.execute(
                    "SELECT v FROM t WHERE k = %s", (key,)
                ).fetchone(),
            }
            for name, call in cases.items():
                c0, s0 = time.process_time(), common.cpu_seconds(backend)
                for _ in range(calls):
                    call()
                client = (time.process_time() - c0) * 1e6 / calls
                server = (common.cpu_seconds(backend) - s0) * 1e6 / calls
                print(f"{name}: client {client:.0f} µs, server {server:.0f} µs per call")
    finally:
        pg.stop()


def seed(url: str, env: dict[str, str], client_id: str, count: int) -> None:
    """``count`` more families through tokend's store, as bench/scale.py seeds them."""
    from bench.scale import seed_families
    from tokend.config import Settings
    from tokend.runtime import build_runtime

    rt = build_runtime(
        Settings(database_url=url, secret_key=env["TOKEND_SECRET_KEY"]), prepare=True
    )
    try:
        took = seed_families(rt, client_id, count)
        print(f"# seeded {count:,} families in {took:.0f} s", file=sys.stderr, flush=True)
    finally:
        rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--scope", default="offline")
    ap.add_argument("--logged", type=int, default=200, help="refreshes with statements logged")
    ap.add_argument(
        "--families", type=int, default=0, help="seed this many families first (bench/scale.py)"
    )
    ap.add_argument(
        "--checkpoint",
        action="store_true",
        help="PostgreSQL: CHECKPOINT just before the measured run (full-page images: worst case)",
    )
    ap.add_argument("--round-trips", action="store_true", help="the cost of one round trip")
    args = ap.parse_args()
    if args.round_trips:
        round_trips()
        return
    common.require_wrk()

    with (
        tempfile.TemporaryDirectory(prefix="tokend-capacity-") as t,
        common.database(args.db, Path(t)) as db,
    ):
        tmp = Path(t)
        env = common.tokend_env(db.url, common.free_port())
        common.tokend("migrate", env=env)
        create = ["clients", "create", "--name", "capacity", "--scope", "openid offline"]
        create += ["--grant-type", "refresh_token", "--json"]
        client = json.loads(common.tokend(*create, env=env))
        common.tokend("users", "create", "bench", "--password-stdin", env=env, stdin="pw-bench\n")
        # Families: one per connection for the warm-up, one per connection for the measured
        # run (a file's tokens are spent by the run that reads it), one for the logged chain.
        c = args.conns
        issued = common.issue_tokens(env, client["client_id"], "bench", args.scope, 2 * c + 1)
        basic = common.basic(client)
        warm, run = tmp / "warm.txt", tmp / "run.txt"
        warm.write_text("".join(t["refresh_token"] + "\n" for t in issued[:c]))
        run.write_text("".join(t["refresh_token"] + "\n" for t in issued[c : 2 * c]))
        wenv = {"TOKENS_FILE": str(run), "BASIC": basic}
        if args.families:
            seed(db.url, env, client["client_id"], args.families)
        server = common.start_tokend(env, args.workers, tmp / "server.log")
        pg = Pg(db) if db.kind == "postgres" else None
        try:
            common.run_wrk(
                server.base, common.BENCH / "refresh.lua", c, 3, {**wenv, "TOKENS_FILE": str(warm)}
            )
            result: dict[str, Any] = {
                "db": db.kind,
                "workers": args.workers,
                "conns": args.conns,
                "scope": args.scope,
                "families": args.families,
                "checkpoint": args.checkpoint,
            }
            if pg is not None:
                n, seen = pg.statements(
                    lambda: chain(server.base, basic, issued[-1]["refresh_token"], args.logged)
                )
                result["logged_refreshes"] = n
                result["statements_per_refresh"] = round(sum(seen.values()) / n, 2)
                result["statements"] = {k: round(v / n, 3) for k, v in seen.most_common(20)}
                time.sleep(1.5)  # the statistics collector catches up
            if pg is not None and args.checkpoint:
                pg.sql("CHECKPOINT")
            size0 = db.size_bytes()
            before = pg.counters() if pg else {}
            cpu0 = common.cpu_seconds(server.proc.pid)
            wb0 = write_bytes(server.proc.pid)
            r = common.run_wrk(
                server.base, common.BENCH / "refresh.lua", args.conns, args.duration, wenv
            )
            cpu = common.cpu_seconds(server.proc.pid) - cpu0
            wb = write_bytes(server.proc.pid) - wb0
            if pg:
                time.sleep(1.5)
            after = pg.counters() if pg else {}
            size = db.size_bytes() - size0
            n = r.requests
            if r.non200 or r.missing or r.errors:
                raise SystemExit(f"the run had failures: {r}")
            result.update(
                refreshes=n,
                req_s=r.req_s,
                p50_ms=r.p50_ms,
                p99_ms=r.p99_ms,
                tokend_cpu_us_per_refresh=round(cpu * 1e6 / n),
                tokend_write_bytes_per_refresh=round(wb / n),
                database_growth_bytes_per_refresh=round(size / n),
            )
            for k in after:
                d = after[k] - before[k]
                if k == "pg_cpu_s":
                    result["pg_cpu_us_per_refresh"] = round(d * 1e6 / n)
                else:
                    result[f"{k}_per_refresh"] = round(d / n, 3)
            print(json.dumps(result, indent=1))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
