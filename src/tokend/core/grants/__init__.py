"""One module per grant type; each exposes a class with ``grant_type`` and ``handle``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

from tokend.core.errors import InvalidDPoPProof, InvalidRequest
from tokend.core.events import EventKind
from tokend.core.models import Client, DPoPProof, SecurityEvent, TokenRequest, TokenResponse
from tokend.core.ports import Transaction


class Grant(Protocol):
    grant_type: ClassVar[str]

    def handle(self, client: Client, request: TokenRequest, now: float) -> TokenResponse:
        """Run the grant of ``request`` for ``client``, authenticated and allowed to use it
        (``TokenService``); raise OAuthError. With a checked DPoP proof (``request.dpop``,
        RFC 9449 §5), the access token is bound to its key."""
        ...


def require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise InvalidRequest(f"The {name} parameter is required.")
    return value


def record_proof(tx: Transaction, dpop: DPoPProof | None) -> None:
    """RFC 9449 §11.1: the first statement of a grant's transaction, so that a replayed
    proof is refused before anything else is read or written (and nothing changes)."""
    if dpop is not None and not tx.record_dpop_proof(
        dpop.replay_hash, expires_at=dpop.replay_until
    ):
        raise InvalidDPoPProof("The DPoP proof has been used before.")


def replayed(
    tx: Transaction,
    kind: EventKind,
    *,
    now: float,
    client_id: str,
    family_id: str | None,
    user_id: str | None,
    address: str | None,
    detail: Mapping[str, object] | None = None,
) -> None:
    """A one-time code (authorization code, device code) presented again: it leaked, so
    what its first use issued is revoked (RFC 6749 §4.1.2), and the replay is recorded, in
    the grant's transaction. The caller then refuses with ``invalid_grant``."""
    if family_id is not None:
        tx.revoke_family(family_id, at=now, reason=kind)
    tx.record_event(
        SecurityEvent(
            kind,
            now,
            client_id=client_id,
            family_id=family_id,
            user_id=user_id,
            detail=detail or {},
            address=address,
        )
    )
