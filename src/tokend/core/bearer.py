"""Bearer access tokens at a protected resource (RFC 6750) and the checks of a JWT access
token's claims (RFC 9068 §4), after its signature has been verified.

Errors (RFC 6750 §3.1), both ``OAuthError``s; the web layer adds the ``WWW-Authenticate:
Bearer`` challenge::

    OAuthError
    ├── InvalidToken        401  expired, revoked, malformed or otherwise invalid
    └── InsufficientScope   403  valid, but without the scope the resource needs
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from tokend.core.errors import InvalidScope, OAuthError
from tokend.core.models import Policy
from tokend.core.scopes import parse_scope

# RFC 9068 §4: "Resource servers MUST verify that the typ header value is "at+jwt" or
# "application/at+jwt" and reject tokens carrying any other value."
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: the access token is expired, revoked, malformed or invalid."""

    error = "invalid_token"
    status_code = 401
    default_description = "The access token is invalid."


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: the request requires higher privileges than the token provides."""

    error = "insufficient_scope"
    status_code = 403
    default_description = "The access token does not grant the scope this resource requires."

    def __init__(self, scope: str, description: str | None = None) -> None:
        super().__init__(description)
        self.scope = scope


class TokenVerifier(Protocol):
    def verify(self, token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """The header and claims of a compact JWS whose signature verifies with one of our
        published keys, chosen by ``kid`` and used only with that key's own algorithm.
        Raises ``InvalidToken`` for anything else (malformed, unknown ``kid``, another
        ``alg``, bad signature). Checks no claim."""
        ...


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token: whose it is and what it grants."""

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    family_id: str | None  # ``sid``: the token family; None for client_credentials tokens
    expires_at: float
    jkt: str | None = None  # ``cnf.jkt``: the DPoP key the token is bound to (RFC 9449 §6)


class AccessTokenCheck:
    """Our access tokens as every endpoint that accepts one reads them: the signature
    (``TokenVerifier``), then ``check_access_token`` against this server's issuer and
    audience (``Policy.access_token_audience``)."""

    __slots__ = ("_audience", "_issuer", "_verifier")

    def __init__(self, verifier: TokenVerifier, policy: Policy) -> None:
        self._verifier = verifier
        self._issuer = policy.issuer
        self._audience = policy.access_token_audience

    def check(self, token: str, now: float) -> tuple[AccessToken, Mapping[str, Any]]:
        """The verified token and its claims; ``InvalidToken`` for anything else. The deny
        list is the caller's next step (``check_not_revoked``), where it applies."""
        header, claims = self._verifier.verify(token)
        access = check_access_token(
            header, claims, issuer=self._issuer, audience=self._audience, now=now
        )
        return access, claims


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_access_token(
    header: Mapping[str, Any],
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
) -> AccessToken:
    """RFC 9068 §4 validation of a token whose signature is already verified."""
    if header.get("typ") not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("The token is not an access token.")
    if claims.get("iss") != issuer:
        raise InvalidToken("The access token was issued by another issuer.")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise InvalidToken("The access token is meant for another audience.")
    exp = claims.get("exp")
    if not _is_number(exp):
        raise InvalidToken("The access token has no valid expiry.")
    # RFC 7519 §4.1.4: the current time MUST be before the expiration time.
    if now >= exp:
        raise InvalidToken("The access token has expired.")
    nbf = claims.get("nbf")
    if nbf is not None and (not _is_number(nbf) or now < nbf):
        raise InvalidToken("The access token is not valid yet.")
    sub, client_id, scope = claims.get("sub"), claims.get("client_id"), claims.get("scope", "")
    sid = claims.get("sid")
    if not (isinstance(sub, str) and sub and isinstance(client_id, str) and client_id):
        raise InvalidToken("The access token lacks its subject or client.")
    if not isinstance(scope, str) or not (sid is None or (isinstance(sid, str) and sid)):
        raise InvalidToken("The access token is malformed.")
    try:
        scopes = parse_scope(scope)
    except InvalidScope:
        raise InvalidToken("The access token is malformed.") from None
    jkt = None
    cnf = claims.get("cnf")
    if cnf is not None:
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if not (isinstance(jkt, str) and jkt):
            raise InvalidToken("The access token is malformed.")
    return AccessToken(sub, client_id, scopes, sid, float(exp), jkt)


def check_binding(token: AccessToken, dpop_jkt: str | None) -> None:
    """RFC 9449 §7: a DPoP-bound token (``cnf.jkt``) is accepted only with the DPoP scheme
    and a proof of that key (``dpop_jkt``: the thumbprint of the request's checked proof,
    None for the Bearer scheme); an unbound token never with the DPoP scheme."""
    if token.jkt is None:
        if dpop_jkt is not None:
            raise InvalidToken("The access token is not bound to a DPoP key: use Bearer.")
    elif dpop_jkt is None:
        # §7.2: a bound token sent as a bearer token is refused (it may have been stolen).
        raise InvalidToken("The access token is bound to a DPoP key: use the DPoP scheme.")
    elif not hmac.compare_digest(token.jkt, dpop_jkt):
        raise InvalidToken("The DPoP proof is made with another key than the token is bound to.")


class RevokedAccessTokens(Protocol):
    def is_access_token_revoked(self, jti: str) -> bool:
        """True while the access token with this ``jti`` is on the deny list (RFC 7009 §2:
        revoked by its client at ``POST /auth/v2/revoke``, kept until it would expire)."""
        ...


def check_not_revoked(claims: Mapping[str, Any], deny_list: RevokedAccessTokens) -> None:
    """The deny-list step of validating an access token, after ``check_access_token`` (so
    that an expired or foreign token costs no lookup): ``InvalidToken`` once its ``jti``
    has been revoked. Every endpoint that accepts an access token calls this."""
    jti = claims.get("jti")
    if isinstance(jti, str) and jti and deny_list.is_access_token_revoked(jti):
        raise InvalidToken("The access token has been revoked.")
