"""A worker killed with SIGKILL in the middle of a refresh load (DESIGN.md: rotation is
atomic; a lost answer is recovered through the grace window). On SQLite and PostgreSQL,
with the server's own engines (asyncpg on the event loop for PostgreSQL):

- the load goes on: the other worker serves, and the supervisor starts a new one;
- a request cut off by the kill is sent again with the same token: it gets the successor
  its rotation committed (a grace retry), or rotates now if it had not committed; never a
  reuse detection, never a second successor;
- in the database, every family is a single chain: each spent token has exactly one
  successor, exactly one token is live, no family is revoked, no reuse was recorded, and
  the live token is the one its client holds.

(Runs here cut off 2-3 requests in flight per kill, retried as above.)"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from tests.integration.test_key_rotation import connect_to_every_worker
from tests.support.family import register_client, register_user, start_family
from tests.support.server import running_server
from tokend.core.secrets import hash_secret
from tokend.store.schema import refresh_tokens, security_events, token_families

CHAINS = 6
WORKERS = 2


@pytest.mark.timeout(120)
def test_kill_9_of_a_worker_under_refresh_load_breaks_no_chain(live_rt, db_url, server_env):
    reg = register_client(live_rt, scopes="offline")
    user = register_user(live_rt)
    tokens = [start_family(live_rt, reg, user, "offline").refresh_token for _ in range(CHAINS)]
    assert all(tokens)
    stop = threading.Event()
    rotations = [0] * CHAINS
    cut_off = [0] * CHAINS
    refused: list[str] = []

    def chain(i: int, base: str) -> None:
        with httpx.Client(base_url=base, timeout=10, auth=reg.basic) as client:
            while not stop.is_set():
                data = {"grant_type": "refresh_token", "refresh_token": tokens[i]}
                try:
                    r = client.post("/auth/v2/token", data=data)
                except httpx.TransportError:
                    cut_off[i] += 1  # the worker died under it: the same token again
                    continue
                if r.status_code != 200:
                    refused.append(f"{r.status_code} {r.text}")
                    return
                tokens[i] = r.json()["refresh_token"]
                rotations[i] += 1

    with running_server(db_url, workers=WORKERS, env=server_env) as base:
        before = {w.pid for w in connect_to_every_worker(base, WORKERS)}
        threads = [threading.Thread(target=chain, args=(i, base)) for i in range(CHAINS)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            at_kill = sum(rotations)
            os.kill(min(before), signal.SIGKILL)
            time.sleep(3)
            after_kill = sum(rotations)
            # A new worker in place of the killed one (uvicorn's supervisor).
            deadline = time.monotonic() + 20
            while True:
                now = {w.pid for w in connect_to_every_worker(base, WORKERS)}
                if min(before) not in now or time.monotonic() > deadline:
                    break
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not refused, refused[:3]
    assert at_kill > 0 and after_kill > at_kill + CHAINS, (at_kill, after_kill)
    assert min(before) not in now and len(now) == WORKERS

    with live_rt.store.engine.connect() as conn:  # type: ignore[attr-defined]
        rt_, tf = refresh_tokens.c, token_families.c
        for token in tokens:
            fid = conn.execute(
                select(rt_.family_id).where(rt_.token_hash == hash_secret(token))
            ).scalar_one()
            rows = conn.execute(
                select(rt_.token_hash, rt_.spent_at, rt_.successor_hash).where(rt_.family_id == fid)
            ).all()
            live = [r for r in rows if r.spent_at is None]
            assert [r.token_hash for r in live] == [hash_secret(token)]  # the client's own
            successors = [r.successor_hash for r in rows if r.spent_at is not None]
            assert len(set(successors)) == len(successors) == len(rows) - 1
            assert set(successors) <= {r.token_hash for r in rows}  # one chain, no fork
            assert conn.execute(select(tf.revoked_at).where(tf.id == fid)).scalar_one() is None
        reuses = conn.execute(
            select(func.count()).where(security_events.c.kind == "refresh_token_reuse")
        ).scalar_one()
    assert reuses == 0
