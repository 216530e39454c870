"""Errors of the client library: one class per OAuth error code, and the failures that are
not the server's answer.

Exception tree::

    ClientError
    ├── OAuthError                     the server answered with an OAuth error
    │   ├── InvalidRequest             invalid_request            RFC 6749 §5.2
    │   ├── InvalidClient              invalid_client             RFC 6749 §5.2
    │   ├── InvalidGrant               invalid_grant              RFC 6749 §5.2
    │   ├── UnauthorizedClient         unauthorized_client        RFC 6749 §5.2
    │   ├── UnsupportedGrantType       unsupported_grant_type     RFC 6749 §5.2
    │   ├── InvalidScope               invalid_scope              RFC 6749 §5.2
    │   ├── AccessDenied               access_denied              RFC 6749 §4.1.2.1
    │   ├── UnsupportedResponseType    unsupported_response_type  RFC 6749 §4.1.2.1
    │   ├── ServerError                server_error               RFC 6749 §4.1.2.1
    │   ├── TemporarilyUnavailable     temporarily_unavailable    RFC 6749 §4.1.2.1
    │   ├── InvalidToken               invalid_token              RFC 6750 §3.1
    │   ├── InsufficientScope          insufficient_scope         RFC 6750 §3.1
    │   ├── UnsupportedTokenType       unsupported_token_type     RFC 7009 §2.2.1
    │   ├── InvalidDPoPProof           invalid_dpop_proof         RFC 9449 §5, §7.1
    │   ├── UseDPoPNonce               use_dpop_nonce             RFC 9449 §8, §9
    │   ├── AuthorizationPending       authorization_pending      RFC 8628 §3.5
    │   ├── SlowDown                   slow_down                  RFC 8628 §3.5
    │   └── ExpiredToken               expired_token              RFC 8628 §3.5
    ├── TransportError                 no answer: connecting, sending or receiving failed
    ├── InvalidResponse                an answer that is not what the RFCs say it must be
    ├── EndpointNotSupported           the server's metadata does not offer the endpoint
    └── MissingToken                   RefreshingAuth's store holds no token yet

A code without a class of its own (``login_required``, an extension's) raises ``OAuthError``
itself, with ``error`` set to the code.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERRORS_BY_CODE",
    "AccessDenied",
    "AuthorizationPending",
    "ClientError",
    "EndpointNotSupported",
    "ExpiredToken",
    "InsufficientScope",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidScope",
    "InvalidToken",
    "MissingToken",
    "OAuthError",
    "ServerError",
    "SlowDown",
    "TemporarilyUnavailable",
    "TransportError",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedResponseType",
    "UnsupportedTokenType",
    "UseDPoPNonce",
    "error_from",
]


class ClientError(Exception):
    """Base of every error ``tokend.client`` raises."""


class OAuthError(ClientError):
    """The server answered with an OAuth error (RFC 6749 §5.2).

    ``str(exc)`` is the server's ``error_description``, or a default that names the code.
    """

    code: ClassVar[str | None] = None
    default_message: ClassVar[str] = "The authorization server returned an error."

    def __init__(
        self,
        error: str | None = None,
        error_description: str | None = None,
        *,
        error_uri: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.error: str = error or self.code or "unknown_error"
        self.error_description = error_description
        self.error_uri = error_uri
        self.status_code = status_code
        super().__init__(error_description or self._default(self.error))

    def _default(self, error: str) -> str:
        if self.code is None:
            return f"The authorization server returned the error {error!r}."
        return self.default_message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(error={self.error!r}, "
            f"error_description={self.error_description!r}, status_code={self.status_code!r})"
        )


class InvalidRequest(OAuthError):
    """A parameter is missing, repeated or malformed."""

    code = "invalid_request"
    default_message = "The request is missing a required parameter or is otherwise malformed."


class InvalidClient(OAuthError):
    """Client authentication failed: unknown client, missing or wrong secret."""

    code = "invalid_client"
    default_message = "Client authentication failed."


class InvalidGrant(OAuthError):
    """The refresh token or code is invalid, expired, revoked, or another client's."""

    code = "invalid_grant"
    default_message = "The refresh token or authorization code is invalid or has expired."


class UnauthorizedClient(OAuthError):
    """The client may not use this grant type."""

    code = "unauthorized_client"
    default_message = "The client is not authorized to use this grant type."


class UnsupportedGrantType(OAuthError):
    """The server does not support this grant type."""

    code = "unsupported_grant_type"
    default_message = "The authorization server does not support this grant type."


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown, or exceeds what was granted."""

    code = "invalid_scope"
    default_message = "The requested scope is invalid or exceeds the granted scope."


class AccessDenied(OAuthError):
    """The user or the server refused the authorization request."""

    code = "access_denied"
    default_message = "The user or the authorization server denied the request."


class UnsupportedResponseType(OAuthError):
    """The server does not support this response_type."""

    code = "unsupported_response_type"
    default_message = "The authorization server does not support this response type."


class ServerError(OAuthError):
    """The server met an unexpected condition."""

    code = "server_error"
    default_message = "The authorization server encountered an unexpected condition."


class TemporarilyUnavailable(OAuthError):
    """The server is overloaded or under maintenance; retrying later may succeed."""

    code = "temporarily_unavailable"
    default_message = "The authorization server is temporarily unavailable; retry later."


class InvalidToken(OAuthError):
    """The access token is expired, revoked, malformed or otherwise invalid."""

    code = "invalid_token"
    default_message = "The access token is invalid."


class InsufficientScope(OAuthError):
    """The access token does not grant the scope the resource needs."""

    code = "insufficient_scope"
    default_message = "The access token does not grant the scope this request needs."


class UnsupportedTokenType(OAuthError):
    """The server cannot revoke tokens of this type."""

    code = "unsupported_token_type"
    default_message = "The authorization server cannot revoke this type of token."


class InvalidDPoPProof(OAuthError):
    """The server refused the DPoP proof (malformed, stale ``iat``, replayed, wrong key...)."""

    code = "invalid_dpop_proof"
    default_message = "The DPoP proof is invalid."


class UseDPoPNonce(OAuthError):
    """The server wants a DPoP nonce in the proof, and the retry with it was refused too."""

    code = "use_dpop_nonce"
    default_message = "The server requires a DPoP nonce."


class AuthorizationPending(OAuthError):
    """The user has not yet approved (or denied) the device authorization: poll again after
    the interval. ``OAuthClient.poll_device_token`` does."""

    code = "authorization_pending"
    default_message = "The user has not yet completed the device authorization."


class SlowDown(OAuthError):
    """A device code was polled too fast: poll again, with the interval 5 s longer for this
    and every later poll (RFC 8628 §3.5). ``OAuthClient.poll_device_token`` does."""

    code = "slow_down"
    default_message = "The device code was polled too often; wait 5 seconds longer."


class ExpiredToken(OAuthError):
    """The device code expired before the user approved it: start a new device
    authorization. Raised for the server's ``expired_token``, and by
    ``poll_device_token`` itself once the device code's ``expires_in`` has passed."""

    code = "expired_token"
    default_message = "The device code has expired; start a new device authorization."


class TransportError(ClientError):
    """The request could not be sent or its answer was not received (connection refused,
    timeout, connection reset). The server may or may not have processed it; for a refresh,
    retrying with the same refresh token is safe inside the server's grace window."""


class InvalidResponse(ClientError):
    """An answer that breaks the protocol: not JSON, no ``access_token``, an ``issuer``
    that is not the one asked for, a ``state`` that does not match."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class EndpointNotSupported(ClientError):
    """The server's discovery metadata does not advertise the endpoint this call needs."""


class MissingToken(ClientError):
    """``RefreshingAuth`` found no token in its store: sign the user in and save one first."""


# The client's own table of the codes it knows (tokend.core.errors has the server's, a
# subset): tokend.client must not import server code, and it must understand every code of
# the RFCs whichever server answers.
ERRORS_BY_CODE: dict[str, type[OAuthError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidClient,
        InvalidGrant,
        UnauthorizedClient,
        UnsupportedGrantType,
        InvalidScope,
        AccessDenied,
        UnsupportedResponseType,
        ServerError,
        TemporarilyUnavailable,
        InvalidToken,
        InsufficientScope,
        UnsupportedTokenType,
        InvalidDPoPProof,
        UseDPoPNonce,
        AuthorizationPending,
        SlowDown,
        ExpiredToken,
    )
    if cls.code is not None
}


def error_from(
    error: str,
    error_description: str | None = None,
    *,
    error_uri: str | None = None,
    status_code: int | None = None,
) -> OAuthError:
    """The exception for an error code off the wire: its class, else ``OAuthError``."""
    cls = ERRORS_BY_CODE.get(error, OAuthError)
    return cls(error, error_description, error_uri=error_uri, status_code=status_code)
