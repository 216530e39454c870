"""gc at scale (issue 12): how long `tokend gc` takes over many expired families, and what
it does to the refresh p99 of traffic running at the same time.

    python bench/gc.py [--db sqlite|postgres] [--families 1000000] [--tokens 2]
                       [--conns 8] [--workers 2] [--chunk 5]

On a fresh database (SQLite file, or a throwaway PostgreSQL as in bench/run.py): seeds
``--families`` families that expired two days ago, each with ``--tokens`` refresh tokens
(a spent one and its successor, as a rotated family has), with set-based INSERT ... SELECT
(a recursive CTE on SQLite, generate_series on PostgreSQL); starts `tokend serve`; drives
the refresh grant with wrk (bench/refresh.lua, one live family per connection) for
``--chunk`` seconds without gc (the baseline), then runs `tokend gc` in a process of its
own and keeps driving wrk in ``--chunk``-second runs until gc is done. Prints one JSON line
per wrk run (``phase``: baseline or gc) and a summary: gc's wall time and counts, the
baseline p99, and the p99 of each run during gc (the worst and the median).

Measured (issue 12; 2 cores shared with other jobs, load average ~8; --conns 8 --workers 2,
5 s runs, 2 tokens per family, batches of 200 with a rest as long after each):

| db | families | gc time | p99 baseline | p99 during gc: median, worst | req/s before, during |
|---|---|---|---|---|---|
| PostgreSQL | 10^6 | 311 s | 123 ms | 111 / 176 ms | 205 / 225 |
| SQLite | 10^6 | 350 s | 32 ms | 84 / 152 ms | 966 / 611 |
| SQLite | 10^5 | 37 s | 62 ms | 65 / 89 ms | 628 / 594 |
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import BENCH

DAY = 86400


def seed(db: common.Database, client_id: str, user_id: str, families: int, tokens: int) -> None:
    """``families`` families that expired two days ago (past gc's one-day retention), with
    ``tokens`` refresh tokens each: a handful of set-based statements, one transaction."""
    from sqlalchemy import text

    from tokend.store.engine import create_db_engine

    t = time.time() - 2 * DAY
    engine = create_db_engine(db.url)
    p = {"n": families, "c": client_id, "u": user_id, "t0": t - 30 * DAY, "t": t}
    if db.kind == "sqlite":
        series = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
        fid = "printf('gcbench%025d', i)"
        token_hash = "randomblob(32)"
    else:
        series = "WITH s(i) AS (SELECT generate_series(1, :n)) "
        fid = "'gcbench' || lpad(i::text, 25, '0')"
        token_hash = "decode(md5(random()::text) || md5(random()::text), 'hex')"
    with engine.begin() as conn:
        conn.execute(
            text(
                series + "INSERT INTO token_families (id, client_id, user_id, subject, scope, "
                "created_at, expires_at, auth_time) "
                f"SELECT {fid}, :c, :u, 'bench-subject', 'offline', :t0, :t, :t0 FROM s"
            ),
            p,
        )
        for k in range(tokens):
            conn.execute(
                text(
                    series + "INSERT INTO refresh_tokens (token_hash, family_id, created_at, "
                    "expires_at, spent_at) "
                    f"SELECT {token_hash}, {fid}, :t0, :t, "
                    f"{':t0' if k < tokens - 1 else 'NULL'} FROM s"
                ),
                p,
            )
    if db.kind == "postgres":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def wrk_run(server: common.Server, env: dict[str, str], args: argparse.Namespace,
            client: dict[str, str], tmp: Path, **meta: Any) -> dict[str, Any]:  # fmt: skip
    """One wrk run of refreshes on ``--conns`` fresh families (a run leaves its chains'
    last tokens in wrk: the next run needs new families)."""
    issued = common.issue_tokens(env, client["client_id"], "bench", "offline", args.conns)
    tokens_file = tmp / "refresh.txt"
    tokens_file.write_text("".join(t["refresh_token"] + "\n" for t in issued))
    wenv = {**env, "TOKENS_FILE": str(tokens_file), "BASIC": common.basic(client)}
    r = common.measure(server, BENCH / "refresh.lua", args.conns, args.chunk, wenv, path="")
    r = {**meta, "conns": args.conns, "workers": args.workers, **r}
    print(json.dumps(r), flush=True)
    if r["non200"] or r["missing"] or r["errors"]:
        raise SystemExit("refreshes failed during the run (see the line above)")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--families", type=int, default=1_000_000)
    ap.add_argument("--tokens", type=int, default=2, help="refresh tokens per family")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=5, help="seconds per wrk run")
    args = ap.parse_args()
    common.require_wrk()
    with tempfile.TemporaryDirectory() as d, common.database(args.db, Path(d)) as db:
        tmp = Path(d)
        env = common.tokend_env(db.url, common.free_port())
        common.tokend("migrate", env=env)
        client = json.loads(common.tokend(
            "clients", "create", "--name", "gc-bench", "--scope", "offline",
            "--grant-type", "refresh_token", "--json", env=env,
        ))  # fmt: skip
        user = json.loads(common.tokend(
            "users", "create", "bench", "--password-stdin", env=env, stdin="bench-pw\n"
        ))  # fmt: skip
        t0 = time.monotonic()
        seed(db, client["client_id"], user["id"], args.families, args.tokens)
        seeded = time.monotonic() - t0
        print(f"# seeded {args.families:,} expired families x {args.tokens} tokens in "
              f"{seeded:.1f} s; database {db.size_bytes() / 1e6:,.0f} MB",
              file=sys.stderr, flush=True)  # fmt: skip
        server = common.start_tokend(env, args.workers, tmp / "tokend.log")
        try:
            wrk_run(server, env, args, client, tmp, phase="warmup", db=db.kind)
            base = wrk_run(server, env, args, client, tmp, phase="baseline", db=db.kind)
            started = time.monotonic()
            gc = subprocess.Popen(
                [sys.executable, "-m", "tokend.cli", "gc"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            during = []
            while gc.poll() is None:
                during.append(wrk_run(server, env, args, client, tmp, phase="gc", db=db.kind))
            out, err = gc.communicate()
            took = time.monotonic() - started
            if gc.returncode != 0:
                raise SystemExit(f"tokend gc failed: {err}")
            after = wrk_run(server, env, args, client, tmp, phase="after", db=db.kind)
        finally:
            server.stop()
        p99s = [r["p99_ms"] for r in during]
        summary = {
            "db": db.kind,
            "families": args.families,
            "tokens_per_family": args.tokens,
            "seed_s": round(seeded, 1),
            "gc_s": round(took, 1),  # wall time, under the refresh load (first run's end)
            "gc": json.loads(out),
            "baseline_p99_ms": base["p99_ms"],
            "baseline_req_s": base["req_s"],
            "gc_p99_ms_worst": max(p99s),
            "gc_p99_ms_median": statistics.median(p99s),
            "gc_req_s_median": statistics.median(r["req_s"] for r in during),
            "after_p99_ms": after["p99_ms"],
            "conns": args.conns,
            "workers": args.workers,
        }
        print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
