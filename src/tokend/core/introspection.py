"""Token introspection, RFC 7662 (Didit's ``POST /auth/v2/introspect``), free of HTTP.

``IntrospectionService.introspect(credentials, params)`` returns the response object or
raises ``OAuthError`` (``invalid_client``, or ``invalid_request`` without a ``token``).

Who may ask: any authenticated *confidential* client. Introspection is how a resource server
checks a token some other client presented to it, so a client may introspect tokens issued
to other clients (RFC 7662 §2.1 and §4 leave this to the server's policy). A public client
cannot keep a secret, so it cannot authenticate here: ``invalid_client`` (401).

What it says (§2.2):

- an active **access token** (a JWT of ours, RFC 9068): ``active``, ``iss``, ``sub``, ``aud``,
  ``client_id``, ``scope``, ``exp``, ``iat``, ``jti``, ``token_type`` ("Bearer", or "DPoP"
  when the token is bound to a key, RFC 9449 §6.2), and when present ``sid``, ``auth_time``
  and ``cnf`` (RFC 7800; ``{"jkt": ...}`` for DPoP);
- an active **refresh token**: ``active``, ``iss``, ``sub`` and ``scope`` of its family,
  ``client_id``, ``exp`` (the earlier of the token's idle expiry and the family's absolute
  expiry), ``iat`` (when it was issued), ``token_type`` "refresh_token", ``sid`` (the
  family), and ``cnf.jkt`` when the family is bound to a DPoP key;
- anything else, ``{"active": false}`` and nothing more (§2.2: "the authorization server
  MUST NOT include any additional information about an inactive token"): unknown,
  malformed, expired, not ours, an ID token, a spent refresh token, a token whose family is
  revoked (by its client, its user, an operator, or reuse detection) or gone, a deny-listed
  access token, an access token of a deleted client.

``token_type_hint`` is optional and never needed (see ``tokend.core.revocation``): the two
token formats cannot be mistaken for each other. Refresh tokens are looked up with a plain
read, never the row lock the refresh grant takes, so introspection never waits for (or
holds up) a rotation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tokend.core.bearer import (
    AccessToken,
    AccessTokenCheck,
    InvalidToken,
    RevokedAccessTokens,
    TokenVerifier,
    check_not_revoked,
)
from tokend.core.client_auth import authenticate_client
from tokend.core.clock import Clock
from tokend.core.errors import InvalidClient
from tokend.core.grants import require
from tokend.core.models import Client, ClientCredentials, Family, Policy, StoredRefreshToken
from tokend.core.scopes import format_scope
from tokend.core.secrets import REFRESH_TOKEN_PREFIX, hash_secret, is_well_formed

INACTIVE: Mapping[str, bool] = {"active": False}


class IntrospectionStore(RevokedAccessTokens, Protocol):
    def get_client(self, client_id: str) -> Client | None:
        """The client, or None if unknown."""
        ...

    def peek_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        """The token with this hash and its family (with ``dpop_jkt``), or None; a plain
        read that takes no lock."""
        ...

    def peek_family(self, family_id: str) -> Family | None:
        """The family (revoked or not), or None if it does not exist (any more)."""
        ...


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def access_token_response(claims: Mapping[str, Any], token: AccessToken) -> dict[str, Any]:
    """The §2.2 response for an access token that passed every check."""
    out: dict[str, Any] = {
        "active": True,
        "iss": claims["iss"],
        "sub": token.subject,
        "aud": claims["aud"],
        "client_id": token.client_id,
        "scope": format_scope(token.scopes),
        "exp": claims["exp"],
    }
    for name in ("iat", "auth_time"):
        if _is_number(claims.get(name)):
            out[name] = claims[name]
    if isinstance(claims.get("jti"), str):
        out["jti"] = claims["jti"]
    if token.family_id is not None:
        out["sid"] = token.family_id
    cnf = claims.get("cnf")
    bound = isinstance(cnf, Mapping) and isinstance(cnf.get("jkt"), str)
    out["token_type"] = "DPoP" if bound else "Bearer"
    if isinstance(cnf, Mapping) and cnf:
        out["cnf"] = dict(cnf)
    return out


def refresh_token_response(
    stored: StoredRefreshToken, *, issuer: str, now: float
) -> dict[str, Any] | None:
    """The §2.2 response for a stored refresh token, or None when it is not active."""
    family = stored.family
    if family.revoked_at is not None or stored.spent_at is not None:
        return None
    expires_at = min(stored.expires_at, family.expires_at)
    if now >= expires_at:
        return None
    out: dict[str, Any] = {
        "active": True,
        "iss": issuer,
        "sub": family.subject,
        "client_id": family.client_id,
        "scope": format_scope(family.scopes),
        "exp": int(expires_at),
        "iat": int(stored.created_at),
        "sid": family.id,
        "token_type": "refresh_token",
    }
    if family.dpop_jkt:
        out["cnf"] = {"jkt": family.dpop_jkt}
    return out


class IntrospectionService:
    __slots__ = ("_access_tokens", "_clock", "_issuer", "_store")

    def __init__(
        self, *, store: IntrospectionStore, verifier: TokenVerifier, policy: Policy, clock: Clock
    ) -> None:
        self._store = store
        self._access_tokens = AccessTokenCheck(verifier, policy)
        self._clock = clock
        self._issuer = policy.issuer

    def introspect(
        self, credentials: ClientCredentials, params: Mapping[str, str]
    ) -> dict[str, Any]:
        client = authenticate_client(credentials, self._store.get_client)
        if client.public:
            raise InvalidClient("Only confidential clients may introspect tokens.")
        token = require(params, "token")
        now = self._clock.now()
        if is_well_formed(token, REFRESH_TOKEN_PREFIX):
            out = self._refresh_token(token, now)
        else:
            out = self._access_token(token, now)
        return dict(INACTIVE) if out is None else out

    def _refresh_token(self, token: str, now: float) -> dict[str, Any] | None:
        stored = self._store.peek_refresh_token(hash_secret(token))
        if stored is None:
            return None
        return refresh_token_response(stored, issuer=self._issuer, now=now)

    def _access_token(self, token: str, now: float) -> dict[str, Any] | None:
        try:
            access, claims = self._access_tokens.check(token, now)
            check_not_revoked(claims, self._store)
        except InvalidToken:
            return None
        if access.family_id is not None:
            # Issued from a token family: alive only while the family is (as at userinfo).
            family = self._store.peek_family(access.family_id)
            if (
                family is None
                or family.revoked_at is not None
                or family.client_id != access.client_id
                or family.subject != access.subject
            ):
                return None
        elif self._store.get_client(access.client_id) is None:
            return None  # client_credentials token of a client deleted since
        return access_token_response(claims, access)
