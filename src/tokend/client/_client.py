"""``refresh_tokens`` (the spec's example) and ``OAuthClient``, each with an async twin.

Every call takes an ``httpx.Client`` / ``httpx.AsyncClient`` (``http_client=``), so tests and
applications choose the transport: a real network, ``httpx.ASGITransport`` on the server's
app, a proxy. Without one, the client makes its own and closes it in ``close()``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

import httpx

from tokend.client import _wire
from tokend.client._dpop import DPoPKey, asks_for_nonce
from tokend.client._errors import EndpointNotSupported, InvalidResponse, TransportError
from tokend.client._models import AuthorizationRequest, Introspection, ServerMetadata, TokenResponse
from tokend.client._wire import AuthMethod, ClientCredentials

if TYPE_CHECKING:
    from tokend.client._auth import RefreshingAuth
    from tokend.client._stores import AsyncTokenStore, TokenStore

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


class _Base:
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
        url = getattr(self.metadata, name)
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

    def _nonce_retry(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Remember the answer's DPoP nonce; when it asks for one (RFC 9449 §8, §9), put a
        fresh proof with it in ``request`` and say so: the caller sends it once more."""
        key = self.dpop_key
        if key is None or not key.remember_nonce(response) or not asks_for_nonce(response):
            return False
        authorization = request.headers.get("authorization", "")
        access_token = authorization[5:] if authorization[:5].lower() == "dpop " else None
        key.sign_request(request, access_token=access_token)
        return True

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
        from tokend.client._auth import RefreshingAuth

        return RefreshingAuth(self, store, skew=skew)


def _metadata(response: httpx.Response, issuer: str) -> ServerMetadata | None:
    if response.status_code == 404:
        return None
    document = _wire.parse_json_response(response, "discovery endpoint")
    return ServerMetadata.from_document(document, issuer=issuer)


class OAuthClient(_Base):
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
        response = _send(self.http, request)
        if self._nonce_retry(request, response):
            response = _send(self.http, request)
            self.dpop_key.remember_nonce(response)  # type: ignore[union-attr]
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


class AsyncOAuthClient(_Base):
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
        response = await _asend(self.http, request)
        if self._nonce_retry(request, response):
            response = await _asend(self.http, request)
            self.dpop_key.remember_nonce(response)  # type: ignore[union-attr]
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
