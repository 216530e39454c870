"""Access token claim checks (core/bearer.py, RFC 9068 §4) and the RFC 6750 §3.1 errors."""

from __future__ import annotations

from typing import Any

import pytest

from tokend.core.bearer import (
    AccessToken,
    InsufficientScope,
    InvalidToken,
    check_access_token,
)
from tokend.core.errors import OAuthError

ISSUER = "https://issuer.test"
NOW = 1_800_000_000.0
HEADER = {"alg": "RS256", "kid": "k1", "typ": "at+jwt"}
CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "sub": "user-1",
    "aud": ISSUER,
    "exp": int(NOW) + 60,
    "iat": int(NOW),
    "jti": "j",
    "client_id": "web",
    "scope": "openid email",
    "sid": "fam-1",
}
MISSING = object()


def check(header: dict[str, Any] | None = None, **changes: Any) -> AccessToken:
    claims = {k: v for k, v in {**CLAIMS, **changes}.items() if v is not MISSING}
    return check_access_token(
        header if header is not None else HEADER, claims, issuer=ISSUER, audience=ISSUER, now=NOW
    )


def test_valid_token() -> None:
    assert check() == AccessToken(
        subject="user-1",
        client_id="web",
        scopes=("openid", "email"),
        family_id="fam-1",
        expires_at=NOW + 60,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": ["https://other.test", ISSUER]},  # RFC 7519 §4.1.3: an array holding us
        {"typ": "application/at+jwt"},  # RFC 9068 §4
        {"sid": MISSING},  # client_credentials: no family (the caller decides)
        {"scope": MISSING},  # no scope at all
        {"exp": NOW + 0.5},
        {"nbf": NOW},
        {"nbf": NOW - 10},
    ],
    ids=repr,
)
def test_accepted_variants(changes: dict[str, Any]) -> None:
    changes = dict(changes)
    header = {**HEADER, "typ": changes.pop("typ")} if "typ" in changes else None
    token = check(header, **changes)
    assert token.subject == "user-1"


def test_without_sid_or_scope() -> None:
    assert check(sid=MISSING).family_id is None
    assert check(scope=MISSING).scopes == ()


@pytest.mark.parametrize(
    ("header", "changes"),
    [
        ({**HEADER, "typ": "JWT"}, {}),  # an ID token is not an access token
        ({"alg": "RS256", "kid": "k1"}, {}),
        ({**HEADER, "typ": "AT+JWT "}, {}),
        (None, {"iss": "https://evil.test"}),
        (None, {"iss": MISSING}),
        (None, {"aud": "https://other.test"}),
        (None, {"aud": ["https://other.test"]}),
        (None, {"aud": MISSING}),
        (None, {"exp": int(NOW)}),  # RFC 7519 §4.1.4: now must be *before* exp
        (None, {"exp": int(NOW) - 1}),
        (None, {"exp": MISSING}),
        (None, {"exp": str(int(NOW) + 60)}),
        (None, {"exp": True}),
        (None, {"nbf": NOW + 1}),
        (None, {"nbf": "0"}),
        (None, {"sub": MISSING}),
        (None, {"sub": ""}),
        (None, {"sub": 42}),
        (None, {"client_id": MISSING}),
        (None, {"client_id": ["web"]}),
        (None, {"scope": ["openid"]}),
        (None, {"scope": 'openid "quoted"'}),
        (None, {"sid": ""}),
        (None, {"sid": 7}),
    ],
    ids=repr,
)
def test_refused(header: dict[str, Any] | None, changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken) as info:
        check(header, **changes)
    assert info.value.description  # a public reason, no token content
    assert "user-1" not in info.value.description


def test_errors_are_rfc_6750_codes() -> None:
    assert issubclass(InvalidToken, OAuthError) and issubclass(InsufficientScope, OAuthError)
    invalid = InvalidToken()
    assert (invalid.status_code, invalid.error) == (401, "invalid_token")
    assert invalid.to_dict() == {
        "error": "invalid_token",
        "error_description": InvalidToken.default_description,
    }
    scope = InsufficientScope("openid")
    assert (scope.status_code, scope.error, scope.scope) == (403, "insufficient_scope", "openid")
