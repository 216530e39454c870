"""node-oidc-provider as the reference peer, measured by bench/run.py (--peer) in the same run
as tokend (issue 14).

bench/peer/server.mjs runs `oidc-provider` (pinned by bench/peer/package-lock.json, installed
with `npm ci` into bench/peer/node_modules) in one Node process on its Redis adapter, with
RS256 JWT access tokens, refresh-token rotation on every use and one confidential client
(client_secret_basic). Redis is Debian's `redis-server`, started here on a free port in the
run's temporary directory with AOF on and `appendfsync everysec`: an acknowledged refresh can
be lost if the machine fails within about a second, where tokend's commits are durable
(SQLite WAL with synchronous=FULL, PostgreSQL synchronous_commit on).

The refresh tokens are minted by the provider itself (`server.mjs mint`: its Grant and
RefreshToken models, saved to the same Redis), then driven by the same bench/refresh.lua as
tokend's refresh series, with the same checks (every 200 carries a refresh_token, no other
status, no socket error). CPU per request counts the Node process and redis-server.

When something it needs is missing (Node >= 20 and npm, network for `npm ci` the first time,
redis-server: installed with apt-get when missing and running as root, as ./dev does), the
peer is skipped with a message saying why: never measured on anything else.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common

PEER = common.BENCH / "peer"
STAMP = PEER / "node_modules" / ".tokend-stamp"
CLIENT_ID = "bench-peer"


class Unavailable(Exception):
    """The peer cannot run on this machine; the message says why."""


def _run(argv: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise Unavailable(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return proc  # type: ignore[no-any-return]


def ensure_installed() -> None:
    """node >= 20, `npm ci` of the lockfile (once per lockfile), redis-server."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        raise Unavailable(
            "node and npm are missing (Node 20 or later; Debian: apt-get install nodejs npm)"
        )
    version = _run([node, "--version"], "node --version").stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        raise Unavailable(f"oidc-provider 9 needs Node 20 or later; this is {version}")
    lock = (PEER / "package-lock.json").read_bytes()
    want = hashlib.sha256(lock).hexdigest()
    if not (STAMP.exists() and STAMP.read_text().strip() == want):
        print("# peer: npm ci (bench/peer/package-lock.json)", file=sys.stderr, flush=True)
        _run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", "--fetch-retries=1"],
            "npm ci",
            cwd=PEER,
        )
        STAMP.write_text(want + "\n")
    if shutil.which("redis-server") is None:
        if os.geteuid() != 0:
            raise Unavailable(
                "redis-server is missing (apt-get install redis-server, or run as root)"
            )
        print("# peer: apt-get install redis-server", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
        _run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
            "apt-get install redis-server",
            env=env,
        )


@dataclass
class Peer:
    server: common.Server
    redis: subprocess.Popen[bytes]
    env: dict[str, str]
    basic: str

    @property
    def extra_pids(self) -> tuple[int, ...]:
        return (self.redis.pid,)

    def mint(self, count: int) -> list[str]:
        """``count`` refresh tokens, each of its own grant, issued by the provider."""
        out = _run(["node", "server.mjs", "mint", str(count)], "peer mint", cwd=PEER, env=self.env)
        tokens = out.stdout.split()
        if len(tokens) != count:
            raise SystemExit(f"peer mint: {len(tokens)} tokens for {count} asked")
        return tokens

    def race(self, trials: int = 20, n: int = 8) -> dict[int, int]:
        """``trials`` times, one fresh refresh token presented ``n`` times at once: how many
        trials ended with how many distinct successors (tokend: always exactly one)."""
        import base64
        from collections import Counter

        from tests.support.server import storm

        auth = tuple(base64.b64decode(self.basic).decode().split(":", 1))
        out: Counter[int] = Counter()
        for token in self.mint(trials):
            data = {"grant_type": "refresh_token", "refresh_token": token}
            rs = storm([self.server.base], n, "/auth/v2/token", auth=auth, data=data)
            out[len({r.json()["refresh_token"] for r in rs if r.status_code == 200})] += 1
        return dict(sorted(out.items()))

    def stop(self) -> None:
        self.server.stop()
        if self.redis.poll() is None:
            self.redis.terminate()  # SIGTERM: redis-server flushes the AOF and exits
            try:
                self.redis.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait()

    def versions(self) -> str:
        pkg = PEER / "node_modules" / "oidc-provider" / "package.json"
        import json

        provider = json.loads(pkg.read_text())["version"]
        node = _run(["node", "--version"], "node --version").stdout.strip()
        redis = _run(["redis-server", "--version"], "redis-server --version").stdout.split()
        rv = next((w.split("=")[1] for w in redis if w.startswith("v=")), "?")
        return f"oidc-provider {provider}, Node {node}, Redis {rv}"


def start(tmp: Path) -> Peer:
    """Install what is missing, start redis-server and the provider; raise Unavailable."""
    ensure_installed()
    rdir = tmp / "peer-redis"
    rdir.mkdir()
    rport = common.free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(rdir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--logfile", str(rdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_redis(rport, redis, rdir / "redis.log")
        port = common.free_port()
        secret = secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "NODE_ENV": "production",
            "PEER_PORT": str(port),
            "REDIS_URL": f"redis://127.0.0.1:{rport}",
            "PEER_JWKS": str(tmp / "peer-jwks.json"),
            "PEER_CLIENT_SECRET": secret,
        }
        _run(["node", "server.mjs", "keygen", env["PEER_JWKS"]], "peer keygen", cwd=PEER)
        log = tmp / "peer.log"
        with log.open("ab") as f:
            proc = subprocess.Popen(
                ["node", "server.mjs", "serve"], cwd=PEER, env=env, stdout=f,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = common.Server(proc, f"http://127.0.0.1:{port}", 1, log)
        try:
            common.wait_healthy(f"{server.base}/auth/v2/token", proc, log)
        except BaseException:
            server.stop()
            raise
    except BaseException:
        redis.terminate()
        redis.wait()
        raise
    basic = common.basic({"client_id": CLIENT_ID, "client_secret": secret})
    return Peer(server, redis, env, basic)


def _wait_redis(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    for _ in range(100):
        if proc.poll() is not None:
            detail = log.read_text()[-1000:] if log.exists() else ""
            raise Unavailable(f"redis-server exited with {proc.returncode}: {detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise Unavailable("redis-server did not answer PING")
