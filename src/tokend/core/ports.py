"""What the domain needs from the outside world, as narrow Protocols (fosite-style).

Each method states its contract. Implementations: ``tokend.store.SqlStore`` (SQLite,
PostgreSQL) and ``tests/core/memory_store.py`` (reference, for the domain's unit tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from tokend.core.device import StoredDevice
from tokend.core.models import Client, Family, SecurityEvent, StoredCode, StoredRefreshToken


class Transaction(Protocol):
    """One database transaction. Leaving the ``with`` block normally commits; an exception
    rolls back. Serialisation guarantee: two transactions that ``find_refresh_token`` the same
    hash never both see it unspent and both ``spend_refresh_token`` it successfully."""

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        """The token with this hash and its family, or None. Takes the row's write lock
        where the database has row locks, so a concurrent rotation waits for this one."""
        ...

    def spend_refresh_token(self, token_hash: bytes, *, at: float, successor_hash: bytes) -> bool:
        """Mark the token spent with its successor's hash, only if it is still unspent.
        Returns False if it was already spent (compare-and-set)."""
        ...

    def insert_refresh_token(
        self, token_hash: bytes, *, family_id: str, created_at: float, expires_at: float
    ) -> None:
        """Store a new, unspent refresh token of the family."""
        ...

    def rotate_refresh_token(
        self,
        token_hash: bytes,
        *,
        at: float,
        successor_hash: bytes,
        family_id: str,
        expires_at: float,
    ) -> bool:
        """``spend_refresh_token`` and, only if it spent the token, ``insert_refresh_token``
        of the successor (created ``at``), as one step (one statement where the database
        allows it). False, with nothing written, if the token was already spent."""
        ...

    def is_refresh_token_live(self, token_hash: bytes) -> bool:
        """True for a stored token not spent yet; False for a spent or unknown hash."""
        ...

    def count_grace_retry(self, token_hash: bytes, *, limit: int) -> bool:
        """Count one grace-window retry of the (spent) token, only if fewer than ``limit``
        were counted before (compare-and-set). False once the limit is reached."""
        ...

    def create_family(self, family: Family) -> None:
        """Store a new token family (grant), with its ``dpop_jkt`` binding if it has one."""
        ...

    def bind_family_dpop(self, family_id: str, jkt: str) -> bool:
        """Bind the family's refresh tokens to the DPoP key with thumbprint ``jkt`` if it is
        not bound yet (compare-and-set). True if the family is now bound to ``jkt`` (it was
        unbound, or already bound to it); False if it is bound to another key."""
        ...

    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool:
        """Remember a DPoP proof until ``expires_at`` (RFC 9449 §11.1). False if a proof with
        this hash is already recorded (a replay), by any process: a concurrent transaction
        recording the same hash waits for this one, then gets False if it commits."""
        ...

    def revoke_family(self, family_id: str, *, at: float, reason: str) -> bool:
        """Revoke the family (and so every token issued from it). False if already revoked."""
        ...

    def record_event(self, event: SecurityEvent) -> None:
        """Append a security event (audit log)."""
        ...

    def count_event(self, event: SecurityEvent, *, key: bytes, window: float) -> None:
        """Record an event that anyone can trigger (e.g. with a public client's id) at most
        once per ``window`` seconds per ``key`` (its kind, client and source address): the
        first occurrence in a window is appended with a count of 1, each later one only adds
        one to that row's count, so a flood cannot grow the audit trail."""
        ...

    def insert_authorization_code(self, code: StoredCode) -> None:
        """Store a new, unconsumed authorization code (by hash)."""
        ...

    def find_authorization_code(self, code_hash: bytes) -> StoredCode | None:
        """The code with this hash, or None; takes the row's write lock where possible."""
        ...

    def consume_authorization_code(self, code_hash: bytes, *, at: float, family_id: str) -> bool:
        """Mark the code consumed and remember the family issued from it, only if it is
        still unconsumed. Returns False if it was already consumed (compare-and-set)."""
        ...

    def find_device_authorization(self, device_code_hash: bytes) -> StoredDevice | None:
        """The device authorization (RFC 8628) with this device code hash, or None; takes
        the row's write lock where possible, so concurrent polls of one code queue."""
        ...

    def record_device_poll(self, authorization_id: str, *, at: float, interval: int) -> None:
        """Remember a poll of the device code at ``at`` and the interval the client must
        keep from now on (RFC 8628 §3.5 ``slow_down`` grows it)."""
        ...

    def redeem_device_authorization(
        self, authorization_id: str, *, at: float, family_id: str
    ) -> bool:
        """Mark an approved authorization redeemed, with the family issued from it, only if
        it is still approved (compare-and-set). False if another request redeemed it."""
        ...


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction (serialised with other writers on SQLite)."""
        ...

    def get_client(self, client_id: str) -> Client | None:
        """The client, or None if unknown."""
        ...


class Signer(Protocol):
    def sign_access_token(self, claims: Mapping[str, Any], alg: str | None = None) -> str:
        """A JWT with header ``typ: at+jwt`` and ``kid``, signed by the current key of
        ``alg`` (None: the server's access-token algorithm, TOKEND_SIGNING_ALG)."""
        ...

    def sign_id_token(self, claims: Mapping[str, Any], alg: str = "RS256") -> str:
        """A JWT signed with the current key of ``alg`` (OIDC Core §3.1.3.7: RS256 when
        the client registered none)."""
        ...
