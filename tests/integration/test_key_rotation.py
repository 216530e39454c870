"""Key rotation end to end (issue 5): the real ``tokend keys rotate`` run against the
database of a real two-worker ``tokend serve``, on SQLite and PostgreSQL.

- Every worker process signs with the new key within the key refresh interval, without a
  restart. To know that *every* worker did, each worker is talked to over its own keep-alive
  connection, and which process accepted a connection is read from ``/proc`` (the worker
  holding the server side of the socket); the time from the rotation's commit to each
  worker's first token with the new ``kid`` is measured and bounded.
- Tokens signed before the rotation keep verifying, through every worker's ``/auth/jwks``
  and introspection, until they expire, and stop at their ``exp`` (not at the rotation).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import pytest

from tests.conftest import SECRET_KEY
from tests.support.family import first_family
from tests.support.server import running_server

TTL = 8  # seconds: access and client_credentials tokens of this test's server
REFRESH_INTERVAL = 0.5  # TOKEND_KEY_REFRESH_INTERVAL
PROPAGATION_BOUND = 3.0  # seconds from the rotation's commit to every worker's new kid
WORKERS = 2

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc"),
]


def _socket_owner(server_port: int, client_port: int) -> int | None:
    """The pid of the process holding the server side of 127.0.0.1:client_port ->
    127.0.0.1:server_port (the worker that accepted the connection)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


class Worker:
    """One keep-alive HTTP/1.1 connection, pinned to the worker process that accepted it."""

    def __init__(self, conn: http.client.HTTPConnection, pid: int) -> None:
        self.conn = conn
        self.pid = pid

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, auth: Any = None
    ) -> tuple[int, Any]:
        headers = {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if auth is not None:
            raw = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        assert response.getheader("Connection", "").lower() != "close", "connection not kept"
        return response.status, (json.loads(data) if data else None)

    def token(self, auth: Any, form: dict[str, str]) -> dict[str, Any]:
        status, body = self.request("POST", "/auth/v2/token", form, auth)
        assert status == 200, body
        return body

    def introspect(self, auth: Any, token: str) -> dict[str, Any]:
        status, body = self.request("POST", "/auth/v2/introspect", {"token": token}, auth)
        assert status == 200, body
        return body

    def jwks(self) -> jwt.PyJWKSet:
        status, body = self.request("GET", "/auth/jwks")
        assert status == 200
        return jwt.PyJWKSet.from_dict(body)


def connect_to_every_worker(base: str, n: int) -> list[Worker]:
    """Open connections until ``n`` distinct worker processes hold one each."""
    parts = urlsplit(base)
    assert parts.hostname and parts.port
    pinned: dict[int, Worker] = {}
    spare = []
    for _ in range(200):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", "/healthz")
        conn.getresponse().read()  # accepted and served: the worker now holds the socket
        pid = _socket_owner(parts.port, conn.sock.getsockname()[1])
        assert pid is not None, "the server side of the connection was not found in /proc"
        if pid in pinned:
            spare.append(conn)  # kept open a while, so the next accept may go elsewhere
        else:
            pinned[pid] = Worker(conn, pid)
        if len(pinned) == n:
            break
    for conn in spare:
        conn.close()
    assert len(pinned) == n, f"reached {len(pinned)} of {n} workers in 200 connections"
    return list(pinned.values())


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def verify(token: str, keyset: jwt.PyJWKSet, issuer: str) -> dict[str, Any]:
    """RFC 9068 §4 by a resource server: the JWKS key of the token's kid, exp checked."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    return jwt.decode(
        token, key=keyset[header["kid"]], algorithms=[header["alg"]], audience=issuer,
        issuer=issuer,
    )  # fmt: skip


def reconnect(base: str, workers: list[Worker]) -> list[Worker]:
    """New connections, one to each of the same worker processes: a CLI command run in
    between can outlast the server's keep-alive timeout on a loaded machine (what the
    tests check is per process, not per connection)."""
    for w in workers:
        w.conn.close()
    again = connect_to_every_worker(base, len(workers))
    assert {w.pid for w in again} == {w.pid for w in workers}, "a worker was replaced"
    return again


def rotate(db_url: str) -> dict[str, Any]:
    """The real CLI, as an operator runs it, against the server's database."""
    env = {**os.environ, "TOKEND_DATABASE_URL": db_url, "TOKEND_SECRET_KEY": SECRET_KEY}
    out = subprocess.run(
        [sys.executable, "-m", "tokend.cli", "keys", "rotate"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_rotation_reaches_every_worker_and_old_tokens_live_until_they_expire(
    live_rt, db_url, server_env
) -> None:
    family = first_family(
        live_rt,
        name="rotation",
        scopes="openid offline",
        grant_types=("client_credentials", "refresh_token"),
    )
    auth, refresh_token = family.auth, family.refresh_token
    old_kid = live_rt.keys.current_kid()
    env = {
        **server_env,
        "TOKEND_KEY_REFRESH_INTERVAL": str(REFRESH_INTERVAL),
        "TOKEND_ACCESS_TOKEN_TTL": str(TTL),
        "TOKEND_CLIENT_CREDENTIALS_TTL": str(TTL),
    }
    cc = {"grant_type": "client_credentials"}
    with running_server(db_url, workers=WORKERS, env=env) as base:
        workers = connect_to_every_worker(base, WORKERS)

        # Before: every worker signs with the old key. One old token of each kind per
        # worker: client_credentials, and a user's (a refresh, so it carries a sid).
        old_tokens = [w.token(auth, cc)["access_token"] for w in workers]
        refreshed = workers[0].token(
            auth, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        old_tokens.append(refreshed["access_token"])
        refresh_token = refreshed["refresh_token"]
        assert {kid_of(t) for t in old_tokens} == {old_kid}
        old_exp = max(jwt.decode(t, options={"verify_signature": False})["exp"]
                      for t in old_tokens)  # fmt: skip

        rotated = rotate(db_url)
        new_kid = rotated["kid"]
        assert new_kid != old_kid
        workers = reconnect(base, workers)

        # Each worker's first token with the new kid, measured from the rotation's commit.
        first_new: dict[int, float] = {}
        deadline = time.monotonic() + 10 * PROPAGATION_BOUND
        while len(first_new) < len(workers) and time.monotonic() < deadline:
            for w in workers:
                if w.pid not in first_new:
                    kid = kid_of(w.token(auth, cc)["access_token"])
                    assert kid in (old_kid, new_kid)
                    if kid == new_kid:
                        first_new[w.pid] = time.time() - rotated["created_at"]
            time.sleep(0.02)
        propagation = {pid: round(t, 3) for pid, t in first_new.items()}
        print(f"\nkey rotation propagation per worker (s): {propagation}")
        assert len(first_new) == len(workers), f"not every worker switched: {propagation}"
        assert max(first_new.values()) < PROPAGATION_BOUND, propagation

        # From then on, every worker signs only with the new key (access and ID tokens).
        for w in workers:
            for _ in range(5):
                assert kid_of(w.token(auth, cc)["access_token"]) == new_kid
        refreshed = workers[-1].token(
            auth, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        assert kid_of(refreshed["access_token"]) == new_kid
        assert kid_of(refreshed["id_token"]) == new_kid  # RS256: the rotated algorithm
        new_token = refreshed["access_token"]

        # The old tokens still verify, through every worker's JWKS and introspection.
        for w in workers:
            keyset = w.jwks()
            assert {old_kid, new_kid} <= {k.key_id for k in keyset.keys}
            for token in [*old_tokens, new_token]:
                assert verify(token, keyset, base)["client_id"] == auth[0]
                got = w.introspect(auth, token)
                assert got["active"] is True and got["client_id"] == auth[0], got

        # Until they expire; keep the pinned connections alive meanwhile.
        while time.time() < old_exp + 0.2:
            for w in workers:
                assert w.request("GET", "/healthz")[0] == 200
            time.sleep(0.5)
        for w in workers:
            keyset = w.jwks()
            assert old_kid in {k.key_id for k in keyset.keys}  # still published...
            for token in old_tokens:
                with pytest.raises(jwt.ExpiredSignatureError):  # ...but the tokens expired
                    verify(token, keyset, base)
                assert w.introspect(auth, token) == {"active": False}
        for w in workers:
            w.conn.close()
