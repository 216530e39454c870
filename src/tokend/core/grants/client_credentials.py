"""The client credentials grant, RFC 6749 §4.4: a confidential client acting for itself.

No refresh token (§4.4.3: "A refresh token SHOULD NOT be included"); the access token's
``sub`` is the client_id (RFC 9068 §2.2) and it lives ``TOKEND_CLIENT_CREDENTIALS_TTL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from tokend.core.errors import InvalidScope, UnauthorizedClient
from tokend.core.minting import TokenMinter
from tokend.core.models import Client, Policy, TokenResponse
from tokend.core.scopes import OFFLINE_SCOPES, OPENID, parse_scope

USER_ONLY_SCOPES = frozenset({OPENID, *OFFLINE_SCOPES})


class ClientCredentialsGrant:
    grant_type: ClassVar[str] = "client_credentials"

    __slots__ = ("_minter", "_policy")

    def __init__(self, *, minter: TokenMinter, policy: Policy) -> None:
        self._minter = minter
        self._policy = policy

    def handle(self, client: Client, params: Mapping[str, str], now: float) -> TokenResponse:
        if client.public:
            # §4.4: "The client credentials grant type MUST only be used by confidential clients."
            raise UnauthorizedClient("Public clients cannot use the client_credentials grant.")
        allowed = tuple(s for s in client.scopes if s not in USER_ONLY_SCOPES)
        requested = parse_scope(params.get("scope"))
        if requested:
            if any(s not in allowed for s in requested):
                raise InvalidScope("The requested scope is not allowed for this client.")
            scopes = requested
        else:
            scopes = allowed
        return self._minter.respond(
            client=client,
            subject=client.client_id,
            scopes=scopes,
            now=now,
            ttl=self._policy.client_credentials_ttl,
        )
