"""The token endpoint's domain entry point (RFC 6749 §3.2), free of HTTP.

``TokenService.token(TokenRequest) -> TokenResponse`` or raises ``OAuthError``. The web
layer only parses the request, calls this, and serialises the result.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokend.core.client_auth import authenticate_client
from tokend.core.clock import Clock
from tokend.core.errors import InvalidRequest, UnauthorizedClient, UnsupportedGrantType
from tokend.core.grants import Grant
from tokend.core.models import TokenRequest, TokenResponse
from tokend.core.ports import Store


class TokenService:
    __slots__ = ("_clock", "_grants", "_store")

    def __init__(self, *, store: Store, grants: Iterable[Grant], clock: Clock) -> None:
        self._store = store
        self._clock = clock
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
        return grant.handle(client, request.params, self._clock.now(), request.dpop)
