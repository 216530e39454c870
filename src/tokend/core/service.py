"""The token endpoint's domain entry point (RFC 6749 §3.2), free of HTTP.

``TokenService.token(TokenRequest) -> TokenResponse`` or raises ``OAuthError``. The web
layer only parses the request (and checks its DPoP proof), calls this, and serialises the
result.

The order of the checks is part of the contract: client authentication first
(``invalid_client``, before anything about the request is revealed), then the grant type
(``unsupported_grant_type``, ``unauthorized_client``), then the DPoP server nonce
(``use_dpop_nonce``, RFC 9449 §8: required for this client by its registration or for
every client by the Policy), and only then the grant, whose transaction records the
proof against replay. So a request refused for its nonce has changed nothing (its proof's
``jti`` is not recorded, no token is spent or rotated), and the client's retry, with a new
proof carrying the nonce, is a first attempt.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokend.core.client_auth import authenticate_client
from tokend.core.clock import Clock
from tokend.core.errors import (
    InvalidRequest,
    UnauthorizedClient,
    UnsupportedGrantType,
    UseDPoPNonce,
)
from tokend.core.grants import Grant
from tokend.core.models import Policy, TokenRequest, TokenResponse
from tokend.core.ports import Store


class TokenService:
    __slots__ = ("_clock", "_grants", "_policy", "_store")

    def __init__(
        self, *, store: Store, grants: Iterable[Grant], clock: Clock, policy: Policy
    ) -> None:
        self._store = store
        self._clock = clock
        self._policy = policy
        self._grants: dict[str, Grant] = {g.grant_type: g for g in grants}

    @property
    def grant_types(self) -> tuple[str, ...]:
        return tuple(self._grants)

    def token(self, request: TokenRequest) -> TokenResponse:
        client = authenticate_client(request.credentials, self._store.get_client)
        grant_type = request.params.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("The grant_type parameter is required.")
        grant = self._grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType()
        if grant_type not in client.grant_types:
            raise UnauthorizedClient()
        proof = request.dpop
        if proof is not None and not proof.nonce_ok and self._policy.dpop_nonce_required(client):
            raise UseDPoPNonce()  # before the grant: nothing recorded, spent or rotated
        return grant.handle(client, request, self._clock.now())
