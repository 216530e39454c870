"""Building the claims of access tokens (RFC 9068) and ID tokens (OIDC Core §2, §3.1.3.6)."""

from __future__ import annotations

import hashlib
import secrets

from tokend.core.jose import b64url_encode
from tokend.core.models import Client, Policy, TokenResponse
from tokend.core.ports import Signer
from tokend.core.scopes import OPENID, format_scope

# The ID tokens of a client that registered no algorithm (OIDC Registration §2).
DEFAULT_ID_TOKEN_ALG = "RS256"


def at_hash(access_token: str, alg: str = DEFAULT_ID_TOKEN_ALG) -> str:
    """OIDC Core §3.1.3.6 (and §3.3.2.11 for ``c_hash``): the left half of the hash of the
    token's ASCII octets, base64url, with the hash of the ID token's ``alg``: SHA-256 for
    RS256, PS256 and ES256. EdDSA names no hash; for Ed25519 (tokend's only EdDSA curve)
    the OpenID Foundation's convention is SHA-512, the hash inside Ed25519, which is what
    node-oidc-provider and openid-client compute (oidc-token-hash: ``EdDSA`` with crv
    ``Ed25519`` is ``sha512``)."""
    data = access_token.encode("ascii")
    if alg == "EdDSA":
        return b64url_encode(hashlib.sha512(data).digest()[:32])
    if alg in ("RS256", "PS256", "ES256"):
        return b64url_encode(hashlib.sha256(data).digest()[:16])
    raise ValueError(f"no token hash for {alg!r}")


class TokenMinter:
    """Turns a decision of the domain ("issue these tokens") into signed JWTs."""

    __slots__ = ("_audience", "_policy", "_signer")

    def __init__(self, signer: Signer, policy: Policy) -> None:
        self._signer = signer
        self._policy = policy
        self._audience = policy.access_token_audience

    def respond(
        self,
        *,
        client: Client,
        subject: str,
        scopes: tuple[str, ...],
        now: float,
        ttl: int,
        refresh_token: str | None = None,
        family_id: str | None = None,
        auth_time: float | None = None,
        nonce: str | None = None,
        with_id_token: bool = False,
        dpop_jkt: str | None = None,
    ) -> TokenResponse:
        """With ``dpop_jkt``, a DPoP-bound access token (RFC 9449 §6): ``cnf.jkt`` and
        ``token_type`` DPoP."""
        iat = int(now)
        scope = format_scope(scopes)
        claims: dict[str, object] = {
            "iss": self._policy.issuer,
            "sub": subject,
            "aud": self._audience,
            "exp": iat + ttl,
            "iat": iat,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.client_id,
            "scope": scope,
        }
        if auth_time is not None:
            claims["auth_time"] = int(auth_time)
        if family_id is not None:
            claims["sid"] = family_id
        if dpop_jkt is not None:
            claims["cnf"] = {"jkt": dpop_jkt}
        access_token = self._signer.sign_access_token(claims, client.access_token_alg)
        id_token = None
        if with_id_token and OPENID in scopes:
            id_alg = client.id_token_alg or DEFAULT_ID_TOKEN_ALG
            id_claims: dict[str, object] = {
                "iss": self._policy.issuer,
                "sub": subject,
                "aud": client.client_id,
                "exp": iat + self._policy.access_ttl(client),
                "iat": iat,
                "at_hash": at_hash(access_token, id_alg),
            }
            if auth_time is not None:
                id_claims["auth_time"] = int(auth_time)
            if nonce is not None:
                id_claims["nonce"] = nonce
            if family_id is not None:
                id_claims["sid"] = family_id
            id_token = self._signer.sign_id_token(id_claims, id_alg)
        return TokenResponse(
            access_token=access_token,
            expires_in=ttl,
            scope=scope,
            token_type="Bearer" if dpop_jkt is None else "DPoP",
            refresh_token=refresh_token,
            id_token=id_token,
        )
