"""The events webhook (``TOKEND_EVENTS_WEBHOOK``): each security event of the trail POSTed
to the operator's receiver, off the request path, by one worker of all the servers at a time.

Every worker of every server runs this loop; each round, each tries to take (or renew) the
``events-webhook`` lease (``SqlStore.take_lease``, as the gc sweep does), and only its
holder delivers. The holder reads the events after its cursor (``cursors``, migration 0009:
the id of the last event delivered; made at the newest event when the webhook is first
enabled, so no history floods the receiver) and POSTs them one by one, in id order.

One request per event::

    POST <TOKEND_EVENTS_WEBHOOK>
    Content-Type: application/json
    X-Tokend-Event-Id: 4711
    X-Tokend-Signature: t=1796097674,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

    {"time":"2026-12-01T04:41:14.123Z","type":"refresh_token_reuse","client_id":...}

The body is ``tokend events --json``'s object (``tokend.core.events.event_object``), no
more: an event holds no secret. ``t`` is the time of the attempt (each retry signs anew), so
a receiver rejects a replay by its age (docs/operations.md has the check).

At-least-once: the cursor moves past an event once the receiver answered 2xx (a crash
between the answer and the move delivers it again: receivers deduplicate by the event id).
A failure (a connection error, a timeout, any other status; redirects are not followed) is
retried with exponential backoff (by default 5 attempts over ~30 s); then the event is given
up: an ERROR on ``tokend.security`` (the event's id and type, never its body), counted, and
the cursor moves on, so one event the receiver refuses cannot stop the trail.
``tokend_events_webhook_deliveries_total{outcome}`` counts ``delivered``, ``retried`` (each
attempt after the first) and ``given_up``.

Ids and commits: on SQLite a writer holds the lock from its insert to its commit, so events
commit in id order. On PostgreSQL ids come from a sequence when the row is inserted, and a
transaction that drew an earlier id may commit after a later one: an id missing after the
cursor (a gap) is waited for until the event after it is ``settle`` seconds old (tokend's
transactions take milliseconds), and then taken as never coming (a rolled-back insert).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool

from tokend import metrics
from tokend.core.events import event_object, security_log
from tokend.runtime import Runtime, new_holder_id

log = logging.getLogger("tokend.webhook")

NAME = "events-webhook"  # the lease and the cursor
SIGNATURE_HEADER = "X-Tokend-Signature"
EVENT_ID_HEADER = "X-Tokend-Event-Id"
USER_AGENT = "tokend-events-webhook"

INTERVAL = 1.0  # seconds between looks at the trail when it has nothing new
ATTEMPTS = 5  # per event, the first included
BACKOFF = 2.0  # before the 2nd attempt; doubled each time, at most MAX_BACKOFF: 2+4+8+16 s
MAX_BACKOFF = 16.0
TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # per attempt: connect, and each read/write
LEASE_TTL = 60.0  # outlives an attempt (its timeouts); renewed every LEASE_TTL / 3
SETTLE_POSTGRESQL = 10.0
BATCH = 100


def signature(secret: str, body: bytes, t: int) -> str:
    """The ``X-Tokend-Signature`` value for ``body`` signed at Unix time ``t``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event_body(row: dict[str, Any]) -> bytes:
    """The request body for a stored event: ``tokend events --json``'s object, compact."""
    return json.dumps(event_object(row), separators=(",", ":")).encode()


class EventsWebhook:
    """One process's part in the delivery: ``run_once`` (a round, if this process holds the
    lease) and ``run`` (the loop, an asyncio task started by the app's lifespan). Use it
    as an async context manager (its HTTP client), or let ``run`` close it."""

    def __init__(
        self,
        rt: Runtime,
        url: str,
        secret: str,
        *,
        interval: float = INTERVAL,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        timeout: httpx.Timeout = TIMEOUT,
        lease_ttl: float = LEASE_TTL,
        settle: float | None = None,
        batch: int = BATCH,
        holder: str | None = None,
    ) -> None:
        if interval <= 0 or attempts < 1 or backoff < 0 or batch < 1 or lease_ttl <= 0:
            raise ValueError("the events webhook needs a positive interval, attempts and batch")
        self._rt = rt
        self._url = url
        self._secret = secret
        self.interval = interval
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.lease_ttl = lease_ttl
        self.settle = (0.0 if rt.is_sqlite else SETTLE_POSTGRESQL) if settle is None else settle
        self.batch = batch
        self.holder = holder or new_holder_id()
        self._renewed = float("-inf")  # time.monotonic() of the last successful take
        # What a log line may name of the receiver: its host (the URL's query may hold a
        # token of the receiver's own).
        self.host = urlsplit(url).hostname or "?"
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def __aenter__(self) -> EventsWebhook:
        return self

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the lease -----------------------------------------------------------------------

    def _take(self) -> bool:
        ok = self._rt.store.take_lease(
            NAME, self.holder, now=self._rt.clock.now(), ttl=self.lease_ttl
        )
        self._renewed = time.monotonic() if ok else float("-inf")
        return ok

    async def _hold(self) -> bool:
        """Take the lease, or keep it: a holder renews it once a third of its ttl has gone
        by since the last renewal (a write to the database), not on every round."""
        if time.monotonic() - self._renewed < self.lease_ttl / 3:
            return True
        return await run_in_threadpool(self._take)

    def release(self) -> None:
        self._renewed = float("-inf")
        self._rt.store.release_lease(NAME, self.holder)

    # -- a round ---------------------------------------------------------------------------

    async def run_once(self) -> int | None:
        """Deliver what is pending (up to ``batch`` events) if this process holds the lease:
        how many events the cursor moved past (delivered or given up), or None when another
        process holds the lease."""
        if not await self._hold():
            return None
        store, clock = self._rt.store, self._rt.clock
        position = await run_in_threadpool(store.start_cursor, NAME, now=clock.now())
        rows = await run_in_threadpool(store.events_after, position, limit=self.batch)
        if not rows:
            if self._rt.is_sqlite:  # a PostgreSQL sequence never goes back
                await self._check_restarted_ids(position)
            return 0
        done = 0
        for row in rows:
            event_id = int(row["id"])
            if event_id != position + 1 and float(row["at"]) > clock.now() - self.settle:
                break  # a gap: an earlier id may still be committing (PostgreSQL)
            outcome = await self._deliver(event_id, row)
            if outcome is None:
                log.warning("events webhook: the lease went to another process")
                break
            moved = await run_in_threadpool(
                store.move_cursor, NAME, event_id, expected=position, now=clock.now()
            )
            if not moved:
                log.warning("events webhook: another process moved the cursor; stopping")
                break
            position = event_id
            done += 1
        return done

    async def _check_restarted_ids(self, position: int) -> None:
        """SQLite reuses the ids above the newest row: once gc has emptied the trail past the
        cursor, new events get ids at or below it. Start again from the bottom."""
        newest = await run_in_threadpool(self._rt.store.newest_event_id)
        if newest < position:
            moved = await run_in_threadpool(
                self._rt.store.move_cursor, NAME, 0, expected=position, now=self._rt.clock.now()
            )
            if moved:
                log.warning(
                    "events webhook: the trail's ids restarted below the cursor (%d, newest "
                    "%d): delivering from the oldest event left",
                    position,
                    newest,
                )

    async def _deliver(self, event_id: int, row: dict[str, Any]) -> bool | None:
        """POST one event until a 2xx or ``attempts`` failures: True (delivered), False
        (given up), None (the lease was lost: another process carries on)."""
        body = event_body(row)
        failure = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                metrics.webhook_delivery("retried")
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 2), self.max_backoff))
            if not await self._hold():
                return None
            t = int(self._rt.clock.now())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                EVENT_ID_HEADER: str(event_id),
                SIGNATURE_HEADER: signature(self._secret, body, t),
            }
            try:
                # Streamed and never read: the answer's status is all that counts, and a
                # receiver cannot make this process hold a large body in memory.
                async with self._client.stream(
                    "POST", self._url, content=body, headers=headers
                ) as answer:
                    status = answer.status_code
            except httpx.HTTPError as exc:
                failure = type(exc).__name__  # never str(exc): it may quote the URL
            else:
                if 200 <= status < 300:
                    metrics.webhook_delivery("delivered")
                    return True
                failure = f"HTTP {status}"
            log.warning(
                "events webhook: event %d to %s: attempt %d of %d failed: %s",
                event_id,
                self.host,
                attempt,
                self.attempts,
                failure,
            )
        metrics.webhook_delivery("given_up")
        security_log.error(
            "events webhook: gave up event %d (%s) to %s after %d attempts: %s",
            event_id,
            row["kind"],
            self.host,
            self.attempts,
            failure,
        )
        return False

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Rounds until cancelled (shutdown): at once again after a full batch, else every
        ``interval`` seconds; a process without the lease tries for it every sixth of its
        ttl (one write, not one a second per worker). On cancellation, give the lease up, so
        that another process takes over at its next try."""
        try:
            while True:
                try:
                    done = await self.run_once()
                except Exception:
                    log.exception("events webhook round failed")
                    done = 0
                if done is None:  # another process delivers: look again now and then
                    await asyncio.sleep(max(self.interval, self.lease_ttl / 6))
                elif done < self.batch:
                    await asyncio.sleep(self.interval)
        finally:
            try:
                await asyncio.shield(run_in_threadpool(self.release))
            except Exception:
                log.exception("could not release the events webhook lease")
            await self.aclose()
