"""The OAuthError hierarchy (tokend.core.errors): one class per RFC 6749 §5.2 code."""

from __future__ import annotations

import pytest

from tokend.core import errors
from tokend.core.errors import ERRORS_BY_CODE, OAuthError

EXPECTED = [
    ("invalid_request", errors.InvalidRequest, 400),
    ("invalid_client", errors.InvalidClient, 401),
    ("invalid_grant", errors.InvalidGrant, 400),
    ("unauthorized_client", errors.UnauthorizedClient, 400),
    ("unsupported_grant_type", errors.UnsupportedGrantType, 400),
    ("invalid_scope", errors.InvalidScope, 400),
    ("server_error", errors.ServerError, 500),
    ("temporarily_unavailable", errors.TemporarilyUnavailable, 503),
    ("invalid_dpop_proof", errors.InvalidDPoPProof, 400),
    ("use_dpop_nonce", errors.UseDPoPNonce, 400),
    ("authorization_pending", errors.AuthorizationPending, 400),
    ("slow_down", errors.SlowDown, 400),
    ("access_denied", errors.AccessDenied, 400),
    ("expired_token", errors.ExpiredToken, 400),
]


@pytest.mark.parametrize(("code", "cls", "status"), EXPECTED, ids=[code for code, _, _ in EXPECTED])
def test_code_class_and_status(code: str, cls: type[OAuthError], status: int) -> None:
    assert issubclass(cls, OAuthError)
    assert cls.error == code
    assert cls.status_code == status
    assert ERRORS_BY_CODE[code] is cls


def test_every_code_is_mapped_once() -> None:
    assert set(ERRORS_BY_CODE) == {code for code, _, _ in EXPECTED}


def test_body_has_public_description_and_never_debug() -> None:
    err = errors.InvalidGrant(debug="hash=abc123 family=f-1")
    assert err.to_dict() == {
        "error": "invalid_grant",
        "error_description": errors.InvalidGrant.default_description,
    }
    assert "abc123" not in str(err)
    custom = errors.InvalidScope("Nope.")
    assert custom.to_dict() == {"error": "invalid_scope", "error_description": "Nope."}
