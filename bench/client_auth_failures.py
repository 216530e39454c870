"""What a failed client authentication costs, by kind of failure (issue 10 §7: on PostgreSQL
an unknown client id answered in ~1.5 ms against ~0.9 ms for a wrong secret, and garbage
ids always reached the database).

    python bench/client_auth_failures.py [--db sqlite|postgres] [--n 300]

Starts `tokend serve --workers 1` (abuse limits off, so that every request is judged) and
sends --n sequential client_credentials requests of each kind, over one keep-alive
connection: a right secret (200), a wrong secret of a real client, one unknown (well-formed)
id repeated, a new random unknown id each time, and ids no client can have (too long). Reports
the median and p90 latency of each kind, and how many statements the database ran for the
whole batch (PostgreSQL: pg_stat_database.xact_commit + xact_rollback).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common


def _transactions(db: common.Database) -> int | None:
    if db.kind != "postgres":
        return None
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(db._pg.port), "-U", "postgres", "-Atc",
         "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench'"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="tokend-bench-") as tmp,
        common.database(args.db, Path(tmp)) as db,
    ):
        port = common.free_port()
        env = common.tokend_env(db.url, port)
        env["TOKEND_CLIENT_AUTH_FAILURE_LIMIT"] = "0"
        env["TOKEND_CLIENT_AUTH_ADDRESS_FAILURE_LIMIT"] = "0"
        common.tokend("migrate", env=env)
        client = json.loads(
            common.tokend(
                "clients", "create", "--name", "bench", "--grant-type", "client_credentials",
                "--scope", "openid", "--json", env=env,
            )
        )  # fmt: skip
        cid, secret = client["client_id"], client["client_secret"]
        unknown = secrets.token_hex(11)
        kinds = {
            "right secret": lambda: (cid, secret),
            "wrong secret": lambda: (cid, "tkd_cs_wrong"),
            "unknown id, repeated": lambda: (unknown, "x"),
            "unknown id, new each time": lambda: (secrets.token_hex(11), "x"),
            "impossible id (65 chars)": lambda: ("x" * 65, "x"),
        }
        cc = {"grant_type": "client_credentials"}
        server = common.start_tokend(env, 1, Path(tmp) / "server.log")
        try:
            with httpx.Client(base_url=server.base, timeout=10) as http:
                print(f"# {common.machine_line()}")
                print(f"# {args.db}, {args.n} sequential requests per kind, one connection")
                print("| failure | median ms | p90 ms | status | database transactions |")
                print("|---|---:|---:|---:|---:|")
                for name, creds in kinds.items():
                    for _ in range(20):  # warm up (caches, connections)
                        http.post("/auth/v2/token", data=cc, auth=creds())
                    before = _transactions(db)
                    times, statuses = [], set()
                    for _ in range(args.n):
                        auth = creds()
                        t = time.perf_counter()
                        r = http.post("/auth/v2/token", data=cc, auth=auth)
                        times.append((time.perf_counter() - t) * 1000)
                        statuses.add(r.status_code)
                    after = _transactions(db)
                    tx = "-" if before is None or after is None else str(after - before)
                    p90 = statistics.quantiles(times, n=10)[-1]
                    print(f"| {name} | {statistics.median(times):.2f} | {p90:.2f} | "
                          f"{'/'.join(map(str, sorted(statuses)))} | {tx} |")  # fmt: skip
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
