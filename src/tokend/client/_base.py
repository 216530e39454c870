"""``ClientBase``: what ``OAuthClient`` and ``AsyncOAuthClient`` share, without I/O: the
configuration (metadata, credentials, DPoP key) and the requests they send, token requests
with their DPoP proofs first (``RefreshingAuth`` builds its refreshes with them too); and
``DevicePolling``, the device grant's polling rules (RFC 8628 §3.4-3.5).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from tokend.client import _wire
from tokend.client._auth import RefreshingAuth
from tokend.client._dpop import DPoPKey
from tokend.client._errors import (
    AuthorizationPending,
    ClientError,
    EndpointNotSupported,
    ExpiredToken,
    InvalidResponse,
    SlowDown,
    TransportError,
)
from tokend.client._models import (
    AuthorizationRequest,
    DeviceAuthorization,
    ServerMetadata,
    TokenResponse,
)
from tokend.client._wire import AuthMethod, ClientCredentials

if TYPE_CHECKING:
    from tokend.client._stores import AsyncTokenStore, TokenStore

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 §3.4
SLOW_DOWN_STEP = 5  # seconds added to the interval by each slow_down (RFC 8628 §3.5)
MIN_INTERVAL = 1.0  # even if a server says 0: polling is never a busy loop


class DevicePolling:
    """The polling rules of the device grant (RFC 8628 §3.4-3.5), without I/O, for the sync
    and async ``poll_device_token``:

    - wait ``interval`` seconds before each poll (the server's, at least ``MIN_INTERVAL``);
    - ``authorization_pending``: poll again; ``slow_down``: poll again, the interval 5 s
      longer for this and every later poll;
    - a transport failure (timeout, connection lost): poll again with the interval doubled
      (§3.5 "MUST unilaterally reduce their polling frequency", exponential backoff);
    - any other error ends the polling (``AccessDenied``, ``ExpiredToken``, ...);
    - once the device code's ``expires_at`` has passed (by ``clock``), stop with
      ``ExpiredToken`` instead of polling: the server would only say ``expired_token``.
    """

    def __init__(self, authorization: DeviceAuthorization, clock: Callable[[], float]) -> None:
        self.interval = max(float(authorization.interval), MIN_INTERVAL)
        self.deadline = authorization.expires_at
        self._clock = clock

    def check_deadline(self) -> None:
        if self._clock() >= self.deadline:
            raise ExpiredToken(
                "expired_token",
                "The device code expired before the user approved it; "
                "start a new device authorization.",
            )

    def next_wait(self) -> float:
        """Seconds to wait before the next poll (``ExpiredToken`` when it would be too late)."""
        self.check_deadline()
        return self.interval

    def again(self, error: ClientError) -> bool:
        """Whether to poll again after ``error`` (adjusting the interval as it says)."""
        if isinstance(error, AuthorizationPending):
            return True
        if isinstance(error, SlowDown):
            self.interval += SLOW_DOWN_STEP
            return True
        if isinstance(error, TransportError):
            self.interval *= 2
            return True
        return False


class ClientBase:
    """What the sync and async clients share: configuration and request building."""

    def __init__(
        self,
        metadata: ServerMetadata,
        *,
        client_id: str,
        client_secret: str | None = None,
        redirect_uri: str | None = None,
        auth_method: AuthMethod | None = None,
        dpop_key: DPoPKey | None = None,
    ) -> None:
        self.metadata = metadata
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.credentials = ClientCredentials.of(client_id, client_secret, auth_method)
        self.dpop_key = dpop_key

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(issuer={self.metadata.issuer!r}, client_id={self.client_id!r})"
        )

    def _endpoint(self, name: str) -> str:
        url: str | None = getattr(self.metadata, name)
        if url is None:
            raise EndpointNotSupported(
                f"{self.metadata.issuer} does not advertise a {name} in its discovery metadata"
            )
        return url

    def token_request(self, grant_type: str, params: Mapping[str, str | None]) -> httpx.Request:
        """The token endpoint request for any grant (RFC 6749 §3.2), authenticated, with a
        DPoP proof when the client has a ``dpop_key`` (RFC 9449 §5)."""
        request = _wire.token_request(
            self.metadata.token_endpoint, grant_type, params, self.credentials
        )
        if self.dpop_key is not None:
            self.dpop_key.sign_request(request)
        return request

    def _device_authorization_request(
        self, scope: str | None, params: Mapping[str, str | None]
    ) -> httpx.Request:
        """RFC 8628 §3.1: ``client_id`` (public clients) or the client's authentication as
        at the token endpoint, and ``scope``. No DPoP proof: RFC 9449 defines none for this
        endpoint; the tokens are bound by the proofs of the token requests."""
        return _wire.form_request(
            self._endpoint("device_authorization_endpoint"),
            {"scope": scope, **params},
            self.credentials,
        )

    def _device_authorization(
        self, response: httpx.Response, sent_at: float
    ) -> DeviceAuthorization:
        body = _wire.parse_json_response(response, "device authorization endpoint")
        return DeviceAuthorization.from_response(body, sent_at=sent_at)

    def _device_code_request(self, device_code: str) -> httpx.Request:
        """RFC 8628 §3.4: the device access token request (one poll)."""
        return self.token_request(DEVICE_CODE_GRANT, {"device_code": device_code})

    def authorization_url(
        self,
        *,
        scope: str = "openid",
        redirect_uri: str | None = None,
        state: str | None = None,
        nonce: str | None = None,
        **params: str,
    ) -> AuthorizationRequest:
        """Where to send the user to sign in (RFC 6749 §4.1.1), with PKCE S256 (RFC 7636),
        a random ``state`` and, for ``openid``, a random ``nonce``. Extra ``params``
        (``prompt``, ``max_age``, ...) are added as they are. Keep the returned request
        (in the user's session) for ``complete_authorization``."""
        endpoint = self._endpoint("authorization_endpoint")
        redirect_uri = redirect_uri or self.redirect_uri
        if redirect_uri is None:
            raise ValueError("authorization_url needs a redirect_uri")
        verifier = _wire.new_code_verifier()
        state = state or secrets.token_urlsafe(32)
        if nonce is None and "openid" in scope.split():
            nonce = secrets.token_urlsafe(32)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": _wire.s256(verifier),
            "code_challenge_method": "S256",
            **({"nonce": nonce} if nonce is not None else {}),
            **params,
        }
        separator = "&" if "?" in endpoint else "?"
        return AuthorizationRequest(
            url=f"{endpoint}{separator}{urlencode(query)}",
            state=state,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            nonce=nonce,
        )

    def parse_authorization_response(self, url: str, request: AuthorizationRequest) -> str:
        """The code from the redirect back to ``redirect_uri``: checks ``state`` and ``iss``,
        raises the error (``AccessDenied``, ...) the server sent instead of a code."""
        return _wire.authorization_response(
            url,
            state=request.state,
            issuer=self.metadata.issuer,
            iss_required=self.metadata.raw.get("authorization_response_iss_parameter_supported")
            is True,
        )

    def _code_request(
        self, code: str, code_verifier: str, redirect_uri: str | None
    ) -> httpx.Request:
        redirect_uri = redirect_uri or self.redirect_uri
        if redirect_uri is None:
            raise ValueError("exchange_code needs the redirect_uri of the authorization request")
        return self.token_request(
            "authorization_code",
            {"code": code, "redirect_uri": redirect_uri, "code_verifier": code_verifier},
        )

    def _checked(self, token: TokenResponse, nonce: str | None) -> TokenResponse:
        _wire.check_id_token(
            token.id_token, issuer=self.metadata.issuer, client_id=self.client_id, nonce=nonce
        )
        return token

    def _token_hint_request(
        self, endpoint: str, token: str, token_type_hint: str | None
    ) -> httpx.Request:
        return _wire.form_request(
            self._endpoint(endpoint),
            {"token": token, "token_type_hint": token_type_hint},
            self.credentials,
        )

    def _userinfo_request(self, access_token: str | TokenResponse) -> httpx.Request:
        """Bearer, or with a ``dpop_key`` the DPoP scheme and a proof with ``ath`` (RFC 9449
        §7): for a token string, and for a ``TokenResponse`` whose token_type is DPoP."""
        token_type = "DPoP"
        if isinstance(access_token, TokenResponse):
            token_type = access_token.token_type
            access_token = access_token.access_token
        request = httpx.Request(
            "GET",
            self._endpoint("userinfo_endpoint"),
            headers={**_wire.JSON_ACCEPT, "Authorization": f"Bearer {access_token}"},
        )
        if self.dpop_key is not None and token_type.lower() == "dpop":
            self.dpop_key.sign_request(request, access_token=access_token)
        return request

    def _revoked(self, response: httpx.Response) -> None:
        # RFC 7009 §2.2: 200 whether or not the token was valid; the body is ignored.
        if response.status_code != 200:
            raise _wire.oauth_error(response, "revocation endpoint")

    def _userinfo(self, response: httpx.Response) -> dict[str, Any]:
        claims = _wire.parse_json_response(response, "userinfo endpoint")
        if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            raise InvalidResponse("The userinfo response has no sub.")
        return claims

    def auth(self, store: TokenStore | AsyncTokenStore, *, skew: float = 30.0) -> RefreshingAuth:
        """A ``RefreshingAuth`` for the token in ``store`` (for ``httpx.Client(auth=...)``)."""
        return RefreshingAuth(self, store, skew=skew)
