"""Peak memory of tokend's workers under a flood of wrong sign-ins (issue 10 §7: 80 threads x
3 wrong logins drove two workers from 159 MiB to 4,480 MiB RSS).

    python bench/login_flood.py [--threads 80] [--logins 3] [--workers 2]
                                [--hash-concurrency N] [--throttle]

Starts `tokend serve --workers N` on a fresh SQLite database with one user, then runs
--threads threads, each signing in --logins times with a wrong password (GET /account for
the CSRF cookie, POST the form), all from one address. The abuse limits are off unless
--throttle (so every attempt runs Argon2 and only the hash bound is measured).
--hash-concurrency sets TOKEND_PASSWORD_HASH_CONCURRENCY (default: tokend's, the CPU
count); a large value (e.g. 1000) is the old, unbounded behaviour. Reports the workers'
summed VmRSS before and at its peak (sampled every 20 ms), the wall time and the answers.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=80)
    ap.add_argument("--logins", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hash-concurrency", type=int, default=None)
    ap.add_argument("--throttle", action="store_true", help="keep the default abuse limits")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, common.database("sqlite", Path(tmp)) as db:
        env = common.tokend_env(db.url, common.free_port())
        if args.hash_concurrency is not None:
            env["TOKEND_PASSWORD_HASH_CONCURRENCY"] = str(args.hash_concurrency)
        if not args.throttle:
            env["TOKEND_LOGIN_FAILURE_LIMIT"] = "0"
            env["TOKEND_LOGIN_ADDRESS_FAILURE_LIMIT"] = "0"
        common.tokend("migrate", env=env)
        common.tokend("users", "create", "alice", "--password-stdin", env=env, stdin="right\n")
        server = common.start_tokend(env, args.workers, Path(tmp) / "server.log")
        try:
            pids = server.worker_pids()
            start_kb = sum(common.rss_kb(p) or 0 for p in pids)
            peak = [start_kb]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], sum(common.rss_kb(p) or 0 for p in pids))
                    time.sleep(0.02)

            answers: Counter[int] = Counter()
            lock = threading.Lock()

            def flood() -> None:
                with httpx.Client(base_url=server.base, timeout=300) as http:
                    for _ in range(args.logins):
                        page = http.get("/account")
                        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                        assert m, page.text
                        r = http.post(
                            "/auth/v2/authorize/login",
                            data={"csrf_token": m.group(1), "next": "/account",
                                  "username": "alice", "password": "wrong"},
                        )  # fmt: skip
                        with lock:
                            answers[r.status_code] += 1

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            threads = [threading.Thread(target=flood) for _ in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
            done.set()
            sampler.join()
        finally:
            server.stop()
    n = args.threads * args.logins
    print(
        f"workers={args.workers} threads={args.threads} logins={n} "
        f"hash_concurrency={args.hash_concurrency or 'default'} throttle={args.throttle}: "
        f"RSS {start_kb / 1024:.0f} MiB -> peak {peak[0] / 1024:.0f} MiB; "
        f"{wall:.1f} s ({n / wall:.1f} logins/s); answers {dict(answers)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
