"""Client changes made with the admin CLI reach every worker of a running server (issue 6's
client cache), on SQLite and PostgreSQL: after `tokend clients rotate-secret` the old secret
stops working and the new one works, and after `tokend clients delete` the client is
unknown, on each worker within the refresh interval (``TOKEND_KEY_REFRESH_INTERVAL``),
although each worker had the client cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET_KEY
from tests.integration.test_key_rotation import connect_to_every_worker, reconnect
from tests.support.server import running_server
from tokend.core.models import Client
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret

REFRESH_INTERVAL = 0.5
BOUND = 3.0  # seconds from the CLI's commit to the change on every worker
WORKERS = 2
CC = {"grant_type": "client_credentials"}

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc"),
]


def cli(db_url: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "TOKEND_DATABASE_URL": db_url, "TOKEND_SECRET_KEY": SECRET_KEY}
    out = subprocess.run(
        [sys.executable, "-m", "tokend.cli", *args],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout) if out.stdout.strip() else {}


def _client(rt) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    secret = new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name="cached",
        public=False,
        secret_hash=hash_secret(secret),
        grant_types=frozenset({"client_credentials"}),
        redirect_uris=(),
        scopes=("offline",),
    )
    rt.store.create_client(client, now=rt.clock.now())
    return client.client_id, secret


def _until_every_worker(workers, check) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Seconds until ``check(worker)`` held on each worker (polled every 20 ms)."""
    started = time.monotonic()
    seen: dict[int, float] = {}
    while len(seen) < len(workers) and time.monotonic() - started < 10 * BOUND:
        for w in workers:
            if w.pid not in seen and check(w):
                seen[w.pid] = time.monotonic() - started
        time.sleep(0.02)
    assert len(seen) == len(workers), f"only {len(seen)} of {len(workers)} workers changed"
    return seen


def test_rotated_secret_and_deleted_client_reach_every_worker(live_rt, db_url, server_env):
    client_id, secret = _client(live_rt)
    env = {**server_env, "TOKEND_KEY_REFRESH_INTERVAL": str(REFRESH_INTERVAL)}
    with running_server(db_url, workers=WORKERS, env=env) as base:
        workers = connect_to_every_worker(base, WORKERS)
        for w in workers:  # each worker now has the client cached
            assert w.request("POST", "/auth/v2/token", CC, (client_id, secret))[0] == 200

        rotated = cli(db_url, "clients", "rotate-secret", client_id)
        new_secret = rotated["client_secret"]
        assert new_secret != secret
        workers = reconnect(base, workers)
        took = _until_every_worker(
            workers,
            lambda w: w.request("POST", "/auth/v2/token", CC, (client_id, secret))[0] == 401,
        )
        assert max(took.values()) < BOUND, took
        for w in workers:
            status, body = w.request("POST", "/auth/v2/token", CC, (client_id, new_secret))
            assert status == 200, body
            status, body = w.request("POST", "/auth/v2/token", CC, (client_id, secret))
            assert (status, body["error"]) == (401, "invalid_client")

        cli(db_url, "clients", "delete", client_id)
        workers = reconnect(base, workers)
        took = _until_every_worker(
            workers,
            lambda w: w.request("POST", "/auth/v2/token", CC, (client_id, new_secret))[0] == 401,
        )
        assert max(took.values()) < BOUND, took
