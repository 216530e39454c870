"""OAuth 2.0 errors, one class per RFC 6749 §5.2 code (plus the few other RFC codes we use).

Exception tree::

    OAuthError
    ├── InvalidRequest           400  RFC 6749 §5.2
    ├── InvalidClient            401  RFC 6749 §5.2 (WWW-Authenticate added by the web layer)
    ├── InvalidGrant             400  RFC 6749 §5.2
    ├── UnauthorizedClient       400  RFC 6749 §5.2
    ├── UnsupportedGrantType     400  RFC 6749 §5.2
    ├── InvalidScope             400  RFC 6749 §5.2
    ├── ServerError              500  RFC 6749 §4.1.2.1
    ├── TemporarilyUnavailable   503  RFC 6749 §4.1.2.1
    ├── TooManyAttempts          429  temporarily_unavailable + Retry-After (core/throttle.py)
    ├── InvalidDPoPProof         400  RFC 9449 §5 (401 + WWW-Authenticate at a resource)
    ├── UseDPoPNonce             400  RFC 9449 §8 (401 at a resource; DPoP-Nonce header)
    ├── AuthorizationPending     400  RFC 8628 §3.5 (device grant polling)
    ├── SlowDown                 400  RFC 8628 §3.5
    ├── AccessDenied             400  RFC 8628 §3.5
    └── ExpiredToken             400  RFC 8628 §3.5

``description`` is the public ``error_description``: it never contains a secret, a token or
internal detail. Anything for operators goes to ``debug``, which is logged, never sent.
"""

from __future__ import annotations

from typing import ClassVar


class OAuthError(Exception):
    """Base of every error the token service reports to a client."""

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = "The request is invalid."

    def __init__(self, description: str | None = None, *, debug: str | None = None) -> None:
        self.description = description or self.default_description
        self.debug = debug
        super().__init__(self.description)

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    """Missing/repeated/malformed parameter, or more than one client authentication method."""

    error = "invalid_request"
    default_description = "The request is missing a required parameter or is otherwise malformed."


class InvalidClient(OAuthError):
    """Client authentication failed (unknown client, no or wrong credentials)."""

    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."


class InvalidGrant(OAuthError):
    """The grant (code, refresh token) is invalid, expired, revoked or not the client's."""

    error = "invalid_grant"
    # The spec's own words (spec/refresh-token.md), for the refresh grant; the code grant
    # passes its own description.
    default_description = "The refresh token was invalid or has expired."


class UnauthorizedClient(OAuthError):
    """The authenticated client may not use this grant type."""

    error = "unauthorized_client"
    default_description = "The client is not authorized to use this grant type."


class UnsupportedGrantType(OAuthError):
    """The authorization server does not support this grant type."""

    error = "unsupported_grant_type"
    default_description = "The authorization server does not support this grant type."


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown, malformed, or exceeds what was granted."""

    error = "invalid_scope"
    default_description = "The requested scope is invalid or exceeds the granted scope."


class ServerError(OAuthError):
    """An unexpected condition; details are logged, never sent."""

    error = "server_error"
    status_code = 500
    default_description = "The server encountered an unexpected condition."


class TemporarilyUnavailable(OAuthError):
    """The server is overloaded (e.g. the database stayed busy); the client may retry."""

    error = "temporarily_unavailable"
    status_code = 503
    default_description = "The server is temporarily unable to handle the request; retry."


class TooManyAttempts(OAuthError):
    """Too many failed authentications from this source (``tokend.core.throttle``).

    HTTP 429 (RFC 6585 §4) with ``Retry-After``. RFC 6749 has no code for it; the body says
    ``temporarily_unavailable``, the registered code (RFC 6749 §4.1.2.1, §11.4) whose meaning
    is "try again later", which every OAuth client library knows. Not ``invalid_client`` or
    ``invalid_grant``: the credentials were not judged, and the answer must not hint either
    way. Not ``slow_down`` (RFC 8628 §3.5: device-flow polling only, and a device client
    would just add 5 s to its interval). Not ``invalid_request``: nothing is wrong with it."""

    error = "temporarily_unavailable"
    status_code = 429
    default_description = "Too many failed attempts from your network; retry later."

    def __init__(self, retry_after: int, description: str | None = None) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class InvalidDPoPProof(OAuthError):
    """The DPoP proof is missing where needed, malformed, wrongly signed, for another request,
    out of its time window or replayed (RFC 9449 §5, §7.1)."""

    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."


class UseDPoPNonce(OAuthError):
    """The server requires a nonce in DPoP proofs: retry with the one in the ``DPoP-Nonce``
    response header (RFC 9449 §8)."""

    error = "use_dpop_nonce"
    default_description = "Resend the request with a DPoP proof carrying the server nonce."


class AuthorizationPending(OAuthError):
    """RFC 8628 §3.5: the user has not decided yet; poll again after the interval."""

    error = "authorization_pending"
    default_description = "The authorization request is still pending."


class SlowDown(OAuthError):
    """RFC 8628 §3.5: still pending, and polled too fast: the interval grows by 5 seconds
    for this and every later request."""

    error = "slow_down"
    default_description = "Polling too fast: wait 5 seconds more between requests."


class AccessDenied(OAuthError):
    """RFC 8628 §3.5: the user denied the authorization request."""

    error = "access_denied"
    default_description = "The authorization request was denied."


class ExpiredToken(OAuthError):
    """RFC 8628 §3.5: the device code expired; start a new device authorization."""

    error = "expired_token"
    default_description = "The device code has expired."


ERRORS_BY_CODE: dict[str, type[OAuthError]] = {
    cls.error: cls
    for cls in (
        InvalidRequest,
        InvalidClient,
        InvalidGrant,
        UnauthorizedClient,
        UnsupportedGrantType,
        InvalidScope,
        ServerError,
        TemporarilyUnavailable,
        InvalidDPoPProof,
        UseDPoPNonce,
        AuthorizationPending,
        SlowDown,
        AccessDenied,
        ExpiredToken,
    )
}


class AlreadyExists(Exception):
    """A unique value (client id, username) is taken."""
