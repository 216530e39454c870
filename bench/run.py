"""One-command benchmark of tokend's token endpoints (issue 6).

    python bench/run.py [--db sqlite|postgres] [--duration 10] [--conns 1,8,32,128]
                        [--workers 2] [--workload refresh,client_credentials,introspect,code]
                        [--scope offline [--scope "openid offline"]] [--noop] [--probe]
                        [--peer] [--servers 1,2,3] [--all] [--smoke]
                        [--out FILE.md] [--plot FILE.png] [--json FILE]
                        [--alg RS256|PS256|ES256|EdDSA]

Starts `tokend serve --workers N` on a fresh database (SQLite file, or a throwaway PostgreSQL
server started as in the test suite) and drives each workload with wrk, one thread per
connection (-t N -c N), for each concurrency in --conns:

- refresh: one family per connection minted with `tokend tokens issue`; each connection
  chains its own rotated refresh token (bench/refresh.lua). One series per --scope.
- client_credentials: Basic auth + grant_type=client_credentials (bench/client_credentials.lua).
- introspect: POST /auth/v2/introspect with a confidential client's Basic auth, cycling
  through 64 access tokens minted with `tokend tokens issue` (bench/introspect.lua).
- code: the authorization code exchange with PKCE. Codes are single-use and live 60 s, so
  they are minted right before each point, in-process, by tokend's own authorization code
  (tokend.core.authorization.validate + CodeIssuer.issue, what the consent page calls; 500
  codes to a commit), with a fresh S256 verifier each; every request consumes a different one
  (bench/code.lua). The seed is sized from --code-rate (an upper bound on the exchange rate,
  raised automatically after each point); a connection that runs out stops and the point
  is flagged "exhausted" (a failure). Seeding + --duration must stay under 55 s.

With --noop, the same figures for a no-op endpoint of the same stack (bench/noop_app.py: the
stack's ceiling), with --probe for the minimal probe (bench/probe_app.py: uvicorn x2,
Starlette, stdlib sqlite3 UPDATE + INSERT, one RS256 JWT), driven by bench/refresh.lua.
With --peer, the same refresh workload against node-oidc-provider 9 (one Node process, its
Redis adapter on redis-server with AOF everysec, RS256 JWT access tokens, rotation on, a
client_secret_basic client; bench/peer.py), its CPU counting Node and Redis; skipped with a
message when Node, npm or redis-server is unavailable.

Every point reports req/s, p50, p99 (wrk), the CPU time per request (from /proc) of the
server (supervisor + workers) plus its database server (PostgreSQL's postmaster and
backends; the peer's redis-server; SQLite runs inside the workers), with the database's
share apart, every response other than 200, every 200 without the expected field
(refresh_token; access_token for client_credentials; "active":true for introspect) and
socket errors/timeouts. The process exits 1 if any of these counters is not zero.

With --servers 1,2,3, the scale-out matrix of bench/scaleout.py after the rest, in the same
run: N `tokend serve` processes over one (throwaway, durable) PostgreSQL for each N, the
refresh load spread over them at each --conns, then the same-token race across servers
(zero double successors asserted); its own Markdown section goes to --out.

--all runs the whole matrix: refresh (offline, "openid offline"), client_credentials,
introspect, code, noop, probe, peer. --smoke is --all with 1 s per point at 1 and 2 connections
(under a minute; for CI). --out appends Markdown (machine, versions, date, table, plot) to
a file, --plot writes a PNG of throughput and p99 against concurrency (matplotlib, the
`bench` extra), --json writes the raw results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, scaleout
from bench.common import BENCH, Server

WORKLOADS = ("refresh", "client_credentials", "introspect", "code")
REDIRECT_URI = "http://127.0.0.1:9/cb"
EXPECTED = {
    "refresh": "refresh_token",
    "client_credentials": "access_token",
    "introspect": '"active":true',
    "code": "refresh_token",
    "probe": "refresh_token",
    "noop": None,
    "peer": "refresh_token",
}


class Bench:
    """The tokend side: the database, clients, a user, the server, and per-point inputs."""

    def __init__(self, args: argparse.Namespace, db: common.Database, tmp: Path) -> None:
        self.args = args
        self.db = db
        self.tmp = tmp
        self.env = common.tokend_env(db.url, common.free_port())
        common.tokend("migrate", env=self.env)
        self.refresh_client = self._client("bench-refresh", "refresh_token")
        self.cc_client = self._client("bench-cc", "client_credentials", scope="api.read")
        self.code_client = self._client(
            "bench-code", "authorization_code", "refresh_token", redirect_uri=REDIRECT_URI
        )
        user = common.tokend(
            "users", "create", "bench", "--password-stdin", env=self.env, stdin="bench-pw\n"
        )
        self.user_id = json.loads(user)["id"]
        self._rt: Any = None
        self.code_rate = float(args.code_rate)

    def _client(
        self, name: str, *grants: str, scope: str = "openid offline", redirect_uri: str = ""
    ) -> dict[str, str]:
        argv = ["clients", "create", "--name", name, "--scope", scope, "--json"]
        for g in grants:
            argv += ["--grant-type", g]
        if redirect_uri:
            argv += ["--redirect-uri", redirect_uri]
        if self.args.alg:  # the clients' access-token and ID-token algorithm
            argv += ["--access-token-alg", self.args.alg, "--id-token-alg", self.args.alg]
        return json.loads(common.tokend(*argv, env=self.env))

    def inputs(self, workload: str, scope: str, conns: int) -> dict[str, str]:
        """The wrk environment for one point (minting what the point consumes)."""
        if workload == "refresh":
            issued = common.issue_tokens(
                self.env, self.refresh_client["client_id"], "bench", scope, conns
            )
            f = self.tmp / f"refresh-{conns}.txt"
            f.write_text("".join(t["refresh_token"] + "\n" for t in issued))
            return {"TOKENS_FILE": str(f), "BASIC": common.basic(self.refresh_client)}
        if workload == "client_credentials":
            return {"BASIC": common.basic(self.cc_client)}
        if workload == "introspect":
            f = self.tmp / "access-tokens.txt"
            if not f.exists():
                issued = common.issue_tokens(
                    self.env, self.refresh_client["client_id"], "bench", "offline", 64
                )
                f.write_text("".join(t["access_token"] + "\n" for t in issued))
            return {"TOKENS_FILE": str(f), "BASIC": common.basic(self.refresh_client)}
        if workload == "code":
            return self._codes(conns)
        raise ValueError(workload)

    def _codes(self, conns: int) -> dict[str, str]:
        n = max(conns * 20, math.ceil(1.5 * self.code_rate * self.args.duration))
        t0 = time.monotonic()
        lines = mint_codes(self.runtime(), self.code_client["client_id"], self.user_id, n)
        took = time.monotonic() - t0
        print(
            f"# minted {n} authorization codes in {took:.1f} s ({n / took:,.0f}/s)",
            file=sys.stderr,
            flush=True,
        )
        if took + self.args.duration > 55:
            raise SystemExit(
                f"minting {n} codes took {took:.0f} s: with a {self.args.duration} s run the "
                "first codes would expire (60 s) before they are used; lower --duration or "
                "--code-rate"
            )
        f = self.tmp / f"codes-{conns}.txt"
        f.write_text("".join(f"{c} {v}\n" for c, v in lines))
        return {
            "CODES_FILE": str(f),
            "REDIRECT_URI": quote(REDIRECT_URI, safe=""),
            "BASIC": common.basic(self.code_client),
        }

    def runtime(self) -> Any:
        if self._rt is None:
            from tokend.config import Settings
            from tokend.runtime import build_runtime

            settings = Settings(database_url=self.db.url, secret_key=self.env["TOKEND_SECRET_KEY"])
            self._rt = build_runtime(settings)
        return self._rt

    def close(self) -> None:
        if self._rt is not None:
            self._rt.close()


CODE_BATCH = 500


class _JoinedTransaction:
    """A store for ``CodeIssuer`` whose ``transaction()`` joins one already open: CodeIssuer's
    own ``issue`` runs unchanged, CODE_BATCH codes to a commit (PostgreSQL with fsync on
    commits ~150 times a second on a slow VM; the codes must all be minted within seconds)."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        yield self._tx


def mint_codes(rt: Any, client_id: str, user_id: str, n: int) -> list[tuple[str, str]]:
    """``n`` authorization codes for "openid offline" with PKCE (S256), each stored as at the
    end of the consent page: the authorization request validated by
    ``tokend.core.authorization.validate``, the code issued by ``CodeIssuer.issue``."""
    from tokend.core import authorization as authz
    from tokend.core import pkce

    client = rt.store.get_client(client_id)
    subject = rt.subjects.subject(client, user_id)
    out = []
    while len(out) < n:
        with rt.store.transaction() as tx:
            issuer = authz.CodeIssuer(_JoinedTransaction(tx))
            for _ in range(min(CODE_BATCH, n - len(out))):
                verifier = secrets.token_urlsafe(48)
                pairs = [
                    ("response_type", "code"),
                    ("client_id", client_id),
                    ("redirect_uri", REDIRECT_URI),
                    ("scope", "openid offline"),
                    ("state", secrets.token_urlsafe(8)),
                    ("code_challenge", pkce.s256(verifier)),
                    ("code_challenge_method", "S256"),
                ]
                request = authz.validate(pairs, lambda _: client)
                now = rt.clock.now()
                code = issuer.issue(
                    request, user_id=user_id, subject=subject, auth_time=now, now=now
                )
                out.append((code, verifier))
    return out


def point(
    server: Server,
    lua: str,
    conns: int,
    args: argparse.Namespace,
    env: dict[str, str],
    db_pids: tuple[int, ...] = (),
    **meta: Any,
) -> dict[str, Any]:
    r = common.measure(
        server, BENCH / lua, conns, args.duration, env, timeout=args.wrk_timeout, path="",
        extra_pids=db_pids,
    )  # fmt: skip
    r = {**meta, "conns": conns, "workers": args.workers, **r}
    if meta["kind"] == "noop":
        r["missing"] = None  # the no-op answers no refresh token by design
    print(json.dumps(r), flush=True)
    return r


def warm_up(
    server: Server, args: argparse.Namespace, env: dict[str, str], mint: Any, extra_pids: Any = ()
) -> None:
    """--warmup seconds of the refresh chain at the largest concurrency, not reported (the
    same for tokend, the probe and the peer: Node's JIT takes ~10 s to settle, pools fill).
    ``mint(n)`` writes n fresh refresh tokens to a file and returns its path."""
    if args.warmup <= 0:
        return
    conns = max(args.conn_list)
    wenv = {**env, "TOKENS_FILE": str(mint(conns))}
    r = common.measure(
        server, BENCH / "refresh.lua", conns, args.warmup, wenv, timeout=args.wrk_timeout,
        path="", extra_pids=extra_pids,
    )  # fmt: skip
    print(f"# warm-up {server.base}: {json.dumps(r)}", file=sys.stderr, flush=True)


def run_tokend(args: argparse.Namespace, db: common.Database, tmp: Path) -> list[dict[str, Any]]:
    results = []
    bench = Bench(args, db, tmp)
    server = common.start_tokend(bench.env, args.workers, tmp / "tokend.log")
    try:
        if "refresh" in args.workloads:
            warm_up(
                server, args, {**bench.env, "BASIC": common.basic(bench.refresh_client)},
                lambda n: bench.inputs("refresh", args.scopes[0], n)["TOKENS_FILE"],
            )  # fmt: skip
        for workload in args.workloads:
            scopes = args.scopes if workload == "refresh" else ["-"]
            for scope in scopes:
                label = f"refresh ({scope})" if workload == "refresh" else workload
                for conns in args.conn_list:
                    wenv = {**bench.env, **bench.inputs(workload, scope, conns)}
                    meta = {"series": label, "kind": workload, "db": db.kind, "scope": scope}
                    r = point(
                        server, f"{workload}.lua", conns, args, wenv, db.server_pids(), **meta
                    )
                    results.append(r)
                    if workload == "code":
                        bench.code_rate = max(bench.code_rate, r["req_s"] * 1.2)
    finally:
        server.stop()
        bench.close()
    return results


def run_noop(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    results = []
    server = common.start_uvicorn(
        "bench.noop_app:app", args.workers, dict(os.environ), tmp / "noop.log", "/auth/v2/token"
    )
    try:
        for conns in args.conn_list:
            f = tmp / f"noop-{conns}.txt"
            f.write_text("x\n" * conns)
            wenv = {**os.environ, "TOKENS_FILE": str(f), "BASIC": "eDp5"}
            meta = {"series": "noop", "kind": "noop", "db": "-", "scope": "-"}
            results.append(point(server, "refresh.lua", conns, args, wenv, **meta))
    finally:
        server.stop()
    return results


def run_probe(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from bench import probe_app

    db, key = tmp / "probe.db", tmp / "probe-key.pem"
    probe_app.init(db, key)
    env = {**os.environ, "PROBE_DB": str(db), "PROBE_KEY": str(key)}
    results = []
    server = common.start_uvicorn(
        "bench.probe_app:app", args.workers, env, tmp / "probe.log", "/auth/v2/token"
    )
    try:

        def mint(n: int) -> Path:
            f = tmp / "probe-warmup.txt"
            f.write_text("".join(t + "\n" for t in probe_app.seed(db, n)))
            return f

        warm_up(server, args, {**env, "BASIC": "eDp5"}, mint)
        for conns in args.conn_list:
            f = tmp / f"probe-{conns}.txt"
            f.write_text("".join(t + "\n" for t in probe_app.seed(db, conns)))
            wenv = {**env, "TOKENS_FILE": str(f), "BASIC": "eDp5"}
            meta = {"series": "probe", "kind": "probe", "db": "sqlite", "scope": "-"}
            results.append(point(server, "refresh.lua", conns, args, wenv, **meta))
    finally:
        server.stop()
    return results


def run_peer(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], str]:
    """node-oidc-provider on Redis, driven by bench/refresh.lua; ([], why) when it cannot
    run here."""
    from bench import peer

    try:
        p = peer.start(tmp)
    except peer.Unavailable as e:
        print(f"# SKIP node-oidc-provider: {e}", file=sys.stderr, flush=True)
        return [], f"node-oidc-provider skipped: {e}"
    results = []
    try:
        note = (
            f"node-oidc-provider: {p.versions()}; one Node process, Redis AOF with "
            "appendfsync everysec (a crash can lose the last second of rotations; tokend's "
            "commits are durable); its CPU/req counts Node + redis-server."
        )

        def mint(n: int) -> Path:
            f = tmp / "peer-warmup.txt"
            f.write_text("".join(t + "\n" for t in p.mint(n)))
            return f

        warm_up(p.server, args, {**p.env, "BASIC": p.basic}, mint, p.extra_pids)
        for conns in args.conn_list:
            f = tmp / f"peer-{conns}.txt"
            f.write_text("".join(t + "\n" for t in p.mint(conns)))
            wenv = {**p.env, "TOKENS_FILE": str(f), "BASIC": p.basic}
            meta = {"series": "node-oidc-provider", "kind": "peer", "db": "redis", "scope": "-"}
            r = common.measure(
                p.server, BENCH / "refresh.lua", conns, args.duration, wenv,
                timeout=args.wrk_timeout, path="", extra_pids=p.extra_pids,
            )  # fmt: skip
            r = {**meta, "conns": conns, "workers": 1, **r}
            print(json.dumps(r), flush=True)
            results.append(r)
        trials = 5 if args.smoke else 20
        dist = p.race(trials, 8)
        note += (
            f" Same token presented 8 times at once, {trials} trials: distinct successors per "
            f"trial {dist} (its adapter API has no compare-and-set for consume; tokend: "
            "exactly 1, bench/scaleout.py)."
        )
        print(f"# peer race: {dist}", file=sys.stderr, flush=True)
    finally:
        p.stop()
    return results, note


def failures(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        bad = {k: r[k] for k in ("non200", "missing", "errors", "exhausted") if r.get(k)}
        if r["requests"] == 0:
            bad["requests"] = 0
        if bad:
            out.append(f"{r['series']} c={r['conns']}: {bad}")
    return out


# -- reporting ---------------------------------------------------------------------------------


def plot(path: Path, results: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    series: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        series.setdefault(r["series"], []).append(r)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, rows in series.items():
        rows = sorted(rows, key=lambda r: r["conns"])
        xs = [r["conns"] for r in rows]
        ax1.plot(xs, [r["req_s"] for r in rows], marker="o", label=name)
        ax2.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=name)
    conns = sorted({r["conns"] for r in results})
    for ax, ylabel in ((ax1, "requests/s"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    for ax in (ax1, ax2):  # the no-op is 10x the rest: log scales keep every series readable
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.set_title("throughput")
    ax2.set_title("p99 latency")
    ax1.legend(fontsize="small", loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(
    results: list[dict[str, Any]], args: argparse.Namespace, out: Path, notes: list[str]
) -> str:
    def n(v: Any) -> str:
        return "n/a" if v is None else str(v)

    def dbcpu(r: dict[str, Any]) -> str:  # SQLite runs inside the server: "-"
        v = r.get("db_cpu_ms_per_req")
        return "-" if v is None else f"{v:.2f}"

    rows = [
        f"| {r['series']} | {r['db']} | {r['conns']} | {r['req_s']:,.0f} | {r['p50_ms']:.1f} | "
        f"{r['p99_ms']:.1f} | {r['cpu_ms_per_req']:.2f} | {dbcpu(r)} | "
        f"{r['non200']} | {n(r['missing'])} | "
        f"{r['errors']}{' (exhausted)' if r.get('exhausted') else ''} |"
        for r in results
    ]
    lines = [
        f"\n### {common.now_utc()} — {args.db}, {args.workers} workers, "
        f"{args.duration} s per point",
        common.machine_line(),
        "",
        f"`{args.command}`",
        "",
        *(f"- {n}" for n in notes),
        *([""] if notes else []),
        "| series | db | conns | req/s | p50 ms | p99 ms | CPU ms/req (server + db) "
        "| of which db | non-200 "
        "| 200 w/o expected field | socket errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    if args.plot:
        rel = os.path.relpath(Path(args.plot).resolve(), out.resolve().parent)
        lines += [f"![throughput and p99 against concurrency]({rel})", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--duration", type=int, default=10, help="seconds per point")
    ap.add_argument("--conns", default="1,8,32,128")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--workload", default="refresh", help=f"comma-separated, of: {', '.join(WORKLOADS)}"
    )
    ap.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help='refresh: the families\' scope; repeat for several series ("openid offline" adds '
        "an id_token). Default: offline",
    )
    ap.add_argument("--noop", action="store_true", help="also measure the no-op endpoint")
    ap.add_argument("--probe", action="store_true", help="also measure the minimal probe")
    ap.add_argument(
        "--peer",
        action="store_true",
        help="also measure node-oidc-provider (Node + Redis) on the refresh workload",
    )
    ap.add_argument(
        "--all", action="store_true", help="every workload, both scopes, noop, probe, peer"
    )
    ap.add_argument("--smoke", action="store_true", help="--all, 1 s per point, conns 1,2 (CI)")
    ap.add_argument(
        "--code-rate",
        type=float,
        default=1500,
        help="code: expected code exchanges/s, to size the seed (x1.5). Default 1500",
    )
    ap.add_argument(
        "--servers",
        help="also the scale-out matrix (bench/scaleout.py) for these numbers of tokend "
        "servers over one PostgreSQL, e.g. 1,2,3",
    )
    scaleout.add_arguments(ap, standalone=False)
    ap.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="seconds of unreported refresh load before tokend's, the probe's and the peer's "
        "first point (Node's JIT needs ~10 s). Default 10; --smoke: 1",
    )
    ap.add_argument("--wrk-timeout", type=int, default=10, help="wrk --timeout, seconds")
    ap.add_argument(
        "--alg",
        choices=["RS256", "PS256", "ES256", "EdDSA"],
        help="register the bench clients with this signing algorithm (access and ID tokens; "
        "default: the server's, RS256)",
    )
    ap.add_argument("--out", help="append a Markdown section to this file")
    ap.add_argument("--plot", help="write a PNG of throughput and p99 vs concurrency")
    ap.add_argument("--json", help="write the raw results to this file")
    args = ap.parse_args(argv)
    args.command = "python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.all = True
        args.duration = 1
        args.warmup = 1
        args.conns = "1,2"
    if args.all:
        args.workloads = list(WORKLOADS)
        args.scopes = args.scopes or ["offline", "openid offline"]
        args.noop = args.probe = args.peer = True
    else:
        args.workloads = [w.strip() for w in args.workload.split(",") if w.strip()]
        unknown = set(args.workloads) - set(WORKLOADS)
        if unknown:
            ap.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    args.scopes = args.scopes or ["offline"]
    args.conn_list = [int(c) for c in args.conns.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.require_wrk()
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tokend-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.workloads:
            with common.database(args.db, tmp) as db:
                results += run_tokend(args, db, tmp)
        if args.noop:
            results += run_noop(args, tmp)
        if args.probe:
            results += run_probe(args, tmp)
        if args.peer:
            peer_results, note = run_peer(args, tmp)
            results += peer_results
            notes.append(note)
        points: list[dict[str, Any]] = []
        races: list[dict[str, Any]] = []
        if args.servers:
            so_args = argparse.Namespace(**vars(args))
            so_args.server_list = [int(n) for n in args.servers.split(",")]
            so_args.warmup = args.scaleout_warmup
            points, races = scaleout.run_matrix(so_args, tmp)
    if args.json:
        raw: Any = results
        if args.servers:
            raw = {"points": results, "scaleout": points, "races": races}
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")
    title = (
        f"tokend, {args.db}, {args.workers} workers, {args.duration} s per point "
        f"({common.now_utc()})"
    )
    if args.plot and results:
        plot(Path(args.plot), results, title)
    if args.out:
        if results:
            common.append(Path(args.out), markdown(results, args, Path(args.out), notes))
        if args.servers:
            common.append(Path(args.out), scaleout.markdown(points, races, args.command))
    bad = failures(results) + scaleout.failures(points, races)
    so = f", {len(points)} scale-out points, {len(races)} races" if args.servers else ""
    print(f"# {len(results)} points{so} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    for line in bad:
        print(f"FAIL {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
