"""In-memory reference implementations of the ports in ``tokend.core.ports``, for unit tests.

``MemoryStore`` keeps plain dicts of immutable rows. ``transaction()`` takes a lock (so
transactions are serialised, as the Protocol's compare-and-set contract requires), copies
the state on enter and puts the copy back if an exception escapes: rollback is real, so a
test can check that a rejected request changed nothing.

``FakeSigner`` really signs (PyJWT, a fresh RS256 key, header ``kid``/``typ`` as
``tokend.keys.ring`` sets them), so tests decode and verify what the domain minted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from tokend.core.device import StoredDevice
from tokend.core.models import Client, Family, SecurityEvent, StoredCode, StoredRefreshToken
from tokend.core.secrets import hash_secret
from tokend.keys.ring import generate_private_key, public_jwk


@dataclass(frozen=True)
class TokenRow:
    """A stored refresh token, without its family (the family is joined on read)."""

    family_id: str
    created_at: float
    expires_at: float
    spent_at: float | None = None
    successor_hash: bytes | None = None
    grace_uses: int = 0


@dataclass
class State:
    """Everything the store holds. Values are immutable, so a shallow copy is a snapshot."""

    families: dict[str, Family] = field(default_factory=dict)
    tokens: dict[bytes, TokenRow] = field(default_factory=dict)
    revocation_reasons: dict[str, str] = field(default_factory=dict)
    events: list[SecurityEvent] = field(default_factory=list)
    codes: dict[bytes, StoredCode] = field(default_factory=dict)
    dpop_proofs: dict[bytes, float] = field(default_factory=dict)  # replay hash -> expiry
    # count_event: aggregation key -> (window end, index of its event in ``events``)
    event_windows: dict[bytes, tuple[float, int]] = field(default_factory=dict)
    event_counts: dict[int, int] = field(default_factory=dict)  # index in ``events`` -> count
    devices: dict[str, StoredDevice] = field(default_factory=dict)  # by id

    def copy(self) -> State:
        return State(
            families=dict(self.families),
            tokens=dict(self.tokens),
            revocation_reasons=dict(self.revocation_reasons),
            events=list(self.events),
            codes=dict(self.codes),
            dpop_proofs=dict(self.dpop_proofs),
            event_windows=dict(self.event_windows),
            event_counts=dict(self.event_counts),
            devices=dict(self.devices),
        )


class MemoryTransaction:
    """``tokend.core.ports.Transaction`` over a ``State``; unusable once its block is left."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._open = True

    def close(self) -> None:
        self._open = False

    def _live(self) -> State:
        if not self._open:
            raise RuntimeError("transaction used outside its `with` block")
        return self._state

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        state = self._live()
        row = state.tokens.get(token_hash)
        if row is None:
            return None
        return StoredRefreshToken(
            token_hash=token_hash,
            family=state.families[row.family_id],
            created_at=row.created_at,
            expires_at=row.expires_at,
            spent_at=row.spent_at,
            successor_hash=row.successor_hash,
        )

    def spend_refresh_token(self, token_hash: bytes, *, at: float, successor_hash: bytes) -> bool:
        state = self._live()
        row = state.tokens.get(token_hash)
        if row is None or row.spent_at is not None:
            return False
        state.tokens[token_hash] = replace(row, spent_at=at, successor_hash=successor_hash)
        return True

    def rotate_refresh_token(
        self,
        token_hash: bytes,
        *,
        at: float,
        successor_hash: bytes,
        family_id: str,
        expires_at: float,
    ) -> bool:
        if not self.spend_refresh_token(token_hash, at=at, successor_hash=successor_hash):
            return False
        self.insert_refresh_token(
            successor_hash, family_id=family_id, created_at=at, expires_at=expires_at
        )
        return True

    def insert_refresh_token(
        self, token_hash: bytes, *, family_id: str, created_at: float, expires_at: float
    ) -> None:
        state = self._live()
        if token_hash in state.tokens:
            raise ValueError("duplicate refresh token hash")  # the SQL primary key
        if family_id not in state.families:
            raise ValueError(f"unknown family {family_id!r}")  # the SQL foreign key
        state.tokens[token_hash] = TokenRow(family_id, created_at, expires_at)

    def is_refresh_token_live(self, token_hash: bytes) -> bool:
        row = self._live().tokens.get(token_hash)
        return row is not None and row.spent_at is None

    def count_grace_retry(self, token_hash: bytes, *, limit: int) -> bool:
        state = self._live()
        row = state.tokens.get(token_hash)
        if row is None or row.grace_uses >= limit:
            return False
        state.tokens[token_hash] = replace(row, grace_uses=row.grace_uses + 1)
        return True

    def create_family(self, family: Family) -> None:
        state = self._live()
        if family.id in state.families:
            raise ValueError(f"duplicate family {family.id!r}")
        state.families[family.id] = family

    def bind_family_dpop(self, family_id: str, jkt: str) -> bool:
        state = self._live()
        family = state.families[family_id]
        if family.dpop_jkt is None:
            state.families[family_id] = replace(family, dpop_jkt=jkt)
            return True
        return family.dpop_jkt == jkt

    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool:
        state = self._live()
        if replay_hash in state.dpop_proofs:
            return False  # the SQL primary key
        state.dpop_proofs[replay_hash] = expires_at
        return True

    def revoke_family(self, family_id: str, *, at: float, reason: str) -> bool:
        state = self._live()
        family = state.families.get(family_id)
        if family is None or family.revoked_at is not None:
            return False
        state.families[family_id] = replace(family, revoked_at=at)
        state.revocation_reasons[family_id] = reason
        return True

    def record_event(self, event: SecurityEvent) -> None:
        self._live().events.append(event)

    def count_event(self, event: SecurityEvent, *, key: bytes, window: float) -> None:
        state = self._live()
        current = state.event_windows.get(key)
        if current is None or current[0] <= event.at:
            state.events.append(event)
            index = len(state.events) - 1
            state.event_windows[key] = (event.at + window, index)
            state.event_counts[index] = 1
        else:
            state.event_counts[current[1]] += 1

    def insert_authorization_code(self, code: StoredCode) -> None:
        state = self._live()
        if code.code_hash in state.codes:
            raise KeyError("duplicate authorization code")
        state.codes[code.code_hash] = code

    def find_authorization_code(self, code_hash: bytes) -> StoredCode | None:
        return self._live().codes.get(code_hash)

    def consume_authorization_code(self, code_hash: bytes, *, at: float, family_id: str) -> bool:
        state = self._live()
        code = state.codes.get(code_hash)
        if code is None or code.consumed_at is not None:
            return False
        state.codes[code_hash] = replace(code, consumed_at=at, family_id=family_id)
        return True

    def find_device_authorization(self, device_code_hash: bytes) -> StoredDevice | None:
        return next(
            (d for d in self._live().devices.values() if d.device_code_hash == device_code_hash),
            None,
        )

    def record_device_poll(self, authorization_id: str, *, at: float, interval: int) -> None:
        state = self._live()
        row = state.devices[authorization_id]
        state.devices[authorization_id] = replace(row, last_polled_at=at, interval=interval)

    def redeem_device_authorization(
        self, authorization_id: str, *, at: float, family_id: str
    ) -> bool:
        state = self._live()
        row = state.devices.get(authorization_id)
        if row is None or row.status != "approved":
            return False
        state.devices[authorization_id] = replace(row, status="redeemed", family_id=family_id)
        return True


class MemoryStore:
    """``tokend.core.ports.Store`` in memory, plus read helpers for assertions."""

    def __init__(self, clients: Iterable[Client] = ()) -> None:
        self.clients: dict[str, Client] = {c.client_id: c for c in clients}
        self.state = State()
        self.transactions_begun = 0
        self.rollbacks = 0
        self._lock = threading.Lock()

    # -- tokend.core.ports.Store -----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        with self._lock:
            self.transactions_begun += 1
            saved = self.state.copy()
            tx = MemoryTransaction(self.state)
            try:
                yield tx
            except BaseException:
                self.state = saved
                self.rollbacks += 1
                raise
            finally:
                tx.close()

    def get_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    # -- helpers for tests -----------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        self.clients[client.client_id] = client

    def snapshot(self) -> State:
        with self._lock:
            return self.state.copy()

    def token(self, plaintext: str) -> TokenRow | None:
        return self.state.tokens.get(hash_secret(plaintext))

    def family(self, family_id: str) -> Family:
        return self.state.families[family_id]

    def family_of(self, plaintext: str) -> Family:
        row = self.token(plaintext)
        assert row is not None, "unknown refresh token"
        return self.family(row.family_id)

    def tokens_of_family(self, family_id: str) -> dict[bytes, TokenRow]:
        return {h: r for h, r in self.state.tokens.items() if r.family_id == family_id}

    def events(self, kind: str | None = None) -> list[SecurityEvent]:
        return [e for e in self.state.events if kind is None or e.kind == kind]

    def event_count(self, event: SecurityEvent) -> int:
        """How many occurrences the (aggregated) event row stands for."""
        index = next(i for i, e in enumerate(self.state.events) if e is event)
        return self.state.event_counts.get(index, 1)

    def revoke(self, family_id: str, *, at: float, reason: str = "test") -> bool:
        with self.transaction() as tx:
            return tx.revoke_family(family_id, at=at, reason=reason)


# --------------------------------------------------------------------------------------------


_NO_TIME_CHECKS = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


class FakeSigner:
    """``tokend.core.ports.Signer`` with one RS256 key, signing like ``tokend.keys.ring``.

    PyJWT's own time checks are off when decoding: time belongs to the test's FrozenClock,
    and the tests assert ``iat``/``exp`` themselves.
    """

    alg = "RS256"

    def __init__(self) -> None:
        self.key = generate_private_key(self.alg)
        self.kid: str = public_jwk(self.key, self.alg)["kid"]
        self.public_key = self.key.public_key()
        # kid -> (alg, private key): RS256's above, another algorithm's made on first use.
        self.keys: dict[str, tuple[str, Any]] = {self.kid: (self.alg, self.key)}

    def _key_for(self, alg: str) -> tuple[str, Any]:
        for kid, (key_alg, key) in self.keys.items():
            if key_alg == alg:
                return kid, key
        key = generate_private_key(alg)
        kid = public_jwk(key, alg)["kid"]
        self.keys[kid] = (alg, key)
        return kid, key

    def _sign(self, claims: Mapping[str, Any], typ: str, alg: str) -> str:
        kid, key = self._key_for(alg)
        return jwt.encode(dict(claims), key, algorithm=alg, headers={"kid": kid, "typ": typ})

    def sign_access_token(self, claims: Mapping[str, Any], alg: str | None = None) -> str:
        return self._sign(claims, "at+jwt", alg or self.alg)

    def sign_id_token(self, claims: Mapping[str, Any], alg: str = "RS256") -> str:
        return self._sign(claims, "JWT", alg)

    def decode(self, token: str, *, audience: str, issuer: str) -> dict[str, Any]:
        """Verify signature (with the key the header's kid names, by that key's own
        algorithm), ``aud`` and ``iss``; return the claims."""
        alg, key = self.keys[jwt.get_unverified_header(token)["kid"]]
        return jwt.decode(
            token,
            key.public_key(),
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            options=_NO_TIME_CHECKS,
        )
