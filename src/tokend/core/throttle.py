"""Brute-force limits on failed authentication, free of HTTP and SQL (issue 10 §2).

The rule:

- Failed **client authentications** count per (client_id, source address) and per source
  address; failed **sign-ins** per (username, source address) and per source address;
  **user codes** typed or followed on ``/device`` that match no pending authorization (RFC
  8628 §5.1: ~34.6 bits, guessable without a limit) per source address. No
  limit keys on the client or the account alone: an attacker elsewhere can exhaust only his
  own address's allowance, never lock the real client or user out from theirs.
- An IPv6 address counts as its /64 (what one subscriber usually holds, RFC 6177), an
  IPv4-mapped IPv6 address as its IPv4 address; anything else (a Unix socket, a test
  client) as itself.
- Window: fixed, anchored at the first failure. The first failure of a key opens a window of
  ``window`` seconds; each failure inside it adds one; once a key has ``max_failures`` in its
  window, attempts under that key are refused (HTTP 429, ``Retry-After`` = the rest of the
  window) **before** the credential is looked at: no password hash runs, no client secret
  is compared, so a throttled guesser gets no verdict. When the window ends the key starts
  again from zero. At most ``max_failures`` verdicts per window per key in the long run
  (2 x ``max_failures`` across one window boundary).
- Refused attempts are not counted (they cost no write, and the refusal lasts exactly
  until the window the attacker filled ends). Successful attempts are not counted either,
  and reset nothing: success adds no write.
- The failure that fills a key's window (``hits == max_failures``) is the throttle
  decision, recorded once as a ``throttled`` security event; the refused attempts that
  follow record nothing, so a flood cannot grow the audit trail.
- Counters are shared by every process through the database (one upsert per failure), so
  workers and servers on one database enforce one limit. Concurrent attempts that passed the
  check before the window filled are still judged: the excess is bounded by concurrency.

Keys are SHA-256 digests of (limit, subject, address): fixed size whatever the input, and
no username, client id or address stored in the counter table.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from tokend.core.clock import Clock
from tokend.core.errors import TooManyAttempts
from tokend.core.events import EventKind
from tokend.core.models import SecurityEvent
from tokend.core.ports import Transaction

CLIENT = "client"  # (client_id, address)
CLIENT_ADDRESS = "client_address"  # (address) for client authentication
LOGIN = "login"  # (username, address)
LOGIN_ADDRESS = "login_address"  # (address) for sign-ins
USER_CODE_ADDRESS = "user_code_address"  # (address) for user codes typed on /device
DEVICE_START_ADDRESS = "device_start_address"  # (address) for cross-device sign-ins started


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``max_failures`` failures per ``window`` seconds; 0 turns the limit off."""

    name: str
    max_failures: int
    window: float


@dataclass(frozen=True, slots=True)
class Key:
    """One counter: a limit and the digest of what it counts for."""

    limit: Limit
    digest: bytes


@dataclass(frozen=True, slots=True)
class Counter:
    """A key's failures in its current window, and when that window ends."""

    hits: int
    window_end: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who is trying (for the security event): never a secret or a password."""

    address: str
    client_id: str | None = None
    username: str | None = None


class CounterStore(Protocol):
    def read_counters(self, digests: Sequence[bytes]) -> Mapping[bytes, Counter]:
        """The counters with these digests that exist (a primary-key read, no lock)."""
        ...

    def add_failure(self, windows: Mapping[bytes, float], *, now: float) -> Mapping[bytes, Counter]:
        """Count one failure under each digest, atomically across processes: a counter whose
        window has ended (or that does not exist) restarts at 1 with a window ending at
        ``now + windows[digest]``; otherwise its hits go up by one. Returns the counters after."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction (for the throttle decision's security event)."""
        ...


def network_of(address: str) -> str:
    """What a per-address limit counts: an IPv6 address's /64, an IPv4 address itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _digest(limit: str, subject: str, network: str) -> bytes:
    data = "\x00".join((limit, subject, network)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    client: Limit
    client_address: Limit
    login: Limit
    login_address: Limit
    # RFC 8628 §5.1: wrong user codes per address (a user code is not tied to an account).
    user_code: Limit = Limit(USER_CODE_ADDRESS, 20, 900.0)
    # Not a failure: each cross-device sign-in the login page starts (a stored row) counts,
    # so one address cannot make rows without bound by loading login pages.
    device_start: Limit = Limit(DEVICE_START_ADDRESS, 60, 900.0)

    def client_keys(self, client_id: str | None, address: str) -> tuple[Key, ...]:
        """The counters of a client authentication attempt."""
        net = network_of(address)
        return _active(
            (Key(self.client, _digest(CLIENT, client_id or "", net)),
             Key(self.client_address, _digest(CLIENT_ADDRESS, "", net)))
        )  # fmt: skip

    def login_keys(self, username: str, address: str) -> tuple[Key, ...]:
        """The counters of a sign-in attempt."""
        net = network_of(address)
        return _active(
            (Key(self.login, _digest(LOGIN, username, net)),
             Key(self.login_address, _digest(LOGIN_ADDRESS, "", net)))
        )  # fmt: skip

    def user_code_keys(self, address: str) -> tuple[Key, ...]:
        """The counter of a user code entry (per address only: the code names no account)."""
        return _active((Key(self.user_code, _digest(USER_CODE_ADDRESS, "", network_of(address))),))

    def device_start_keys(self, address: str) -> tuple[Key, ...]:
        """The counter of the cross-device sign-ins an address starts."""
        net = network_of(address)
        return _active((Key(self.device_start, _digest(DEVICE_START_ADDRESS, "", net)),))


def _active(keys: Iterable[Key]) -> tuple[Key, ...]:
    return tuple(k for k in keys if k.limit.max_failures > 0)


def blocked_for(keys: Iterable[Key], counters: Mapping[bytes, Counter], now: float) -> float:
    """Seconds until every full window among ``keys`` has ended; 0 if none is full."""
    wait = 0.0
    for key in keys:
        c = counters.get(key.digest)
        if c is not None and c.window_end > now and c.hits >= key.limit.max_failures:
            wait = max(wait, c.window_end - now)
    return wait


def filled(keys: Iterable[Key], counters: Mapping[bytes, Counter]) -> list[Key]:
    """The keys whose window this failure filled (the throttle decisions)."""
    return [
        k
        for k in keys
        if (c := counters.get(k.digest)) is not None and c.hits == k.limit.max_failures
    ]


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


class Throttle:
    """The rule applied: ``check`` (one read) or ``check_known`` (no I/O) before the
    credential is judged, ``failed`` after it was found wrong. Each raises
    ``TooManyAttempts`` when the attempt must be refused.

    ``check_known`` serves the token endpoint's hot path, where a success must cost no
    statement: it consults only what this process has learned, from the counters its own
    failures returned, about full windows. A process that has not learned yet judges the
    credential; if it is wrong, the shared counter (past the limit) refuses it with 429 and
    the process learns. So past the limit no wrong guess is ever answered 401 anywhere, and
    each process answers at most one more verdict per full window (a 200 for a right
    guess): with tokend's 256-bit client secrets that is no foothold. Sign-ins, where a
    verdict is an Argon2 hash and passwords are weak, use ``check``.
    """

    __slots__ = ("_clock", "_known", "_max_known", "_store", "policy")

    def __init__(
        self,
        *,
        store: CounterStore,
        policy: ThrottlePolicy,
        clock: Clock,
        max_known: int = 4096,
    ) -> None:
        self._store = store
        self.policy = policy
        self._clock = clock
        # Full windows this process remembers (digest -> window end); past ``max_known``,
        # ended ones go, then the oldest: forgetting one costs one counted failure.
        self._known: dict[bytes, float] = {}
        self._max_known = max_known

    def check(self, keys: Sequence[Key]) -> None:
        """Refuse the attempt if one of its counters is full (one primary-key read)."""
        if not keys:
            return
        now = self._clock.now()
        wait = blocked_for(keys, self._store.read_counters([k.digest for k in keys]), now)
        if wait > 0:
            raise TooManyAttempts(retry_after(wait))

    @property
    def knows_full_windows(self) -> bool:
        """Whether this process knows of any full window (else ``check_known`` is a no-op)."""
        return bool(self._known)

    def check_known(self, keys: Sequence[Key]) -> None:
        """Refuse the attempt if this process knows one of its windows is full (no I/O)."""
        known = self._known
        if not known or not keys:
            return
        now = self._clock.now()
        wait = 0.0
        for key in keys:
            end = known.get(key.digest)
            if end is not None:
                if end > now:
                    wait = max(wait, end - now)
                else:
                    known.pop(key.digest, None)
        if wait > 0:
            raise TooManyAttempts(retry_after(wait))

    def failed(self, keys: Sequence[Key], attempt: Attempt, *, checked: bool = True) -> None:
        """Count a failed attempt. ``checked``: ``check`` or ``check_known`` ran before it;
        if not (an attempt with no credential to judge), a full counter refuses it here,
        uncounted. An attempt counted past a full window (its process had not learned of
        it) is refused too: past the limit a wrong credential never gets its verdict."""
        if not keys:
            return
        if not checked:
            self.check(keys)
        now = self._clock.now()
        counters = self._store.add_failure({k.digest: k.limit.window for k in keys}, now=now)
        self._learn(keys, counters, now)
        decisions = filled(keys, counters)
        if decisions:
            with self._store.transaction() as tx:
                for key in decisions:
                    tx.record_event(_throttled_event(key, counters[key.digest], attempt, now))
        wait = past_limit(keys, counters, now)
        if wait > 0:
            raise TooManyAttempts(retry_after(wait))

    def _learn(self, keys: Sequence[Key], counters: Mapping[bytes, Counter], now: float) -> None:
        known = self._known
        for key in keys:
            c = counters.get(key.digest)
            if c is not None and c.hits >= key.limit.max_failures and c.window_end > now:
                known[key.digest] = c.window_end
        if len(known) > self._max_known:
            for digest in [d for d, end in known.items() if end <= now]:
                del known[digest]
            while len(known) > self._max_known:
                del known[next(iter(known))]


def past_limit(keys: Iterable[Key], counters: Mapping[bytes, Counter], now: float) -> float:
    """Seconds until every window that this failure went past has ended; 0 if none."""
    wait = 0.0
    for key in keys:
        c = counters.get(key.digest)
        if c is not None and c.window_end > now and c.hits > key.limit.max_failures:
            wait = max(wait, c.window_end - now)
    return wait


def _throttled_event(key: Key, counter: Counter, attempt: Attempt, now: float) -> SecurityEvent:
    detail: dict[str, object] = {
        "limit": key.limit.name,
        "failures": counter.hits,
        "window": key.limit.window,
        "until": counter.window_end,
    }
    if attempt.username is not None:
        detail["username"] = attempt.username[:255]
    return SecurityEvent(
        EventKind.THROTTLED,
        now,
        client_id=attempt.client_id,
        detail=detail,
        address=attempt.address or None,
    )


def event_key(kind: str, *parts: str | None) -> bytes:
    """The aggregation key of a security event that anyone may trigger (``count_event``)."""
    return hashlib.sha256(
        "\x00".join(("event", kind, *(p or "" for p in parts))).encode("utf-8", "surrogatepass")
    ).digest()
