"""Resident memory of tokend's workers under a long run of refreshes (issue 6, criterion 4:
under 120 MB per worker after 10^6 refreshes, no leak).

    python bench/memory.py [--refreshes 1000000] [--conns 32] [--workers 2] [--chunk 10]
                           [--interval 1] [--db sqlite|postgres] [--scope offline] [--out FILE]

Starts `tokend serve --workers N` on a fresh database and drives the refresh grant with wrk
as bench/run.py does (one family per connection minted with `tokend tokens issue`, each
connection chaining its rotated token), in runs of --chunk seconds (fresh families each)
until --refreshes requests have completed. Each worker's VmRSS (/proc/PID/status) is read
at start (after startup, before any request), every --interval seconds during the runs, and
after each run with the number of requests so far.

Reports, per worker: RSS at start, after the first run (warm-up: imports, caches, pools),
at the end, and the maximum seen; and the growth per 10^5 requests after the warm-up (least
squares over the after-run samples), which is what a leak would show. Exits 1 on a non-200,
a 200 without a refresh token, a socket error, a worker that was replaced, or a worker over
--limit-mb (default 120).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import BENCH


class Sampler(threading.Thread):
    """VmRSS of the given processes every ``interval`` seconds; keeps the maximum of each."""

    def __init__(self, pids: list[int], interval: float) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.max_kb = {p: 0 for p in pids}
        self.samples = 0
        self._halt = threading.Event()

    def sample(self) -> dict[int, int | None]:
        now = {p: common.rss_kb(p) for p in self.pids}
        for p, kb in now.items():
            if kb is not None:
                self.max_kb[p] = max(self.max_kb[p], kb)
        self.samples += 1
        return now

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def slope_per_100k(points: list[tuple[int, int]]) -> float | None:
    """Least-squares slope of (requests, kB) in kB per 10^5 requests."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 1e5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--refreshes", type=int, default=1_000_000)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--scope", default="offline")
    ap.add_argument("--limit-mb", type=float, default=120)
    ap.add_argument("--wrk-timeout", type=int, default=10)
    ap.add_argument("--out", help="append a Markdown section to this file")
    args = ap.parse_args(argv)
    command = "python bench/memory.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    common.require_wrk()
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tokend-memory-") as tmpdir:
        tmp = Path(tmpdir)
        with common.database(args.db, tmp) as db:
            env = common.tokend_env(db.url, common.free_port())
            common.tokend("migrate", env=env)
            argv_ = ["clients", "create", "--name", "memory", "--scope", args.scope, "--json"]
            client = json.loads(common.tokend(*argv_, "--grant-type", "refresh_token", env=env))
            common.tokend("users", "create", "bench", "--password-stdin", env=env, stdin="pw\n")
            server = common.start_tokend(env, args.workers, tmp / "tokend.log")
            try:
                report = drive(args, env, client, server, tmp)
            finally:
                server.stop()
    report["minutes"] = round((time.monotonic() - t_start) / 60, 1)
    print(json.dumps(report), flush=True)
    if args.out:
        common.append(Path(args.out), markdown(report, args, command))
    failed = report["failures"]
    for f in failed:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failed else 0


def drive(
    args: argparse.Namespace,
    env: dict[str, str],
    client: dict[str, str],
    server: common.Server,
    tmp: Path,
) -> dict[str, Any]:
    pids = server.worker_pids()
    sampler = Sampler(pids, args.interval)
    start = sampler.sample()
    after: list[tuple[int, dict[int, int | None]]] = []  # (requests so far, RSS per worker)
    totals = {"requests": 0, "non200": 0, "missing": 0, "errors": 0}
    rates = []
    sampler.start()
    try:
        while totals["requests"] < args.refreshes:
            remaining = args.refreshes - totals["requests"]
            duration = args.chunk
            if rates:  # the last run: just long enough
                duration = max(1, min(args.chunk, math.ceil(remaining / rates[-1])))
            issued = common.issue_tokens(env, client["client_id"], "bench", args.scope, args.conns)
            f = tmp / "tokens.txt"
            f.write_text("".join(t["refresh_token"] + "\n" for t in issued))
            wenv = {**env, "TOKENS_FILE": str(f), "BASIC": common.basic(client)}
            r = common.measure(
                server, BENCH / "refresh.lua", args.conns, duration, wenv,
                timeout=args.wrk_timeout, path="",
            )  # fmt: skip
            for k in totals:
                totals[k] += r[k]
            rates.append(r["req_s"])
            after.append((totals["requests"], sampler.sample()))
            mb = {p: round((kb or 0) / 1024, 1) for p, kb in after[-1][1].items()}
            print(
                f"# {totals['requests']:,} refreshes, {r['req_s']:,.0f} req/s, "
                f"p99 {r['p99_ms']:.1f} ms, RSS MB {mb}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        sampler.stop()
    replaced = sorted(set(pids) ^ set(server.worker_pids()))
    workers = []
    for p in pids:
        series = [(n, rss[p]) for n, rss in after if rss.get(p) is not None]
        warm = series[1:] if len(series) > 2 else series
        slope = slope_per_100k(warm)
        workers.append(
            {
                "pid": p,
                "start_mb": _mb(start.get(p)),
                "after_warmup_mb": _mb(series[0][1]) if series else None,
                "end_mb": _mb(series[-1][1]) if series else None,
                "max_mb": _mb(sampler.max_kb[p]),
                "growth_mb_per_100k": None if slope is None else round(slope / 1024, 2),
                "growth_end_minus_warmup_mb_per_100k": _per_100k(series),
            }
        )
    failures = [f"{k}={v}" for k, v in totals.items() if k != "requests" and v]
    failures += [f"worker {p} replaced during the run" for p in replaced]
    failures += [
        f"worker {w['pid']} reached {w['max_mb']} MB (limit {args.limit_mb})"
        for w in workers
        if w["max_mb"] > args.limit_mb
    ]
    return {
        **totals,
        "runs": len(after),
        "mean_req_s": round(sum(rates) / len(rates), 1) if rates else 0,
        "conns": args.conns,
        "rss_samples": sampler.samples,
        "workers": workers,
        "failures": failures,
    }


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _per_100k(series: list[tuple[int, int]]) -> float | None:
    if len(series) < 2 or series[-1][0] == series[0][0]:
        return None
    return round((series[-1][1] - series[0][1]) / 1024 / (series[-1][0] - series[0][0]) * 1e5, 2)


def markdown(report: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    rows = [
        f"| {i + 1} | {w['start_mb']} | {w['after_warmup_mb']} | {w['end_mb']} | {w['max_mb']} | "
        f"{w['growth_mb_per_100k']} | {w['growth_end_minus_warmup_mb_per_100k']} |"
        for i, w in enumerate(report["workers"])
    ]
    return "\n".join(
        [
            f"\n### {common.now_utc()} — worker memory over {report['requests']:,} refreshes: "
            f"{args.db}, {args.workers} workers, {args.conns} connections",
            common.machine_line(),
            "",
            f"`{command}`",
            "",
            f"{report['runs']} wrk runs of up to {args.chunk} s, {report['mean_req_s']:,.0f} "
            f"req/s on average, {report['minutes']} min; non-200: {report['non200']}, "
            f"200 w/o refresh_token: {report['missing']}, socket errors: {report['errors']}; "
            f"{report['rss_samples']} RSS samples per worker.",
            "",
            "| worker | start MB | after 1st run MB | end MB | max MB | growth MB/10^5 (fit) "
            "| growth MB/10^5 (end - 1st run) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
