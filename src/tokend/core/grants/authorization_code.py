"""The authorization code grant, RFC 6749 §4.1.3, with PKCE (RFC 7636 §4.6) and OIDC Core
§3.1.3. The code was issued by ``tokend.web.pages`` after sign-in and consent.

- the code MUST have been issued to the authenticated client (§4.1.3);
- ``redirect_uri`` MUST be identical to the one of the authorization request (§4.1.3);
- the PKCE verifier MUST match the challenge; a verifier for a code issued without a
  challenge is refused (RFC 9700 §2.1.1, PKCE downgrade);
- a code used twice: "the authorization server MUST deny the request and SHOULD revoke
  (when possible) all tokens previously issued based on that authorization code" (§4.1.2);
- a refresh token only when ``offline``/``offline_access`` was granted (DESIGN.md);
- with a DPoP proof (RFC 9449 §5) the access token is bound to its key, and so is the new
  family's refresh token for a public client (a confidential one is bound by its
  authentication already); a replayed proof changes nothing.
"""

from __future__ import annotations

from typing import ClassVar

from tokend.core import pkce
from tokend.core.authorization import CODE_PREFIX
from tokend.core.errors import InvalidGrant, OAuthError
from tokend.core.events import EventKind
from tokend.core.grants import record_proof, replayed, require
from tokend.core.issuance import FamilyIssuer
from tokend.core.models import Client, TokenRequest, TokenResponse
from tokend.core.ports import Store
from tokend.core.secrets import hash_secret, new_id

_INVALID = "The authorization code is invalid, expired or already used."


class AuthorizationCodeGrant:
    grant_type: ClassVar[str] = "authorization_code"

    __slots__ = ("_issuer", "_store")

    def __init__(self, *, store: Store, issuer: FamilyIssuer) -> None:
        self._store = store
        self._issuer = issuer

    def handle(self, client: Client, request: TokenRequest, now: float) -> TokenResponse:
        params, dpop = request.params, request.dpop
        code = require(params, "code")
        redirect_uri = require(params, "redirect_uri")
        verifier = params.get("code_verifier")
        if not code.startswith(CODE_PREFIX) or len(code) > 128:
            raise InvalidGrant(_INVALID)
        code_hash = hash_secret(code)

        jkt = None if dpop is None else dpop.jkt
        rejection: OAuthError | None = None
        with self._store.transaction() as tx:
            record_proof(tx, dpop)
            stored = tx.find_authorization_code(code_hash)
            if stored is None or stored.client_id != client.client_id:
                raise InvalidGrant(_INVALID)
            if stored.consumed_at is not None:
                replayed(
                    tx,
                    EventKind.AUTHORIZATION_CODE_REPLAY,
                    now=now,
                    client_id=client.client_id,
                    family_id=stored.family_id,
                    user_id=stored.user_id,
                    address=request.address,
                    detail={"consumed_at": stored.consumed_at},
                )
                rejection = InvalidGrant(_INVALID)
            elif now >= stored.expires_at:
                raise InvalidGrant(_INVALID)
            elif redirect_uri != stored.redirect_uri:
                raise InvalidGrant("The redirect_uri does not match the authorization request.")
            elif stored.code_challenge is None:
                if verifier is not None:
                    raise InvalidGrant("No code_challenge was sent for this code.")
            elif not pkce.verify(verifier, stored.code_challenge):
                raise InvalidGrant("The code_verifier does not match the code_challenge.")
            if rejection is None:
                family_id = new_id()
                if not tx.consume_authorization_code(code_hash, at=now, family_id=family_id):
                    raise InvalidGrant(_INVALID)
                family, refresh_token = self._issuer.start(
                    tx,
                    client=client,
                    user_id=stored.user_id,
                    subject=stored.subject,
                    scopes=stored.scopes,
                    now=now,
                    auth_time=stored.auth_time,
                    family_id=family_id,
                    dpop_jkt=jkt if client.public else None,
                )
        if rejection is not None:
            raise rejection
        return self._issuer.respond(
            client=client,
            family=family,
            refresh_token=refresh_token,
            now=now,
            nonce=stored.nonce,
            dpop_jkt=jkt,
        )
