"""Typed values the client returns: token responses (RFC 6749 §5.1), server metadata
(RFC 8414 / OIDC Discovery 1.0), pending authorization requests, device authorizations
(RFC 8628 §3.2) and introspection results (RFC 7662 §2.2)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tokend.client._errors import InvalidResponse

__all__ = [
    "AuthorizationRequest",
    "DeviceAuthorization",
    "Introspection",
    "ServerMetadata",
    "TokenResponse",
]

_TOKEN_FIELDS = ("access_token", "token_type", "expires_in", "refresh_token", "scope", "id_token")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _secret(value: str | None) -> str:
    """A token as repr shows it: enough to tell two apart in a log, not enough to use."""
    return "None" if value is None else f"'{value[:10]}…'"


@dataclass(frozen=True, slots=True, repr=False)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1), with ``expires_at`` computed.

    ``expires_at`` is seconds since the epoch: the time the request was *sent* plus
    ``expires_in``, so network delay counts against the token, never for it. ``None`` when
    the server did not say. ``repr()`` shows only the first characters of each token.
    """

    access_token: str
    token_type: str = "Bearer"
    expires_in: int | None = None
    refresh_token: str | None = None
    scope: str | None = None
    id_token: str | None = None
    expires_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False)

    @classmethod
    def from_response(cls, body: object, *, sent_at: float | None = None) -> TokenResponse:
        """Validate a token endpoint's JSON body; ``sent_at`` defaults to now."""
        if not isinstance(body, Mapping):
            raise InvalidResponse("The token response is not a JSON object.")
        access_token = body.get("access_token")
        token_type = body.get("token_type")
        if not isinstance(access_token, str) or not access_token:
            raise InvalidResponse("The token response has no access_token.")
        if not isinstance(token_type, str) or not token_type:
            raise InvalidResponse("The token response has no token_type.")
        expires_in = body.get("expires_in")
        if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
            expires_in = int(expires_in)  # some servers send a string; RFC 6749 says number
        if expires_in is not None and (
            isinstance(expires_in, bool) or not isinstance(expires_in, int | float)
        ):
            raise InvalidResponse("The token response has an invalid expires_in.")
        for name in ("refresh_token", "scope", "id_token"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidResponse(f"The token response has an invalid {name}.")
        start = time.time() if sent_at is None else sent_at
        return cls(
            access_token=access_token,
            token_type=token_type,
            expires_in=None if expires_in is None else int(expires_in),
            refresh_token=body.get("refresh_token") or None,
            scope=body.get("scope"),
            id_token=body.get("id_token"),
            expires_at=None if expires_in is None else start + int(expires_in),
            extra=MappingProxyType({k: v for k, v in body.items() if k not in _TOKEN_FIELDS}),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenResponse:
        """Load what ``to_dict`` saved (``expires_at`` is kept, not recomputed)."""
        token = cls.from_response(data, sent_at=0.0)
        expires_at = data.get("expires_at")
        if expires_at is not None and not isinstance(expires_at, int | float):
            raise InvalidResponse("The saved token has an invalid expires_at.")
        extra = {k: v for k, v in token.extra.items() if k != "expires_at"}
        return cls(
            access_token=token.access_token,
            token_type=token.token_type,
            expires_in=token.expires_in,
            refresh_token=token.refresh_token,
            scope=token.scope,
            id_token=token.id_token,
            expires_at=None if expires_at is None else float(expires_at),
            extra=MappingProxyType(extra),
        )

    def to_dict(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 fields plus ``expires_at``: what a ``TokenStore`` saves."""
        out: dict[str, Any] = {"access_token": self.access_token, "token_type": self.token_type}
        for name in ("expires_in", "refresh_token", "scope", "id_token", "expires_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple((self.scope or "").split())

    def is_expired(self, *, skew: float = 0.0, now: float | None = None) -> bool:
        """True when the access token expires within ``skew`` seconds (never when the
        server gave no lifetime)."""
        if self.expires_at is None:
            return False
        return self.expires_at - skew <= (time.time() if now is None else now)

    def __repr__(self) -> str:
        return (
            f"TokenResponse(access_token={_secret(self.access_token)}, "
            f"token_type={self.token_type!r}, expires_at={self.expires_at!r}, "
            f"refresh_token={_secret(self.refresh_token)}, scope={self.scope!r})"
        )


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """The endpoints of an authorization server, from its discovery document."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    jwks_uri: str | None = None
    device_authorization_endpoint: str | None = None  # RFC 8628 §4
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, hash=False)

    @classmethod
    def from_document(cls, document: object, *, issuer: str) -> ServerMetadata:
        """Validate a discovery document fetched for ``issuer``.

        OIDC Discovery 1.0 §4.3 / RFC 8414 §3.3: the ``issuer`` value returned MUST be
        identical to the issuer URL that was used to fetch it.
        """
        if not isinstance(document, Mapping):
            raise InvalidResponse("The discovery document is not a JSON object.")
        if document.get("issuer") != issuer:
            raise InvalidResponse(
                f"The discovery document's issuer {document.get('issuer')!r} is not {issuer!r}."
            )
        endpoints: dict[str, str | None] = {}
        for name in (
            "token_endpoint",
            "authorization_endpoint",
            "userinfo_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
            "jwks_uri",
            "device_authorization_endpoint",
        ):
            value = document.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidResponse(f"The discovery document has an invalid {name}.")
            endpoints[name] = value
        token_endpoint = endpoints.pop("token_endpoint")
        if token_endpoint is None:
            raise InvalidResponse("The discovery document has no token_endpoint.")
        return cls(
            issuer=issuer,
            token_endpoint=token_endpoint,
            raw=MappingProxyType(dict(document)),
            **endpoints,
        )


@dataclass(frozen=True, slots=True, repr=False)
class AuthorizationRequest:
    """A pending authorization request: send the user to ``url``, keep the rest (in the
    user's session) until the redirect comes back with the code."""

    url: str
    state: str
    code_verifier: str
    redirect_uri: str
    nonce: str | None = None

    def __repr__(self) -> str:
        return f"AuthorizationRequest(url={self.url!r}, redirect_uri={self.redirect_uri!r})"


DEFAULT_DEVICE_INTERVAL = 5  # RFC 8628 §3.2: "If no value is provided, clients MUST use 5"


@dataclass(frozen=True, slots=True, repr=False)
class DeviceAuthorization:
    """A device authorization response (RFC 8628 §3.2): show the user ``user_code`` and
    ``verification_uri`` (or a QR code of ``verification_uri_complete``), then poll with
    ``device_code`` (``OAuthClient.poll_device_token``).

    ``expires_at`` is seconds since the epoch: the time the request was *sent* plus
    ``expires_in``. ``interval`` is the server's minimum wait between polls (5 when it
    gave none). ``repr()`` shows neither code: the device code obtains the tokens, and the
    user code approves them.
    """

    device_code: str
    user_code: str
    verification_uri: str
    expires_in: int
    expires_at: float
    interval: int = DEFAULT_DEVICE_INTERVAL
    verification_uri_complete: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False)

    @classmethod
    def from_response(cls, body: object, *, sent_at: float | None = None) -> DeviceAuthorization:
        """Validate a device authorization endpoint's JSON body; ``sent_at`` defaults to now."""
        if not isinstance(body, Mapping):
            raise InvalidResponse("The device authorization response is not a JSON object.")
        fields: dict[str, str] = {}
        for name in ("device_code", "user_code", "verification_uri"):
            value = body.get(name)
            if name == "verification_uri" and value is None:
                # Google's endpoint says verification_url (a pre-RFC draft's name).
                value = body.get("verification_url")
            if not isinstance(value, str) or not value:
                raise InvalidResponse(f"The device authorization response has no {name}.")
            fields[name] = value
        complete = body.get("verification_uri_complete")
        if complete is not None and (not isinstance(complete, str) or not complete):
            raise InvalidResponse(
                "The device authorization response has an invalid verification_uri_complete."
            )
        numbers: dict[str, int] = {}
        for name in ("expires_in", "interval"):
            value = body.get(name)
            if value is None and name == "interval":
                value = DEFAULT_DEVICE_INTERVAL
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidResponse(f"The device authorization response has an invalid {name}.")
            numbers[name] = int(value)
        start = time.time() if sent_at is None else sent_at
        known = {"verification_url", "verification_uri_complete", *fields, *numbers}
        return cls(
            **fields,
            expires_in=numbers["expires_in"],
            expires_at=start + numbers["expires_in"],
            interval=numbers["interval"],
            verification_uri_complete=complete,
            extra=MappingProxyType({k: v for k, v in body.items() if k not in known}),
        )

    def __repr__(self) -> str:
        return (
            f"DeviceAuthorization(verification_uri={self.verification_uri!r}, "
            f"expires_at={self.expires_at!r}, interval={self.interval!r})"
        )


@dataclass(frozen=True, slots=True)
class Introspection:
    """An introspection response (RFC 7662 §2.2). Only ``active`` is always there; when it
    is false nothing else may be relied on."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    username: str | None = None
    token_type: str | None = None
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    sub: str | None = None
    aud: str | list[str] | None = None
    iss: str | None = None
    jti: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, hash=False)

    @classmethod
    def from_response(cls, body: object) -> Introspection:
        if not isinstance(body, Mapping) or not isinstance(body.get("active"), bool):
            raise InvalidResponse("The introspection response has no boolean 'active'.")
        known = {
            name: body.get(name)
            for name in cls.__dataclass_fields__
            if name not in ("active", "claims")
        }
        return cls(active=body["active"], claims=MappingProxyType(dict(body)), **known)
