"""What the key ring needs from storage, owned here by its only consumer (the ring).

Implemented by ``tokend.store`` (SQLite, PostgreSQL); tests may pass any object with these
five methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tokend.core.models import SecurityEvent


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One signing key as stored: the private key sealed (``keys.material.Sealer``), the
    public JWK as JSON text, and when it stopped signing (``None`` while it is active)."""

    kid: str
    alg: str
    private_key: bytes
    public_jwk: str
    created_at: float
    retired_at: float | None


class KeyStorage(Protocol):
    def insert_key(
        self,
        record: KeyRecord,
        *,
        retire_alg: str | None = None,
        event: SecurityEvent | None = None,
    ) -> None:
        """Store a new key; with ``retire_alg``, retire the active keys of that algorithm in
        the same transaction (so at most one key per algorithm signs at any time); with
        ``event``, record that security event in the same transaction too."""
        ...

    def insert_first_key(self, record: KeyRecord) -> bool:
        """Store ``record`` unless a key of its algorithm is active, decided under the same
        writers' lock as ``insert_key``: of processes racing to make an algorithm's first
        key, exactly one stores its own. Whether it was stored."""
        ...

    def list_keys(self) -> list[KeyRecord]:
        """Every stored key, active and retired."""
        ...

    def keys_version(self) -> tuple[int, float]:
        """A cheap fingerprint of the key set (count, latest change) that changes whenever a
        key is added or retired, so a worker knows when to reload."""
        ...

    def delete_keys_retired_before(self, cutoff: float) -> int:
        """Delete keys retired before ``cutoff``; returns how many."""
        ...
