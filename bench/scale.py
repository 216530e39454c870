"""Refresh latency against the number of stored families (issue 6, criterion 3: flat at 10^3,
10^5 and 10^6).

    python bench/scale.py [--sizes 1000,100000,1000000] [--conns 1,32] [--duration 10]
                          [--workers 2] [--db sqlite|postgres] [--cli-sample 1000] [--out FILE]

One database grows through the sizes in increasing order. For each size: the families are
added, `tokend serve --workers N` is started on the database, and for each concurrency the
refresh grant is driven as in bench/run.py (fresh families minted with `tokend tokens issue`,
one per connection, each connection chaining its rotated token; a 1 s warm-up first), and
req/s, p50, p99, server CPU per request and every non-200 are reported, with the database
size on disk.

Seeding. `tokend tokens issue --count N` signs an access token per family (RS256, ~1 ms on a
slow core) in a transaction per family: its rate is measured on --cli-sample families and
the time for 10^6 extrapolated. The bulk of the families is instead added in-process with
tokend's own store code, the same calls that `tokens issue` and the authorization code grant
make to start a family (FamilyIssuer.start: SqlTransaction.create_family +
insert_refresh_token, so the rows are real: hashed refresh token, expiry, family), 10,000
per transaction and without minting access tokens, spread over 1,000 users. Each family has
one live refresh token, scope "offline".
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import BENCH

BATCH = 10_000
USERS = 1_000


def seed_families(rt: Any, client_id: str, count: int, *, first_user: int = 0) -> float:
    """Add ``count`` families (one live refresh token each) through tokend's store; the
    seconds it took (the users, made once, not counted)."""
    import secrets

    from argon2 import PasswordHasher

    from tokend.core.errors import AlreadyExists
    from tokend.core.models import User
    from tokend.core.secrets import new_id

    client = rt.store.get_client(client_id)
    password_hash = PasswordHasher().hash(secrets.token_urlsafe(16))  # nobody signs in
    users = []
    for i in range(USERS):
        name = f"scale-{i}"
        user = rt.store.get_user_by_username(name)
        if user is None:
            user = User(
                id=new_id(),
                username=name,
                password_hash=password_hash,
                email=None,
                email_verified=False,
                given_name=None,
                family_name=None,
                phone_number=None,
                phone_number_verified=False,
                picture=None,
            )
            try:
                rt.store.create_user(user, now=rt.clock.now())
            except AlreadyExists:
                user = rt.store.get_user_by_username(name)
        users.append((user.id, rt.subjects.subject(client, user.id)))
    t0 = time.monotonic()
    done = 0
    while done < count:
        n = min(BATCH, count - done)
        with rt.store.transaction() as tx:
            for j in range(done, done + n):
                user_id, subject = users[(first_user + j) % USERS]
                rt.issuer.start(
                    tx,
                    client=client,
                    user_id=user_id,
                    subject=subject,
                    scopes=("offline",),
                    now=rt.clock.now(),
                )
        done += n
        if done % 100_000 == 0 or done == count:
            rate = done / (time.monotonic() - t0)
            print(f"#   {done:,}/{count:,} families ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000", help="stored families")
    ap.add_argument("--conns", default="1,32")
    ap.add_argument("--duration", type=int, default=10, help="seconds per point")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument(
        "--cli-sample",
        type=int,
        default=1000,
        help="families minted with `tokend tokens issue --count` to measure its rate (0: skip)",
    )
    ap.add_argument("--wrk-timeout", type=int, default=10)
    ap.add_argument("--out", help="append a Markdown section to this file")
    args = ap.parse_args(argv)
    command = "python bench/scale.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    common.require_wrk()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    conn_list = [int(c) for c in args.conns.split(",")]
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tokend-scale-") as tmpdir:
        tmp = Path(tmpdir)
        with common.database(args.db, tmp) as db:
            env = common.tokend_env(db.url, common.free_port())
            common.tokend("migrate", env=env)
            argv = ["clients", "create", "--name", "scale", "--scope", "offline", "--json"]
            argv += ["--grant-type", "refresh_token"]
            client = json.loads(common.tokend(*argv, env=env))
            common.tokend("users", "create", "bench", "--password-stdin", env=env, stdin="pw\n")
            stored = 0
            if args.cli_sample:
                timed = []
                for count in (1, args.cli_sample):  # the difference: without process start
                    t0 = time.monotonic()
                    common.issue_tokens(env, client["client_id"], "bench", "offline", count)
                    timed.append(time.monotonic() - t0)
                    stored += count
                rate = (args.cli_sample - 1) / max(timed[1] - timed[0], 1e-9)
                notes.append(
                    f"`tokend tokens issue --count {args.cli_sample}`: {timed[1]:.1f} s, of which "
                    f"{timed[0]:.1f} s process start and setup ({rate:,.0f} families/s): 10^6 "
                    f"would take ~{1e6 / rate / 60:.0f} min."
                )
                print(f"# {notes[-1]}", file=sys.stderr, flush=True)
            from tokend.config import Settings
            from tokend.runtime import build_runtime

            rt = build_runtime(
                Settings(database_url=db.url, secret_key=env["TOKEND_SECRET_KEY"]), prepare=True
            )
            try:
                for size in sizes:
                    if size > stored:
                        took = seed_families(rt, client["client_id"], size - stored)
                        rate = (size - stored) / max(took, 1e-9)
                        notes.append(
                            f"in-process seeding {stored:,} → {size:,} families: {took:.1f} s "
                            f"({rate:,.0f} families/s)."
                        )
                        print(f"# {notes[-1]}", file=sys.stderr, flush=True)
                        stored = size
                    results += measure_size(args, env, client, db, stored, conn_list, tmp)
                    stored += sum(conn_list) * 2  # the measured and warm-up families
            finally:
                rt.close()
    if args.out:
        common.append(Path(args.out), markdown(results, notes, args, command))
    bad = [r for r in results if r["non200"] or r["missing"] or r["errors"]]
    for r in bad:
        print(f"FAIL families={r['families']} c={r['conns']}: {r}", file=sys.stderr)
    return 1 if bad else 0


def measure_size(
    args: argparse.Namespace,
    env: dict[str, str],
    client: dict[str, str],
    db: common.Database,
    families: int,
    conn_list: list[int],
    tmp: Path,
) -> list[dict[str, Any]]:
    out = []
    server = common.start_tokend(env, args.workers, tmp / "tokend.log")
    try:
        for conns in conn_list:
            for warmup in (True, False):
                issued = common.issue_tokens(env, client["client_id"], "bench", "offline", conns)
                f = tmp / f"tokens-{conns}.txt"
                f.write_text("".join(t["refresh_token"] + "\n" for t in issued))
                wenv = {**env, "TOKENS_FILE": str(f), "BASIC": common.basic(client)}
                duration = 1 if warmup else args.duration
                r = common.measure(
                    server, BENCH / "refresh.lua", conns, duration, wenv,
                    timeout=args.wrk_timeout, path="",
                )  # fmt: skip
            r = {
                "families": families,
                "db_mb": round(db.size_bytes() / 1e6, 1),
                "conns": conns,
                **r,
            }
            out.append(r)
            print(json.dumps(r), flush=True)
    finally:
        server.stop()
    return out


def markdown(
    results: list[dict[str, Any]], notes: list[str], args: argparse.Namespace, command: str
) -> str:
    rows = [
        f"| {r['families']:,} | {r['db_mb']:,.0f} | {r['conns']} | {r['req_s']:,.0f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_ms_per_req']:.2f} | "
        f"{r['non200']} | {r['missing']} | {r['errors']} |"
        for r in results
    ]
    return "\n".join(
        [
            f"\n### {common.now_utc()} — refresh latency vs stored families: {args.db}, "
            f"{args.workers} workers, {args.duration} s per point",
            common.machine_line(),
            "",
            f"`{command}`",
            "",
            *(f"- {n}" for n in notes),
            "",
            "| families | DB MB | conns | req/s | p50 ms | p99 ms | server CPU ms/req | non-200 "
            "| 200 w/o refresh_token | socket errors |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
