"""One module per grant type; each exposes a class with ``grant_type`` and ``handle``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

from tokend.core.errors import InvalidDPoPProof, InvalidRequest
from tokend.core.models import Client, DPoPProof, TokenRequest, TokenResponse
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
