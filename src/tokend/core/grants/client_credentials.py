"""The client credentials grant, RFC 6749 §4.4: a confidential client acting for itself.

No refresh token (§4.4.3: "A refresh token SHOULD NOT be included"); the access token's
``sub`` is the client_id (RFC 9068 §2.2) and it lives ``TOKEND_CLIENT_CREDENTIALS_TTL``.
With a DPoP proof the access token is bound to its key (RFC 9449 §5); the proof is recorded
against replay in a transaction of its own, the only storage work of this grant.
"""

from __future__ import annotations

from typing import ClassVar

from tokend.core.errors import InvalidScope, UnauthorizedClient
from tokend.core.grants import record_proof
from tokend.core.minting import TokenMinter
from tokend.core.models import Client, Policy, TokenRequest, TokenResponse
from tokend.core.ports import Store
from tokend.core.scopes import OFFLINE_SCOPES, OPENID, parse_scope

USER_ONLY_SCOPES = frozenset({OPENID, *OFFLINE_SCOPES})


class ClientCredentialsGrant:
    grant_type: ClassVar[str] = "client_credentials"

    __slots__ = ("_minter", "_policy", "_store")

    def __init__(self, *, store: Store, minter: TokenMinter, policy: Policy) -> None:
        self._store = store
        self._minter = minter
        self._policy = policy

    def handle(self, client: Client, request: TokenRequest, now: float) -> TokenResponse:
        params, dpop = request.params, request.dpop
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
        if dpop is not None:
            with self._store.transaction() as tx:
                record_proof(tx, dpop)
        return self._minter.respond(
            client=client,
            subject=client.client_id,
            scopes=scopes,
            now=now,
            ttl=self._policy.client_credentials_ttl,
            dpop_jkt=None if dpop is None else dpop.jkt,
        )
