"""The read-only lookups and the access-token deny list that revocation and introspection
need (``tokend.core.revocation.RevocationStore``, ``tokend.core.introspection.
IntrospectionStore``), in memory over a World's ``MemoryStore``; and a ``TokenVerifier``
over the ``FakeSigner`` that refuses what ``tokend.keys.ring.KeyRing.verify`` refuses."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from tests.core.memory_store import FakeSigner, MemoryStore, MemoryTransaction
from tokend.core.bearer import InvalidToken
from tokend.core.models import Client, Family, SecurityEvent, StoredRefreshToken


@dataclass(frozen=True)
class Denied:
    client_id: str
    revoked_at: float
    expires_at: float


@dataclass
class StatusStore:
    """Delegates to ``inner``; keeps the deny list itself; counts what it is asked."""

    inner: MemoryStore
    denied: dict[str, Denied] = field(default_factory=dict)
    dpop_jkt: dict[str, str] = field(default_factory=dict)  # family id -> thumbprint
    write_transactions: int = 0
    peeks: int = 0

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        self.write_transactions += 1
        with self.inner.transaction() as tx:
            yield tx

    def get_client(self, client_id: str) -> Client | None:
        return self.inner.get_client(client_id)

    def _family(self, family: Family) -> Family:
        return replace(family, dpop_jkt=self.dpop_jkt.get(family.id))

    def peek_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        self.peeks += 1
        row = self.inner.state.tokens.get(token_hash)
        if row is None:
            return None
        family = self._family(self.inner.state.families[row.family_id])
        return StoredRefreshToken(
            token_hash, family, row.created_at, row.expires_at, row.spent_at, row.successor_hash
        )

    def peek_family(self, family_id: str) -> Family | None:
        family = self.inner.state.families.get(family_id)
        return None if family is None else self._family(family)

    def is_access_token_revoked(self, jti: str) -> bool:
        return jti in self.denied

    def revoke_access_token(
        self,
        jti: str,
        *,
        client_id: str,
        at: float,
        expires_at: float,
        event: SecurityEvent | None = None,
    ) -> bool:
        if jti in self.denied:
            return False
        self.denied[jti] = Denied(client_id, at, expires_at)
        if event is not None:
            self.inner.state.events.append(event)
        return True


class SignerVerifier:
    """``TokenVerifier``: signature by the FakeSigner's key, its kid and its alg only."""

    def __init__(self, signer: FakeSigner) -> None:
        self._signer = signer

    def verify(self, token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self._signer.kid or header.get("alg") != self._signer.alg:
                raise InvalidToken()
            claims = jwt.decode(
                token,
                self._signer.public_key,
                algorithms=[self._signer.alg],
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise InvalidToken() from None
        return header, claims
