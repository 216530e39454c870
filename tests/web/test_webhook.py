"""The events webhook (``TOKEND_EVENTS_WEBHOOK``, tokend.web.webhook), over real HTTP to a
receiver on loopback and a real database (SQLite and PostgreSQL): each event is POSTed once,
signed so that the shared secret verifies it and another does not (checked with the snippet
docs/operations.md gives receivers); failures are retried with backoff, then given up
without blocking the trail; two processes on one database deliver each event once; and the
settings refuse what cannot work. The full server's delivery is
tests/integration/test_webhook_server.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import insert

from tests.conftest import SECRET_KEY
from tokend.config import Settings
from tokend.core.clock import SystemClock
from tokend.core.events import EventKind, event_object
from tokend.core.models import SecurityEvent
from tokend.runtime import Runtime, build_runtime
from tokend.store.schema import security_events
from tokend.web.webhook import NAME, EventsWebhook

SECRET = "whsec-" + "k" * 40
ROOT = Path(__file__).resolve().parents[2]
FAST = {"backoff": 0.01, "max_backoff": 0.02}  # retries without seconds of sleep


# -- a receiver on loopback ------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread: records every request (path, headers, body)
    and answers with ``answer(n, headers, body)``'s status (``n``: requests so far)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.answer: Callable[[int, dict[str, str], bytes], int] = lambda n, h, b: 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append((self.path, headers, body))
                    status = receiver.answer(len(receiver.requests), headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/tokend?src=t"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, _, body in self.requests]

    def event_ids(self) -> list[int]:
        with self._lock:
            return [int(h["x-tokend-event-id"]) for _, h, _ in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def runtime(db_url: str) -> Runtime:
    return build_runtime(Settings(database_url=db_url, secret_key=SECRET_KEY), clock=SystemClock())


@pytest.fixture
def rt(db_url: str) -> Iterator[Runtime]:
    r = runtime(db_url)
    yield r
    r.close()


def record(rt: Runtime, n: int, **fields: Any) -> int:
    """Commit one event (an administrator's revocation), as the CLI would: its id."""
    event = SecurityEvent(
        kind=EventKind.TOKENS_REVOKED_BY_ADMIN,
        at=rt.clock.now(),
        client_id=f"client-{n}",
        detail={"n": n},
        **fields,
    )
    rt.store.revoke_families(
        now=rt.clock.now(), reason="admin", client_id=f"client-{n}", event=event
    )
    return rt.store.newest_event_id()


def hook(rt: Runtime, url: str, **options: Any) -> EventsWebhook:
    return EventsWebhook(rt, url, SECRET, **{**FAST, **options})


def deliveries(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("tokend_events_webhook_deliveries_total", labels) or 0.0


def receiver_snippet() -> Callable[..., bool]:
    """``verify_tokend_signature`` from docs/operations.md, as a receiver would paste it."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    code = re.search(r"```python\n((?:(?!```).)*?def verify_tokend_signature.*?)```", doc, re.S)
    assert code is not None, "docs/operations.md lost its signature check"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    verify: Callable[..., bool] = namespace["verify_tokend_signature"]
    return verify


# -- delivery ---------------------------------------------------------------------------------


def test_each_new_event_is_posted_once_signed_with_the_secret(
    rt: Runtime, receiver: Receiver
) -> None:
    before = record(rt, 0)  # history: the webhook starts after it

    async def go() -> list[int | None]:
        async with hook(rt, receiver.url) as h:
            first = await h.run_once()  # makes the cursor at the newest event
            ids = [record(rt, 1, user_id="u" * 32, address="203.0.113.7"), record(rt, 2)]
            return [first, await h.run_once(), await h.run_once(), *ids]

    first, done, again, one, two = asyncio.run(go())
    assert (first, done, again) == (0, 2, 0)
    assert receiver.event_ids() == [one, two] and before < one
    rows = {r["id"]: r for r in rt.store.events_after(before, limit=10)}
    verify = receiver_snippet()
    for path, headers, body in receiver.requests:
        event_id = int(headers["x-tokend-event-id"])
        assert path == "/hooks/tokend?src=t"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == event_object(rows[event_id])  # `tokend events --json`'s
        sig = headers["x-tokend-signature"]
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", sig)
        assert abs(int(sig[2:].split(",")[0]) - time.time()) < 60
        assert verify(body, sig, SECRET)
        assert not verify(body, sig, "another-secret-" + "x" * 32)
        assert not verify(body.replace(b"client-", b"client_"), sig, SECRET)  # altered body
        old = re.sub(r"t=(\d+)", lambda m: f"t={int(m.group(1)) - 3600}", sig)
        assert not verify(body, old, SECRET)  # a replay an hour later
    assert json.loads(receiver.requests[0][2])["address"] == "203.0.113.7"


def test_a_failing_receiver_gets_the_event_after_retries(rt: Runtime, receiver: Receiver) -> None:
    receiver.answer = lambda n, h, b: 500 if n <= 2 else 200
    retried, delivered = deliveries("retried"), deliveries("delivered")

    async def go() -> tuple[int, int | None]:
        async with hook(rt, receiver.url) as h:
            await h.run_once()
            event_id = record(rt, 1)
            return event_id, await h.run_once()

    event_id, done = asyncio.run(go())
    assert done == 1
    assert receiver.event_ids() == [event_id] * 3
    signatures = [h["x-tokend-signature"] for _, h, _ in receiver.requests]
    assert all(
        receiver_snippet()(b, s, SECRET)
        for (_, _, b), s in zip(receiver.requests, signatures, strict=True)
    )
    assert deliveries("retried") - retried == 2 and deliveries("delivered") - delivered == 1
    assert rt.store.start_cursor(NAME, now=0) == event_id


def test_an_event_never_accepted_is_given_up_and_the_next_is_delivered(
    rt: Runtime, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    bad: list[int] = []
    receiver.answer = lambda n, h, b: 503 if int(h["x-tokend-event-id"]) in bad else 200
    given_up = deliveries("given_up")

    async def go() -> tuple[int, int, int | None]:
        async with hook(rt, receiver.url, attempts=3) as h:
            await h.run_once()
            bad.append(record(rt, 1, address="198.51.100.99"))
            good = record(rt, 2)
            # Only what delivery logs: the events' own log lines (tokend.security at INFO, if
            # an earlier test set that level in this process) rightly carry the address.
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                return bad[0], good, await h.run_once()

    refused, good, done = asyncio.run(go())
    assert done == 2
    assert receiver.event_ids() == [refused] * 3 + [good]
    assert deliveries("given_up") - given_up == 1
    assert rt.store.start_cursor(NAME, now=0) == good
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.name, str(refused) in r.getMessage()) for r in errors] == [("tokend.security", True)]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "198.51.100.99" not in text and "client-1" not in text  # no body in the logs
    assert "src=t" not in text and "/hooks" not in text  # nor the URL's path and query


def test_two_processes_on_one_database_deliver_each_event_once(
    db_url: str, receiver: Receiver
) -> None:
    rts = [runtime(db_url), runtime(db_url)]  # two engines: as two servers

    async def go() -> list[int]:
        async with hook(rts[0], receiver.url) as a, hook(rts[1], receiver.url) as b:
            await asyncio.gather(a.run_once(), b.run_once())
            ids = []
            for i in range(6):
                ids.append(record(rts[i % 2], i))
                rounds = await asyncio.gather(a.run_once(), b.run_once())
                assert sorted(rounds, key=str) == [1, None]  # one holds the lease
            holder, other = (a, b) if await a.run_once() == 0 else (b, a)
            await asyncio.to_thread(holder.release)  # it stops: the other carries on
            ids.append(record(rts[0], 6))
            assert await other.run_once() == 1
            assert await holder.run_once() is None
            return ids

    try:
        ids = asyncio.run(go())
    finally:
        for r in rts:
            r.close()
    assert receiver.event_ids() == ids


def test_a_gap_in_the_ids_is_waited_for_then_passed(rt: Runtime, receiver: Receiver) -> None:
    """On PostgreSQL an earlier id may commit after a later one: an event after a gap waits
    until it is ``settle`` seconds old, then the gap is taken as a rolled-back insert."""

    def insert_event(event_id: int, at: float) -> None:
        row = {"id": event_id, "at": at, "kind": "throttled", "detail": "{}"}
        with rt.store.engine.begin() as conn:
            conn.execute(insert(security_events).values(**row))

    async def go() -> list[int | None]:
        async with hook(rt, receiver.url, settle=30) as h:
            await h.run_once()
            cursor = rt.store.start_cursor(NAME, now=0)
            insert_event(cursor + 2, time.time())  # cursor + 1 is still in flight
            waiting = await h.run_once()
            insert_event(cursor + 4, time.time() - 31)  # past the gap's patience
            insert_event(cursor + 1, time.time())
            return [cursor, waiting, await h.run_once()]

    cursor, waiting, done = asyncio.run(go())
    assert waiting == 0 and done == 3
    assert receiver.event_ids() == [cursor + 1, cursor + 2, cursor + 4]


def test_ids_restarted_below_the_cursor_are_delivered(rt: Runtime, receiver: Receiver) -> None:
    """SQLite reuses ids above the newest row: once gc has emptied the trail past the
    cursor, new events have ids below it. (A PostgreSQL sequence never goes back.)"""
    if not rt.is_sqlite:
        pytest.skip("SQLite's rowids only")

    async def go() -> tuple[int, int | None, int | None]:
        async with hook(rt, receiver.url) as h:
            await h.run_once()
            at = rt.store.start_cursor(NAME, now=0)
            assert rt.store.move_cursor(NAME, at + 1000, expected=at, now=0)
            event_id = record(rt, 1)
            return event_id, await h.run_once(), await h.run_once()

    event_id, rewound, done = asyncio.run(go())
    assert (rewound, done) == (0, 1)
    assert receiver.event_ids() == [event_id]


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        ("http://hooks.example.com/t", SECRET, "must be https"),
        ("http://10.0.0.8/t", SECRET, "must be https"),
        ("hooks.example.com/t", SECRET, "absolute https URL"),
        ("/t", SECRET, "absolute https URL"),
        ("ftp://hooks.example.com/t", SECRET, "absolute https URL"),
        ("https://user:pw-s3cr3t@hooks.example.com/t", SECRET, "credentials"),
        ("https://hooks.example.com:99999/t", SECRET, "not a URL"),
        ("https://hooks.example.com/t#x", SECRET, "fragment"),
        ("https://hooks.example.com/t", None, "needs TOKEND_EVENTS_WEBHOOK_SECRET"),
        ("https://hooks.example.com/t", "short-s3cr3t", "at least 32 characters"),
        (None, SECRET, "TOKEND_EVENTS_WEBHOOK is not"),
    ],
)
def test_settings_refuse_a_bad_combination_without_showing_secrets(
    monkeypatch: pytest.MonkeyPatch, url: str | None, secret: str | None, says: str
) -> None:
    for name, value in (("TOKEND_EVENTS_WEBHOOK", url), ("TOKEND_EVENTS_WEBHOOK_SECRET", secret)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(secret_key=SECRET_KEY)
    message = str(caught.value)
    assert says in message
    for secret_value in (SECRET, "short-s3cr3t", "pw-s3cr3t", SECRET_KEY):
        assert secret_value not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/tokend?key=1",
        "http://127.0.0.1:9000/t",
        "http://[::1]/t",
        "http://localhost/t",
    ],
)
def test_settings_accept_https_and_loopback_http(url: str) -> None:
    s = Settings(events_webhook=url, events_webhook_secret=SECRET)
    assert (s.events_webhook, s.events_webhook_secret) == (url, SECRET)
    assert Settings().events_webhook is None
    assert SECRET not in repr(s) and url not in repr(s)
