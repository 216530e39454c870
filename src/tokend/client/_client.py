"""``refresh_tokens`` (the spec's example) and ``OAuthClient``, each with an async twin.

Every call takes an ``httpx.Client`` / ``httpx.AsyncClient`` (``http_client=``), so tests and
applications choose the transport: a real network, ``httpx.ASGITransport`` on the server's
app, a proxy. Without one, the client makes its own and closes it in ``close()``. What the two
clients share without I/O is ``tokend.client._base``; what is left here is twice the sending,
once per kind of httpx client (hence the length).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import httpx

from tokend.client import _wire
from tokend.client._base import ClientBase, DevicePolling
from tokend.client._dpop import DPoPKey, nonce_retry
from tokend.client._errors import ClientError, InvalidResponse, TransportError
from tokend.client._models import (
    AuthorizationRequest,
    DeviceAuthorization,
    Introspection,
    ServerMetadata,
    TokenResponse,
)
from tokend.client._wire import AuthMethod, ClientCredentials

DEFAULT_TIMEOUT = 10.0


def _transport_error(exc: httpx.TransportError, request: httpx.Request) -> TransportError:
    return TransportError(f"{request.method} {request.url} failed: {exc!r}")


def _send(http: httpx.Client, request: httpx.Request) -> httpx.Response:
    try:
        return http.send(request)
    except httpx.TransportError as exc:
        raise _transport_error(exc, request) from exc


async def _asend(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    try:
        return await http.send(request)
    except httpx.TransportError as exc:
        raise _transport_error(exc, request) from exc


def refresh_tokens(
    refresh_token: str,
    *,
    token_endpoint: str,
    client_id: str,
    client_secret: str | None = None,
    scope: str | None = None,
    http_client: httpx.Client | None = None,
) -> TokenResponse:
    """Exchange a refresh token for new tokens (RFC 6749 §6): the spec's ``refreshTokens``.

    Basic client authentication when there is a secret, else ``client_id`` in the body.
    The answer's ``refresh_token`` (when present) replaces the one passed in, which is now
    spent: save it before using the access token. Raises ``OAuthError`` (a subclass per
    code; ``str(exc)`` is the server's ``error_description``) or ``TransportError``.
    """
    credentials = ClientCredentials.of(client_id, client_secret, None)
    request = _wire.token_request(
        token_endpoint,
        "refresh_token",
        {"refresh_token": refresh_token, "scope": scope},
        credentials,
    )
    sent_at = time.time()
    if http_client is not None:
        return _wire.parse_token_response(_send(http_client, request), sent_at=sent_at)
    with httpx.Client(timeout=DEFAULT_TIMEOUT) as http:
        return _wire.parse_token_response(_send(http, request), sent_at=sent_at)


async def async_refresh_tokens(
    refresh_token: str,
    *,
    token_endpoint: str,
    client_id: str,
    client_secret: str | None = None,
    scope: str | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> TokenResponse:
    """The async twin of ``refresh_tokens``."""
    credentials = ClientCredentials.of(client_id, client_secret, None)
    request = _wire.token_request(
        token_endpoint,
        "refresh_token",
        {"refresh_token": refresh_token, "scope": scope},
        credentials,
    )
    sent_at = time.time()
    if http_client is not None:
        return _wire.parse_token_response(await _asend(http_client, request), sent_at=sent_at)
    async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT) as http:
        return _wire.parse_token_response(await _asend(http, request), sent_at=sent_at)


def _metadata(response: httpx.Response, issuer: str) -> ServerMetadata | None:
    if response.status_code == 404:
        return None
    document = _wire.parse_json_response(response, "discovery endpoint")
    return ServerMetadata.from_document(document, issuer=issuer)


class OAuthClient(ClientBase):
    """A client of one authorization server, from its discovery metadata (sync).

    ``OAuthClient.from_issuer(url, client_id=..., client_secret=...)`` reads discovery once.
    Every method raises ``OAuthError`` subclasses for the server's errors,
    ``TransportError`` when no answer arrived, ``InvalidResponse`` for a broken answer.
    With ``dpop_key`` (a ``DPoPKey``), token requests carry DPoP proofs, so the tokens are
    bound to that key (RFC 9449), and ``userinfo`` presents them with the DPoP scheme.
    """

    def __init__(
        self,
        metadata: ServerMetadata,
        *,
        client_id: str,
        client_secret: str | None = None,
        redirect_uri: str | None = None,
        auth_method: AuthMethod | None = None,
        http_client: httpx.Client | None = None,
        dpop_key: DPoPKey | None = None,
    ) -> None:
        super().__init__(
            metadata,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            auth_method=auth_method,
            dpop_key=dpop_key,
        )
        self._owns_http = http_client is None
        self.http = (
            http_client if http_client is not None else httpx.Client(timeout=DEFAULT_TIMEOUT)
        )

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        redirect_uri: str | None = None,
        auth_method: AuthMethod | None = None,
        http_client: httpx.Client | None = None,
        dpop_key: DPoPKey | None = None,
    ) -> Self:
        """Read ``issuer``'s discovery document (OIDC Discovery, else RFC 8414) once."""
        issuer = issuer.rstrip("/")
        http = http_client if http_client is not None else httpx.Client(timeout=DEFAULT_TIMEOUT)
        try:
            metadata = None
            for url in _wire.discovery_urls(issuer):
                metadata = _metadata(_send(http, httpx.Request("GET", url)), issuer)
                if metadata is not None:
                    break
            if metadata is None:
                raise InvalidResponse(f"{issuer} publishes no discovery document.", status_code=404)
        except BaseException:
            if http_client is None:
                http.close()
            raise
        client = cls(
            metadata,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            auth_method=auth_method,
            http_client=http,
            dpop_key=dpop_key,
        )
        client._owns_http = http_client is None
        return client

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def _send_dpop(self, request: httpx.Request) -> httpx.Response:
        """Send; once more with a fresh proof when the server asks for a DPoP nonce."""
        key = self.dpop_key
        response = _send(self.http, request)
        if key is not None and nonce_retry(key, request, response):
            response = _send(self.http, request)
            key.remember_nonce(response)
        return response

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request_token(self, grant_type: str, **params: str | None) -> TokenResponse:
        """A token request of any grant type (extension grants too)."""
        sent_at = time.time()
        response = self._send_dpop(self.token_request(grant_type, params))
        return _wire.parse_token_response(response, sent_at=sent_at)

    def refresh(self, refresh_token: str, *, scope: str | None = None) -> TokenResponse:
        """RFC 6749 §6. Save the answer's refresh token before using its access token."""
        return self.request_token("refresh_token", refresh_token=refresh_token, scope=scope)

    def client_credentials(self, *, scope: str | None = None) -> TokenResponse:
        """RFC 6749 §4.4: a token for the client itself."""
        return self.request_token("client_credentials", scope=scope)

    def exchange_code(
        self,
        code: str,
        *,
        code_verifier: str,
        redirect_uri: str | None = None,
        nonce: str | None = None,
    ) -> TokenResponse:
        """RFC 6749 §4.1.3 with the PKCE verifier; with ``nonce``, the id_token's ``iss``,
        ``aud`` and ``nonce`` are checked (OIDC Core §3.1.3.7)."""
        sent_at = time.time()
        response = self._send_dpop(self._code_request(code, code_verifier, redirect_uri))
        return self._checked(_wire.parse_token_response(response, sent_at=sent_at), nonce)

    def complete_authorization(
        self, callback_url: str, request: AuthorizationRequest
    ) -> TokenResponse:
        """``parse_authorization_response`` then ``exchange_code``, for the redirect back."""
        code = self.parse_authorization_response(callback_url, request)
        return self.exchange_code(
            code,
            code_verifier=request.code_verifier,
            redirect_uri=request.redirect_uri,
            nonce=request.nonce,
        )

    def device_authorization(
        self, *, scope: str | None = None, **params: str | None
    ) -> DeviceAuthorization:
        """RFC 8628 §3.1-3.2: start a device authorization at the advertised
        ``device_authorization_endpoint``. Show the user its ``user_code`` and
        ``verification_uri`` (or ``verification_uri_complete`` as a QR code), then
        ``poll_device_token`` it."""
        sent_at = time.time()
        response = _send(self.http, self._device_authorization_request(scope, params))
        return self._device_authorization(response, sent_at)

    def exchange_device_code(self, device_code: str) -> TokenResponse:
        """One device access token request (RFC 8628 §3.4), with a DPoP proof when the
        client has a ``dpop_key``. Raises ``AuthorizationPending`` or ``SlowDown`` while the
        user has not decided: ``poll_device_token`` is the loop around it."""
        sent_at = time.time()
        response = self._send_dpop(self._device_code_request(device_code))
        return self._checked(_wire.parse_token_response(response, sent_at=sent_at), None)

    def poll_device_token(
        self,
        authorization: DeviceAuthorization,
        *,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> TokenResponse:
        """Poll until the user approves (RFC 8628 §3.4-3.5): wait ``interval`` seconds
        before each poll, 5 s more after each ``slow_down``, keep going on
        ``authorization_pending``. Returns the tokens (``TokenResponse``, as every grant);
        raises ``AccessDenied`` when the user refused, ``ExpiredToken`` when the device code
        expired (the server said so, or ``clock`` passed its ``expires_at``), and the other
        errors as they come. ``sleep`` and ``clock`` (seconds since the epoch) are
        ``time.sleep`` and ``time.time`` unless given."""
        polling = DevicePolling(authorization, clock)
        while True:
            sleep(polling.next_wait())
            polling.check_deadline()
            try:
                return self.exchange_device_code(authorization.device_code)
            except ClientError as exc:
                if not polling.again(exc):
                    raise

    def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        """RFC 7009 at the advertised ``revocation_endpoint``."""
        request = self._token_hint_request("revocation_endpoint", token, token_type_hint)
        self._revoked(_send(self.http, request))

    def introspect(self, token: str, *, token_type_hint: str | None = None) -> Introspection:
        """RFC 7662 at the advertised ``introspection_endpoint``."""
        request = self._token_hint_request("introspection_endpoint", token, token_type_hint)
        response = _send(self.http, request)
        return Introspection.from_response(
            _wire.parse_json_response(response, "introspection endpoint")
        )

    def userinfo(self, access_token: str | TokenResponse) -> dict[str, Any]:
        """OIDC Core §5.3: the user's claims, with the access token as Bearer."""
        return self._userinfo(self._send_dpop(self._userinfo_request(access_token)))


class AsyncOAuthClient(ClientBase):
    """The async twin of ``OAuthClient``: ``await AsyncOAuthClient.from_issuer(...)``."""

    def __init__(
        self,
        metadata: ServerMetadata,
        *,
        client_id: str,
        client_secret: str | None = None,
        redirect_uri: str | None = None,
        auth_method: AuthMethod | None = None,
        http_client: httpx.AsyncClient | None = None,
        dpop_key: DPoPKey | None = None,
    ) -> None:
        super().__init__(
            metadata,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            auth_method=auth_method,
            dpop_key=dpop_key,
        )
        self._owns_http = http_client is None
        self.http = (
            http_client if http_client is not None else httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        )

    @classmethod
    async def from_issuer(
        cls,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        redirect_uri: str | None = None,
        auth_method: AuthMethod | None = None,
        http_client: httpx.AsyncClient | None = None,
        dpop_key: DPoPKey | None = None,
    ) -> Self:
        """Read ``issuer``'s discovery document (OIDC Discovery, else RFC 8414) once."""
        issuer = issuer.rstrip("/")
        http = (
            http_client if http_client is not None else httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        )
        try:
            metadata = None
            for url in _wire.discovery_urls(issuer):
                metadata = _metadata(await _asend(http, httpx.Request("GET", url)), issuer)
                if metadata is not None:
                    break
            if metadata is None:
                raise InvalidResponse(f"{issuer} publishes no discovery document.", status_code=404)
        except BaseException:
            if http_client is None:
                await http.aclose()
            raise
        client = cls(
            metadata,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            auth_method=auth_method,
            http_client=http,
            dpop_key=dpop_key,
        )
        client._owns_http = http_client is None
        return client

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def _send_dpop(self, request: httpx.Request) -> httpx.Response:
        """Send; once more with a fresh proof when the server asks for a DPoP nonce."""
        key = self.dpop_key
        response = await _asend(self.http, request)
        if key is not None and nonce_retry(key, request, response):
            response = await _asend(self.http, request)
            key.remember_nonce(response)
        return response

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def request_token(self, grant_type: str, **params: str | None) -> TokenResponse:
        """A token request of any grant type (extension grants too)."""
        sent_at = time.time()
        response = await self._send_dpop(self.token_request(grant_type, params))
        return _wire.parse_token_response(response, sent_at=sent_at)

    async def refresh(self, refresh_token: str, *, scope: str | None = None) -> TokenResponse:
        """RFC 6749 §6. Save the answer's refresh token before using its access token."""
        return await self.request_token("refresh_token", refresh_token=refresh_token, scope=scope)

    async def client_credentials(self, *, scope: str | None = None) -> TokenResponse:
        """RFC 6749 §4.4: a token for the client itself."""
        return await self.request_token("client_credentials", scope=scope)

    async def exchange_code(
        self,
        code: str,
        *,
        code_verifier: str,
        redirect_uri: str | None = None,
        nonce: str | None = None,
    ) -> TokenResponse:
        """RFC 6749 §4.1.3 with the PKCE verifier; with ``nonce``, the id_token's ``iss``,
        ``aud`` and ``nonce`` are checked (OIDC Core §3.1.3.7)."""
        sent_at = time.time()
        response = await self._send_dpop(self._code_request(code, code_verifier, redirect_uri))
        return self._checked(_wire.parse_token_response(response, sent_at=sent_at), nonce)

    async def complete_authorization(
        self, callback_url: str, request: AuthorizationRequest
    ) -> TokenResponse:
        """``parse_authorization_response`` then ``exchange_code``, for the redirect back."""
        code = self.parse_authorization_response(callback_url, request)
        return await self.exchange_code(
            code,
            code_verifier=request.code_verifier,
            redirect_uri=request.redirect_uri,
            nonce=request.nonce,
        )

    async def device_authorization(
        self, *, scope: str | None = None, **params: str | None
    ) -> DeviceAuthorization:
        """RFC 8628 §3.1-3.2: start a device authorization at the advertised
        ``device_authorization_endpoint``. Show the user its ``user_code`` and
        ``verification_uri`` (or ``verification_uri_complete`` as a QR code), then
        ``poll_device_token`` it."""
        sent_at = time.time()
        response = await _asend(self.http, self._device_authorization_request(scope, params))
        return self._device_authorization(response, sent_at)

    async def exchange_device_code(self, device_code: str) -> TokenResponse:
        """One device access token request (RFC 8628 §3.4), with a DPoP proof when the
        client has a ``dpop_key``. Raises ``AuthorizationPending`` or ``SlowDown`` while the
        user has not decided: ``poll_device_token`` is the loop around it."""
        sent_at = time.time()
        response = await self._send_dpop(self._device_code_request(device_code))
        return self._checked(_wire.parse_token_response(response, sent_at=sent_at), None)

    async def poll_device_token(
        self,
        authorization: DeviceAuthorization,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> TokenResponse:
        """The async twin of ``OAuthClient.poll_device_token``. Cancelling the task stops
        the polling at once (during a wait or a request); nothing is left behind."""
        polling = DevicePolling(authorization, clock)
        while True:
            await sleep(polling.next_wait())
            polling.check_deadline()
            try:
                return await self.exchange_device_code(authorization.device_code)
            except ClientError as exc:
                if not polling.again(exc):
                    raise

    async def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        """RFC 7009 at the advertised ``revocation_endpoint``."""
        request = self._token_hint_request("revocation_endpoint", token, token_type_hint)
        self._revoked(await _asend(self.http, request))

    async def introspect(self, token: str, *, token_type_hint: str | None = None) -> Introspection:
        """RFC 7662 at the advertised ``introspection_endpoint``."""
        request = self._token_hint_request("introspection_endpoint", token, token_type_hint)
        response = await _asend(self.http, request)
        return Introspection.from_response(
            _wire.parse_json_response(response, "introspection endpoint")
        )

    async def userinfo(self, access_token: str | TokenResponse) -> dict[str, Any]:
        """OIDC Core §5.3: the user's claims, with the access token as Bearer."""
        return self._userinfo(await self._send_dpop(self._userinfo_request(access_token)))
