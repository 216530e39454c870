"""Sign-in from another device, free of HTTP and SQL: the RFC 8628 device authorization
grant and the cross-device (QR) sign-in of the login page share this one mechanism.

A ``device_authorizations`` row is made by ``DeviceFlow.start`` (a device: a TV, a CLI,
``POST /auth/v2/device/authorize``) or ``DeviceFlow.start_browser`` (a browser waiting on
the login page for a phone to approve its authorization request). A person then types or
follows the user code on ``/device`` (``pending``), signs in and allows or denies
(``approve``, ``deny``). The device redeems its device code at the token endpoint
(``tokend.core.grants.device_code``); the waiting browser asks ``browser_outcome``.

Rules kept here:

- **User codes** (RFC 8628 §6.1): 8 characters drawn with ``secrets`` from an alphabet of
  20 consonants without look-alikes or vowels (no words), shown ``XXXX-XXXX``, accepted
  case-insensitively with or without the dash or spaces. ~34.6 bits: guessable by brute
  force only without throttling (the /device pages throttle entry per address), and too
  few for a plain digest at rest, so storage sees only ``HMAC-SHA256(key, code)`` with a key
  derived from the server secret.
- **Device codes**: 256 random bits (the token format of ``tokend.core.secrets``, with
  its own prefix and checksum, so a typo costs no database work and secret scanners can
  match one); stored only as SHA-256.
- **Decisions** happen once: approve and deny are compare-and-set on a pending, unexpired
  row; each decision is a security event recorded in the same transaction.
- **A browser row completes one browser, once**: its outcome needs the device code (the
  waiting browser's cookie) *and* the hash of the authorization request it was made for;
  an approval is consumed (status ``redeemed``) in the same compare-and-set that reads it.

Time comes from the ``Clock`` passed in; storage through ``DeviceStorage`` below, which
``tokend.store`` implements structurally and ``tests/core/memory_device.py`` in memory.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from tokend.core.client_auth import authenticate_client
from tokend.core.clock import Clock
from tokend.core.errors import InvalidScope, UnauthorizedClient
from tokend.core.events import EventKind
from tokend.core.models import Client, ClientCredentials, SecurityEvent
from tokend.core.scopes import parse_scope
from tokend.core.secrets import DEVICE_CODE_PREFIX, hash_secret, new_device_code, new_id

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
_USER_CODE_CHARS = frozenset(USER_CODE_ALPHABET)

# RFC 8628 §3.2 ``interval``: seconds between polls; §3.5 ``slow_down`` adds this much.
POLL_INTERVAL = 5
SLOW_DOWN_STEP = 5
# The interval never grows past this (a misbehaving client keeps hearing slow_down, but the
# stored value stays a small number).
MAX_POLL_INTERVAL = 60

KIND_DEVICE = "device"
KIND_BROWSER = "browser"
PENDING, APPROVED, DENIED, REDEEMED = "pending", "approved", "denied", "redeemed"

# How many fresh user codes ``start`` draws before giving up on a (vanishingly rare) clash
# with a stored one.
_CODE_ATTEMPTS = 5


def new_user_code() -> str:
    """8 characters of ``USER_CODE_ALPHABET``, unformatted (``secrets``, uniform)."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    """``BCDFGHJK`` -> ``BCDF-GHJK`` (a code already normalized, or already formatted)."""
    normalized = normalize_user_code(code)
    if normalized is None:
        raise ValueError("not a user code")
    half = USER_CODE_LENGTH // 2
    return normalized[:half] + "-" + normalized[half:]


def normalize_user_code(text: str) -> str | None:
    """What a person typed (any case, with or without the dash, spaces around or inside)
    as the 8 characters of a user code, or None if it cannot be one. Bounded: a long input
    is refused before any work on it."""
    if len(text) > 4 * USER_CODE_LENGTH:
        return None
    code = "".join(c for c in text.upper() if c not in "- \t")
    if len(code) != USER_CODE_LENGTH or not set(code) <= _USER_CODE_CHARS:
        return None
    return code


def user_code_digest(key: bytes, code: str) -> bytes:
    """The stored form of a (normalized) user code: HMAC-SHA256 with the server's key."""
    return hmac.digest(key, code.encode("ascii"), "sha256")


@dataclass(frozen=True, slots=True)
class DeviceStart:
    """What ``start``/``start_browser`` return: the secret device code (for the device or
    the waiting browser only), the user code for the person, formatted ``XXXX-XXXX``."""

    device_code: str
    user_code: str
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True)
class PendingDevice:
    """A live, pending authorization, as the /device pages show it."""

    id: str
    client_id: str
    client_name: str
    kind: str
    scopes: tuple[str, ...]
    address: str | None
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class StoredDevice:
    """A ``device_authorizations`` row (only hashes of the codes)."""

    id: str
    device_code_hash: bytes
    user_code_hash: bytes
    client_id: str
    kind: str
    scopes: tuple[str, ...]
    request_hash: bytes | None
    address: str | None
    status: str
    interval: int
    last_polled_at: float | None
    user_id: str | None
    auth_time: float | None
    decided_at: float | None
    family_id: str | None
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class BrowserOutcome:
    """What a browser waiting for another device learns: ``pending`` (keep waiting),
    ``approved`` (with whom and since when: the authorization goes on, once), ``denied``,
    or ``expired`` (also unknown, for another request, or already completed)."""

    status: Literal["pending", "approved", "denied", "expired"]
    user_id: str | None = None
    auth_time: float | None = None


class DeviceStorage(Protocol):
    """``device_authorizations`` rows, by id or by the hash of one of their codes."""

    def create_device_authorization(self, row: StoredDevice) -> bool:
        """Store a new row; False (nothing stored) if its user code hash or device code
        hash is already taken by another row."""
        ...

    def pending_device(self, user_code_hash: bytes, *, now: float) -> PendingDevice | None:
        """The row with this user code hash if it is pending and expires after ``now``,
        with its client's name; else None."""
        ...

    def decide_device_authorization(
        self,
        authorization_id: str,
        *,
        status: str,
        user_id: str | None,
        auth_time: float | None,
        now: float,
        event: SecurityEvent,
    ) -> bool:
        """Set ``status`` (approved or denied), the user and ``decided_at``, only if the row
        is still pending and expires after ``now`` (compare-and-set); then, in the same
        transaction, record ``event`` (given the row's client). False: nothing changed."""
        ...

    def peek_device_authorization(self, device_code_hash: bytes) -> StoredDevice | None:
        """The row with this device code hash, or None (a plain read)."""
        ...

    def redeem_browser_authorization(self, authorization_id: str, *, now: float) -> bool:
        """Mark an approved, unexpired row redeemed, only if it still is approved
        (compare-and-set): True for exactly one caller."""
        ...


class DeviceFlow:
    """The device and cross-device sign-in service (``rt.device``, built by
    ``tokend.runtime``)."""

    __slots__ = ("_clock", "_storage", "_user_code_key", "ttl")

    def __init__(
        self, storage: DeviceStorage, *, clock: Clock, user_code_key: bytes, ttl: int
    ) -> None:
        if len(user_code_key) < 16:
            raise ValueError("the user code key must be at least 128 bits")
        self._storage = storage
        self._clock = clock
        self._user_code_key = user_code_key
        self.ttl = ttl

    # -- starting ---------------------------------------------------------------------------

    def authorize(self, client: Client, scope: str | None, *, address: str | None) -> DeviceStart:
        """RFC 8628 §3.1-3.2 for an authenticated client: only a client registered with the
        device grant (``unauthorized_client``); ``scope`` within the client's registered
        scopes (``invalid_scope``), the registered scopes when absent (RFC 6749 §3.3)."""
        if DEVICE_CODE_GRANT not in client.grant_types:
            raise UnauthorizedClient("The client is not authorized to use the device grant.")
        requested = parse_scope(scope)
        if not requested:
            requested = client.scopes
        allowed = set(client.scopes)
        if any(s not in allowed for s in requested):
            raise InvalidScope("The requested scope is not allowed for this client.")
        return self.start(client, requested, address=address)

    def start(self, client: Client, scopes: tuple[str, ...], *, address: str | None) -> DeviceStart:
        """A new pending device authorization (scopes already checked by the caller)."""
        return self._start(client, scopes, kind=KIND_DEVICE, request_hash=None, address=address)

    def start_browser(
        self,
        client: Client,
        scopes: tuple[str, ...],
        *,
        request_hash: bytes,
        address: str | None,
    ) -> DeviceStart:
        """A pending cross-device authorization bound to one authorization request (its
        hash): the device code is the waiting browser's secret, never redeemable at the
        token endpoint."""
        if len(request_hash) != 32:
            raise ValueError("request_hash must be a SHA-256 digest")
        return self._start(
            client, scopes, kind=KIND_BROWSER, request_hash=request_hash, address=address
        )

    def _start(
        self,
        client: Client,
        scopes: tuple[str, ...],
        *,
        kind: str,
        request_hash: bytes | None,
        address: str | None,
    ) -> DeviceStart:
        now = self._clock.now()
        for _ in range(_CODE_ATTEMPTS):
            device_code, user_code = new_device_code(), new_user_code()
            row = StoredDevice(
                id=new_id(),
                device_code_hash=hash_secret(device_code),
                user_code_hash=user_code_digest(self._user_code_key, user_code),
                client_id=client.client_id,
                kind=kind,
                scopes=tuple(scopes),
                request_hash=request_hash,
                address=address,
                status=PENDING,
                interval=POLL_INTERVAL,
                last_polled_at=None,
                user_id=None,
                auth_time=None,
                decided_at=None,
                family_id=None,
                created_at=now,
                expires_at=now + self.ttl,
            )
            if self._storage.create_device_authorization(row):
                return DeviceStart(
                    device_code=device_code,
                    user_code=format_user_code(user_code),
                    expires_in=self.ttl,
                    interval=POLL_INTERVAL,
                )
        raise RuntimeError("no free user code after several attempts")  # ~never: 20^8 codes

    # -- the person's side -----------------------------------------------------------------

    def pending(self, user_code_text: str) -> PendingDevice | None:
        """The live, pending authorization a person typed (or followed) the code of."""
        code = normalize_user_code(user_code_text)
        if code is None:
            return None
        digest = user_code_digest(self._user_code_key, code)
        return self._storage.pending_device(digest, now=self._clock.now())

    def approve(
        self, authorization_id: str, *, user_id: str, auth_time: float, address: str | None
    ) -> bool:
        """The signed-in user allows it; False if it is no longer pending (decided,
        expired, gone)."""
        now = self._clock.now()
        event = SecurityEvent(
            EventKind.DEVICE_AUTHORIZATION_APPROVED,
            now,
            user_id=user_id,
            detail={"authorization_id": authorization_id},
            address=address,
        )
        return self._storage.decide_device_authorization(
            authorization_id,
            status=APPROVED,
            user_id=user_id,
            auth_time=auth_time,
            now=now,
            event=event,
        )

    def deny(
        self, authorization_id: str, *, address: str | None, user_id: str | None = None
    ) -> bool:
        """The person refuses it; False if it is no longer pending."""
        now = self._clock.now()
        event = SecurityEvent(
            EventKind.DEVICE_AUTHORIZATION_DENIED,
            now,
            user_id=user_id,
            detail={"authorization_id": authorization_id},
            address=address,
        )
        return self._storage.decide_device_authorization(
            authorization_id, status=DENIED, user_id=user_id, auth_time=None, now=now, event=event
        )

    # -- the waiting browser ---------------------------------------------------------------

    def browser_outcome(self, device_code: str, request_hash: bytes) -> BrowserOutcome:
        """Where the cross-device authorization of this browser (its device code) for this
        authorization request stands. ``approved`` is answered once: the row is redeemed
        by the same compare-and-set."""
        expired = BrowserOutcome("expired")
        if not device_code.startswith(DEVICE_CODE_PREFIX) or len(device_code) > 128:
            return expired
        row = self._storage.peek_device_authorization(hash_secret(device_code))
        if (
            row is None
            or row.kind != KIND_BROWSER
            or row.request_hash is None
            or not hmac.compare_digest(row.request_hash, request_hash)
        ):
            return expired
        now = self._clock.now()
        if row.status == DENIED:
            return BrowserOutcome("denied")
        if now >= row.expires_at or row.status == REDEEMED:
            return expired
        if row.status == PENDING:
            return BrowserOutcome("pending")
        if row.status != APPROVED or not self._storage.redeem_browser_authorization(
            row.id, now=now
        ):
            return expired
        return BrowserOutcome("approved", user_id=row.user_id, auth_time=row.auth_time)


class DeviceAuthorization:
    """``POST /auth/v2/device/authorize`` free of HTTP (RFC 8628 §3.1-3.2): the client
    authenticated exactly as at the token endpoint (``tokend.core.client_auth``: basic,
    post, or ``none`` for a public client), then ``DeviceFlow.authorize``."""

    __slots__ = ("_clients", "_flow", "verification_uri")

    def __init__(
        self, flow: DeviceFlow, clients: Callable[[str], Client | None], *, issuer: str
    ) -> None:
        self._flow = flow
        self._clients = clients
        self.verification_uri = f"{issuer}/device"

    def authorize(
        self, credentials: ClientCredentials, params: Mapping[str, str], *, address: str | None
    ) -> dict[str, str | int]:
        """The §3.2 response, or ``OAuthError``."""
        client = authenticate_client(credentials, self._clients)
        start = self._flow.authorize(client, params.get("scope"), address=address)
        return {
            "device_code": start.device_code,
            "user_code": start.user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": f"{self.verification_uri}?user_code={start.user_code}",
            "expires_in": start.expires_in,
            "interval": start.interval,
        }
