"""The events webhook in a real `tokend serve --workers 2` (TOKEND_EVENTS_WEBHOOK): a refresh
token reuse, made over HTTP, reaches a receiver on loopback once, signed, with the fields
`tokend events --json` prints, and the delivery is counted in /metrics (summed over the
workers). The mechanics (retries, giving up, leases, settings) are tests/web/test_webhook.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from tests.support.family import first_family
from tests.support.server import running_server
from tests.web.test_webhook import SECRET, Receiver, receiver_snippet
from tokend.core.events import event_object
from tokend.runtime import Runtime
from tokend.store.schema import cursors
from tokend.web.webhook import NAME

TOKEN = "/auth/v2/token"


def wait_for(what: Callable[[], object], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_a_reuse_reaches_the_receiver_once_from_a_two_worker_server(
    live_rt: Runtime, db_url: str, server_env: dict[str, str]
) -> None:
    family = first_family(live_rt, name="webhook", scopes="offline")
    receiver = Receiver()
    env = {
        **server_env,
        "TOKEND_REFRESH_REUSE_GRACE": "0",  # a second use is reuse at once
        "TOKEND_EVENTS_WEBHOOK": receiver.url,
        "TOKEND_EVENTS_WEBHOOK_SECRET": SECRET,
    }

    def cursor_made() -> bool:
        with live_rt.store.engine.connect() as conn:
            return conn.execute(select(cursors).where(cursors.c.name == NAME)).first() is not None

    try:
        with running_server(db_url, workers=2, env=env) as base:
            wait_for(cursor_made)  # the webhook is on: what happens from now on is sent
            data = {"grant_type": "refresh_token", "refresh_token": family.refresh_token}
            first = httpx.post(base + TOKEN, auth=family.auth, data=data)
            assert first.status_code == 200, first.text
            reuse = httpx.post(base + TOKEN, auth=family.auth, data=data)
            assert reuse.json()["error"] == "invalid_grant", reuse.text
            wait_for(lambda: any(b["type"] == "refresh_token_reuse" for b in receiver.bodies()))

            def delivered() -> float:
                text = httpx.get(base + "/metrics").text
                line = 'tokend_events_webhook_deliveries_total{outcome="delivered"} '
                return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))

            wait_for(lambda: delivered() >= len(receiver.requests), 5)
            assert delivered() == len(receiver.requests)
    finally:
        receiver.close()

    ids = receiver.event_ids()
    assert len(ids) == len(set(ids))  # once each, whichever worker held the lease
    stored = {r["id"]: r for r in live_rt.store.events_after(0, limit=100)}
    (reuse_id,) = [i for i in ids if stored[i]["kind"] == "refresh_token_reuse"]
    _, headers, body = receiver.requests[ids.index(reuse_id)]
    assert receiver_snippet()(body, headers["x-tokend-signature"], SECRET)
    event = json.loads(body)
    assert event == event_object(stored[reuse_id])
    assert event["client_id"] == family.client.client_id and event["subject"] == family.user.id
    assert family.refresh_token not in body.decode()
