"""OpenID Provider metadata (OIDC Discovery 1.0 §3) and RFC 8414 server metadata.

Only what this server actually implements is advertised.
"""

from __future__ import annotations

from tokend.core.dpop import ALGS as DPOP_ALGS
from tokend.core.jose import SIGNING_ALGS
from tokend.core.scopes import OFFLINE_SCOPES, OPENID

SCOPES_SUPPORTED = [
    OPENID,
    *sorted(OFFLINE_SCOPES),
    "profile",
    "email",
    "phone",
    "picture",
    "names",
    "user_id",
]


def discovery_document(issuer: str, *, grant_types: tuple[str, ...]) -> dict[str, object]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth/v2/authorize",
        "token_endpoint": f"{issuer}/auth/v2/token",
        "userinfo_endpoint": f"{issuer}/auth/v2/users/retrieve",
        "jwks_uri": f"{issuer}/auth/jwks",
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "grant_types_supported": sorted(grant_types),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        # RFC 7009 / RFC 8414 §2: public clients revoke their own tokens with client_id alone.
        "revocation_endpoint": f"{issuer}/auth/v2/revoke",
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        # RFC 7662 / RFC 8414 §2: only confidential clients (resource servers) introspect.
        "introspection_endpoint": f"{issuer}/auth/v2/introspect",
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        # RFC 8628 §4: client authentication there is the token endpoint's.
        "device_authorization_endpoint": f"{issuer}/auth/v2/device/authorize",
        "subject_types_supported": ["public", "pairwise"],
        # Any client may be registered with any of these (`clients create --id-token-alg`);
        # the ring makes a key for each on first need. No *_endpoint_auth_signing_alg_values
        # (no JWT client authentication) nor userinfo_signing_alg_values (plain JSON UserInfo).
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
        # RFC 9449 §5.1: the JWS algorithms accepted in DPoP proofs.
        "dpop_signing_alg_values_supported": list(DPOP_ALGS),
        "claims_supported": [
            *("iss", "sub", "aud", "exp", "iat", "auth_time", "at_hash", "sid", "nonce"),
            # UserInfo (tokend.core.userinfo): Didit's objects and OIDC Core §5.4's claims
            *("names", "given_name", "family_name", "name", "picture"),
            *("email", "email_verified", "phone", "phone_number", "phone_number_verified"),
        ],
        "service_documentation": f"{issuer}/openapi.json",
    }
