"""Scale-out: N separate `tokend serve` processes over one PostgreSQL (issue 14, target 2).

    python bench/scaleout.py [--servers 1,2,3] [--conns 8,32] [--duration 10] [--workers 2]
                             [--warmup 3] [--race-trials 50] [--race-per-server 2]
                             [--out FILE.md] [--json FILE]
    python bench/run.py --servers 1,2,3 ...   (the same, after run.py's own series)

One throwaway PostgreSQL server (durable: fsync and synchronous_commit on, as in
bench/run.py --db postgres). For each N in --servers, N `tokend serve --workers W`
processes are started on N ports, as N machines behind a load balancer would be: one
database URL, one TOKEND_SECRET_KEY, one issuer. For each total concurrency C in --conns,
C families are minted with `tokend tokens issue` and the C connections are spread over the
servers (C // N each, the remainder one more): one wrk per server, all at once, each
connection chaining its own rotated refresh token (bench/refresh.lua, the same checks:
every 200 carries a refresh_token, nothing but 200s, no socket errors).

Each point reports: total req/s (the sum of the wrk runs), p50 and p99 of the worst server
(wrk does not export its histograms, so the percentiles are not merged: the worst server's
is an upper bound of the whole), CPU per refresh of the tokend processes and of PostgreSQL
(postmaster and backends, from /proc), the machine's busy CPU (/proc/stat: every process,
other tenants included), and where PostgreSQL's backends spent the run, sampled from
pg_stat_activity every 20 ms (mean number of backends: running, waiting on a row lock,
waiting on WAL fsync, waiting for tokend inside an open transaction), with pg_stat_wal's
WAL fsyncs per refresh (below 1: group commit; approximate, backends report to pg_stat_wal
up to a second late) and fsync time. (The sampler's own queries
cost PostgreSQL about 50 small reads a second, counted in its CPU.)

The race (for each N >= 2): --race-trials times, one fresh refresh token is presented to
every server at once (--race-per-server requests each, each on its own connection, opened
beforehand, released by one barrier). With the default reuse grace (10 s) the documented
rule is one rotation and identical answers: every response is a 200 carrying the same
successor, the family holds exactly two tokens (the spent one and its successor), is not
revoked and has no reuse event, and the successor refreshes (the servers run with
TOKEND_REFRESH_GRACE_RETRIES raised to the requests of one trial when that exceeds 10).
At the largest N the servers are then restarted with TOKEND_REFRESH_REUSE_GRACE=0 and the
race repeated: exactly one 200, every other answer invalid_grant, still exactly two tokens,
and the family revoked with a reuse event (the documented reuse rule). A double successor
fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import BENCH, Server

SAMPLE_S = 0.02
# pg_stat_activity states and wait events, grouped.
WAITS = {
    "cpu": "running (no wait event)",
    "lock": "waiting on a lock (the row lock of a contested token, or another)",
    "wal": "waiting on WAL write/fsync",
    "client": "idle in transaction: waiting for tokend's next statement",
    "other": "other waits",
}


class Cluster:
    """The database, the client and user, and the servers of one N."""

    def __init__(self, db: common.Database, tmp: Path, workers: int) -> None:
        self.db = db
        self.tmp = tmp
        self.workers = workers
        self.env = common.tokend_env(db.url, common.free_port())
        common.tokend("migrate", env=self.env)
        argv = ["clients", "create", "--name", "scaleout", "--scope", "offline", "--json"]
        argv += ["--grant-type", "refresh_token"]
        self.client = json.loads(common.tokend(*argv, env=self.env))
        common.tokend("users", "create", "bench", "--password-stdin", env=self.env, stdin="pw\n")
        self.basic = common.basic(self.client)
        self.servers: list[Server] = []

    def start(self, n: int, extra_env: dict[str, str] | None = None) -> None:
        self.stop()
        for i in range(n):
            port = int(self.env["TOKEND_PORT"]) if i == 0 else common.free_port()
            env = {**self.env, **(extra_env or {}), "TOKEND_PORT": str(port)}
            log = self.tmp / f"tokend-{i}.log"
            self.servers.append(common.start_tokend(env, self.workers, log))

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers = []

    def tokens(self, count: int) -> list[str]:
        issued = common.issue_tokens(self.env, self.client["client_id"], "bench", "offline", count)
        return [t["refresh_token"] for t in issued]


def postmaster_pid(db: common.Database) -> int:
    return int((Path(db._pg.root) / "data" / "postmaster.pid").read_text().split()[0])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Sampler:
    """pg_stat_activity every SAMPLE_S in a thread: the tokend backends' states."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()

    def _run(self) -> None:
        q = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        )
        while not self._stop.wait(SAMPLE_S):
            for state, wtype, wevent in self.conn.execute(q).fetchall():
                if state == "idle in transaction":
                    self.counts["client"] += 1
                elif state != "active":
                    continue
                elif wtype is None:
                    self.counts["cpu"] += 1
                elif wtype == "Lock":
                    self.counts["lock"] += 1
                elif wtype == "IO" and wevent in ("WALSync", "WALWrite"):
                    self.counts["wal"] += 1
                elif wtype == "LWLock" and wevent == "WALWrite":
                    self.counts["wal"] += 1  # queued behind the backend doing the fsync
                else:
                    self.counts["other"] += 1
            self.samples += 1

    def means(self) -> dict[str, float]:
        return {k: round(self.counts[k] / max(self.samples, 1), 2) for k in WAITS}


def wal_stats(url: str) -> tuple[int, float]:
    """(wal_sync, wal_sync_time ms) from pg_stat_wal (the time needs track_wal_io_timing)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT wal_sync, wal_sync_time FROM pg_stat_wal").fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def split(conns: int, n: int) -> list[int]:
    return [conns // n + (1 if i < conns % n else 0) for i in range(n)]


def point(
    cl: Cluster, conns: int, duration: int, timeout: int, pg_pid: int, tag: str
) -> dict[str, Any]:
    n = len(cl.servers)
    tokens = cl.tokens(conns)
    shares = split(conns, n)
    jobs = []
    at = 0
    for i, (server, c) in enumerate(zip(cl.servers, shares, strict=True)):
        if c == 0:
            continue
        f = cl.tmp / f"scaleout-{tag}-{i}.txt"
        f.write_text("".join(t + "\n" for t in tokens[at : at + c]))
        at += c
        jobs.append((server, c, {**cl.env, "TOKENS_FILE": str(f), "BASIC": cl.basic}))
    url = cl.db.url
    tokend0 = sum(common.cpu_seconds(s.proc.pid) for s in cl.servers)
    pg0 = common.cpu_seconds(pg_pid)
    busy0, total0 = machine_ticks()
    wal0 = wal_stats(url)

    def drive(job: tuple[Server, int, dict[str, str]]) -> common.WrkResult:
        server, c, env = job
        lua = BENCH / "refresh.lua"
        return common.run_wrk(server.base, lua, c, duration, env, timeout=timeout, path="")

    with Sampler(url) as sampler, ThreadPoolExecutor(len(jobs)) as pool:
        runs = list(pool.map(drive, jobs))
    wal1 = wal_stats(url)
    busy1, total1 = machine_ticks()
    pg_cpu = common.cpu_seconds(pg_pid) - pg0
    tokend_cpu = sum(common.cpu_seconds(s.proc.pid) for s in cl.servers) - tokend0
    requests = sum(r.requests for r in runs)
    return {
        "servers": n,
        "workers": cl.workers,
        "conns": conns,
        "shares": [c for _, c, _ in jobs],
        "req_s": round(sum(r.req_s for r in runs), 1),
        "requests": requests,
        "per_server_req_s": [round(r.req_s) for r in runs],
        "p50_ms": max(r.p50_ms for r in runs),
        "p99_ms": max(r.p99_ms for r in runs),
        "non200": sum(r.non200 for r in runs),
        "missing": sum(r.missing for r in runs),
        "errors": sum(r.errors for r in runs),
        "tokend_cpu_ms": round(tokend_cpu * 1000 / max(requests, 1), 3),
        "pg_cpu_ms": round(pg_cpu * 1000 / max(requests, 1), 3),
        "machine_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1),
        "pg_backends": sampler.means(),
        "fsyncs_per_refresh": round((wal1[0] - wal0[0]) / max(requests, 1), 2),
        "fsync_ms_per_s": round((wal1[1] - wal0[1]) / duration, 1),
    }


# -- the race --------------------------------------------------------------------------------


def family_state(url: str, token: str) -> tuple[int, bool, int]:
    """(refresh tokens in the token's family, family revoked?, reuse events)."""
    import hashlib

    import psycopg

    h = hashlib.sha256(token.encode()).digest()  # tokend stores only SHA-256 (core/secrets.py)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT f.id, f.revoked_at FROM refresh_tokens t "
            "JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = %s",
            (h,),
        ).fetchone()
        assert row is not None, "the raced token is not in the database"
        fid, revoked = row
        (n,) = conn.execute(
            "SELECT count(*) FROM refresh_tokens WHERE family_id = %s", (fid,)
        ).fetchone()
        (reuse,) = conn.execute(
            "SELECT count(*) FROM security_events WHERE family_id = %s "
            "AND kind = 'refresh_token_reuse'",
            (fid,),
        ).fetchone()
    return int(n), revoked is not None, int(reuse)


def race(cl: Cluster, trials: int, per_server: int, grace: bool) -> dict[str, Any]:
    """``trials`` same-token storms across every server; the counts of each outcome."""
    import httpx
    from tests.support.server import storm

    bases = [s.base for s in cl.servers]
    n = len(bases) * per_server
    auth = (cl.client["client_id"], cl.client["client_secret"])
    out: Counter[str] = Counter()
    failures: list[str] = []
    for i, token in enumerate(cl.tokens(trials)):
        data = {"grant_type": "refresh_token", "refresh_token": token}
        responses = storm(bases, n, "/auth/v2/token", auth=auth, data=data)
        ok = [r for r in responses if r.status_code == 200]
        successors = {r.json()["refresh_token"] for r in ok}
        n_succ = len(successors)
        rejected = [r for r in responses if r.status_code != 200]
        invalid_grant = all(
            r.status_code == 400 and r.json().get("error") == "invalid_grant" for r in rejected
        )
        n_tokens, revoked, reuse = family_state(cl.db.url, token)
        out["successes"] += len(ok)
        out["distinct_successors"] += n_succ
        out["double_successors"] += int(n_succ > 1 or n_tokens > 2)
        out["revoked"] += int(revoked)
        bad = n_succ != 1 or n_tokens != 2
        if grace:
            follow = httpx.post(
                f"{bases[i % len(bases)]}/auth/v2/token", auth=auth, timeout=30,
                data={"grant_type": "refresh_token", "refresh_token": successors.pop()}
                if n_succ == 1 else data,
            )  # fmt: skip
            out["successor_works"] += int(follow.status_code == 200)
            bad |= len(ok) != n or revoked or reuse != 0 or follow.status_code != 200
        else:
            bad |= len(ok) != 1 or not invalid_grant or not revoked or reuse < 1
        if bad:
            failures.append(
                f"trial {i}: {len(ok)}/{n} 200s, {n_succ} distinct successors, "
                f"{n_tokens} tokens in the family, revoked={revoked}, reuse events={reuse}, "
                f"statuses={sorted(Counter(r.status_code for r in responses).items())}"
            )
    return {
        "servers": len(bases),
        "grace": "10 s (default)" if grace else "0",
        "trials": trials,
        "requests_per_trial": n,
        **out,
        "failed_trials": len(failures),
        "failures": failures[:5],
    }


# -- the matrix ----------------------------------------------------------------------------


def run_matrix(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    races: list[dict[str, Any]] = []
    with common.database("postgres", tmp) as db:
        subprocess_psql(db, "ALTER SYSTEM SET track_wal_io_timing = on")
        subprocess_psql(db, "SELECT pg_reload_conf()")
        pg_pid = postmaster_pid(db)
        cl = Cluster(db, tmp, args.workers)
        # Each race is one rotation and (requests - 1) grace retries: keep them all inside
        # the documented retry bound (default 10) whatever --race-per-server says.
        retries = max(10, max(args.server_list) * args.race_per_server)
        grace_env = {"TOKEND_REFRESH_GRACE_RETRIES": str(retries)}
        try:
            for n in args.server_list:
                cl.start(n, grace_env)
                if args.warmup > 0:
                    w = point(cl, max(args.conn_list), args.warmup, args.wrk_timeout, pg_pid, "w")
                    print(f"# warm-up N={n}: {json.dumps(w)}", file=sys.stderr, flush=True)
                for conns in args.conn_list:
                    r = point(cl, conns, args.duration, args.wrk_timeout, pg_pid, f"{n}-{conns}")
                    print(json.dumps(r), flush=True)
                    results.append(r)
                if n >= 2 and args.race_trials > 0:
                    r = race(cl, args.race_trials, args.race_per_server, grace=True)
                    print(json.dumps(r), flush=True)
                    races.append(r)
            top = max(args.server_list)
            if top >= 2 and args.race_trials > 0:
                cl.start(top, {**grace_env, "TOKEND_REFRESH_REUSE_GRACE": "0"})
                r = race(cl, args.race_trials, args.race_per_server, grace=False)
                print(json.dumps(r), flush=True)
                races.append(r)
        finally:
            cl.stop()
    return results, races


def subprocess_psql(db: common.Database, sql: str) -> None:
    import subprocess

    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(db._pg.port), "-U", "postgres", "-qAtc", sql],
        check=True, capture_output=True,
    )  # fmt: skip


def failures(results: list[dict[str, Any]], races: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        bad = {k: r[k] for k in ("non200", "missing", "errors") if r[k]}
        if r["requests"] == 0:
            bad["requests"] = 0
        if bad:
            out.append(f"scale-out N={r['servers']} c={r['conns']}: {bad}")
    for r in races:
        if r["failed_trials"] or r["double_successors"]:
            out.append(
                f"race N={r['servers']} grace={r['grace']}: {r['failed_trials']} failed trials, "
                f"{r['double_successors']} double successors: {r['failures']}"
            )
    return out


def markdown(results: list[dict[str, Any]], races: list[dict[str, Any]], command: str) -> str:
    rows = [
        f"| {r['servers']} | {r['conns']} ({'/'.join(map(str, r['shares']))}) | "
        f"{r['req_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['tokend_cpu_ms']:.2f} | "
        f"{r['pg_cpu_ms']:.2f} | {r['tokend_cpu_ms'] + r['pg_cpu_ms']:.2f} | "
        f"{r['machine_busy_pct']:.0f} | "
        + " / ".join(f"{r['pg_backends'][k]:.1f}" for k in ("cpu", "lock", "wal", "client"))
        + f" | {r['fsyncs_per_refresh']:.2f} | {r['non200'] + r['missing'] + r['errors']} |"
        for r in results
    ]
    race_rows = [
        f"| {r['servers']} | {r['grace']} | {r['trials']} | {r['requests_per_trial']} | "
        f"{r['successes']} | {r['distinct_successors']} | {r['double_successors']} | "
        f"{r['revoked']} | {r.get('successor_works', '-')} | {r['failed_trials']} |"
        for r in races
    ]
    workers = results[0]["workers"] if results else "?"
    return "\n".join(
        [
            f"\n### {common.now_utc()} — scale-out: N tokend servers ({workers} workers each) "
            f"over one PostgreSQL (durable), refresh (offline)",
            common.machine_line(),
            "",
            f"`{command}`",
            "",
            "p50/p99: the worst server's. CPU per refresh from /proc: tokend = all servers' "
            "processes, PG = postmaster + backends. Machine busy: /proc/stat over the point, "
            "every process (wrk, other tenants). PG backends: mean number sampled every 20 ms "
            "running / waiting on a lock / waiting on WAL fsync / idle in transaction (waiting "
            "for tokend).",
            "",
            "| servers | conns (per server) | req/s | p50 ms | p99 ms | tokend CPU ms/req | "
            "PG CPU ms/req | total CPU ms/req | machine busy % | PG backends run / lock / "
            "fsync / wait-tokend | WAL fsyncs per refresh | errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            *rows,
            "",
            "Same-token race across servers (one fresh token presented to every server at "
            "once, each trial):",
            "",
            "| servers | reuse grace | trials | requests/trial | 200s | distinct successors "
            "| double successors | families revoked | successor refreshes | failed trials |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *race_rows,
            "",
        ]
    )


def add_arguments(ap: argparse.ArgumentParser, *, standalone: bool) -> None:
    if standalone:
        ap.add_argument("--servers", default="1,2,3", help="numbers of tokend servers")
        ap.add_argument("--conns", default="8,32", help="total connections, spread")
        ap.add_argument("--duration", type=int, default=10, help="seconds per point")
        ap.add_argument("--workers", type=int, default=2, help="workers per server")
        ap.add_argument("--wrk-timeout", type=int, default=10)
        ap.add_argument("--out", help="append a Markdown section to this file")
        ap.add_argument("--json", help="write the raw results to this file")
    ap.add_argument(
        "--scaleout-warmup",
        dest="scaleout_warmup",
        type=int,
        default=3,
        help="scale-out: seconds of unreported load after starting each N. Default 3",
    )
    ap.add_argument("--race-trials", type=int, default=50, help="same-token races per N >= 2")
    ap.add_argument(
        "--race-per-server", type=int, default=2, help="requests per server in each race"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(ap, standalone=True)
    args = ap.parse_args(argv)
    command = "python bench/scaleout.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    common.require_wrk()
    args.server_list = [int(n) for n in args.servers.split(",")]
    args.conn_list = [int(c) for c in args.conns.split(",")]
    args.warmup = args.scaleout_warmup
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tokend-scaleout-") as tmpdir:
        results, races = run_matrix(args, Path(tmpdir))
    if args.json:
        Path(args.json).write_text(json.dumps({"points": results, "races": races}, indent=1))
    if args.out:
        common.append(Path(args.out), markdown(results, races, command))
    bad = failures(results, races)
    print(f"# {len(results)} points, {len(races)} races in {time.monotonic() - t0:.0f} s",
          file=sys.stderr)  # fmt: skip
    for line in bad:
        print(f"FAIL {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
