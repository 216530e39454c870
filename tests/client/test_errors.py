"""Every error class, each provoked on the real app (in-process) through the client's own
calls: the class per code, ``error``, ``error_description`` as the message, the status; the
defaults when the server gives no description; transport failures and broken answers as
their own errors. (``unsupported_token_type`` needs a revocation endpoint, which tokend does
not have yet: test_revocation_stub.py covers it.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.client.conftest import TOKEN_ENDPOINT
from tests.client.dpop_support import deaf_key, nonce_server, server_key
from tests.client.support import REDIRECT_URI, issue, register_client, sign_in_and_consent
from tests.conftest import ISSUER, RegisteredClient
from tests.support.postgres import free_port
from tokend.client import (
    AccessDenied,
    AuthorizationPending,
    ClientError,
    DPoPKey,
    ExpiredToken,
    InsufficientScope,
    InvalidClient,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidResponse,
    InvalidScope,
    InvalidToken,
    OAuthClient,
    OAuthError,
    ServerError,
    SlowDown,
    TemporarilyUnavailable,
    TransportError,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    UseDPoPNonce,
    async_refresh_tokens,
    refresh_tokens,
)
from tokend.client._errors import ERRORS_BY_CODE, error_from
from tokend.core import errors as server_errors


@dataclass
class Case:
    id: str
    error: type[OAuthError]
    status: int
    provoke: Callable[[Any], Any]
    description: str | None = None  # the server's exact words, where the test knows them


def _oauth(w: Any, reg: RegisteredClient | None = None) -> OAuthClient:
    reg = reg or w.reg
    return OAuthClient.from_issuer(
        ISSUER, client_id=reg.client_id, client_secret=reg.secret, http_client=w.http
    )


def _refresh(w: Any, token: str, *, secret: str | None = None, **kw: Any) -> Any:
    return refresh_tokens(
        token,
        token_endpoint=TOKEN_ENDPOINT,
        client_id=w.reg.client_id,
        client_secret=secret or w.reg.secret,
        http_client=w.http,
        **kw,
    )


def _server_fails(w: Any, exc: Exception) -> Any:
    def boom(client_id: str) -> None:
        raise exc

    w.monkeypatch.setattr(w.rt.store, "get_client", boom)
    return _refresh(w, w.family.refresh_token)


def _dpop_refresh(w: Any, key: DPoPKey, http: httpx.Client) -> Any:
    oauth = OAuthClient.from_issuer(
        ISSUER, client_id=w.reg.client_id, client_secret=w.reg.secret, http_client=http,
        dpop_key=key,
    )  # fmt: skip
    return oauth.refresh(w.family.refresh_token)


def _deaf_to_nonces(w: Any) -> Any:
    with nonce_server(w.rt) as http:
        return _dpop_refresh(w, deaf_key(w.rt), http)


def _authorize(w: Any, **params: str) -> Any:
    oauth = _oauth(w)
    request = oauth.authorization_url(redirect_uri=REDIRECT_URI, **params)
    r = w.http.get(request.url)
    assert r.status_code == 302, r.text
    return oauth.parse_authorization_response(r.headers["location"], request)


def _device_poll(w: Any, *, polls: int = 1, advance: float = 0.0) -> Any:
    """A public device client polls a fresh device code ``polls`` times in a row, the
    server's clock moved ``advance`` seconds after the device authorization."""
    reg = register_client(
        w.rt, public=True, grant_types=("urn:ietf:params:oauth:grant-type:device_code",)
    )
    oauth = OAuthClient.from_issuer(ISSUER, client_id=reg.client_id, http_client=w.http)
    authorization = oauth.device_authorization(scope="openid")
    w.rt.clock.advance(advance)
    for _ in range(polls - 1):
        with pytest.raises(AuthorizationPending):
            oauth.exchange_device_code(authorization.device_code)
    return oauth.exchange_device_code(authorization.device_code)


CASES = [
    Case(
        "invalid_request: empty refresh_token",
        InvalidRequest,
        400,
        lambda w: _refresh(w, ""),
        "The refresh_token parameter is required.",
    ),
    Case(
        "invalid_client: wrong secret",
        InvalidClient,
        401,
        lambda w: _refresh(w, w.family.refresh_token, secret="wrong-secret"),
        "Client authentication failed.",
    ),
    Case(
        "invalid_grant: unknown refresh token",
        InvalidGrant,
        400,
        lambda w: _refresh(w, "tkd_rt_" + "A" * 49),
    ),
    Case(
        "unauthorized_client: grant not allowed",
        UnauthorizedClient,
        400,
        lambda w: refresh_tokens(
            w.family.refresh_token,
            token_endpoint=TOKEN_ENDPOINT,
            client_id=w.cc_only.client_id,
            client_secret=w.cc_only.secret,
            http_client=w.http,
        ),
    ),
    Case(
        "unsupported_grant_type",
        UnsupportedGrantType,
        400,
        lambda w: _oauth(w).request_token("urn:example:grant:unknown"),
    ),
    Case(
        "invalid_scope: widening on refresh",
        InvalidScope,
        400,
        lambda w: _refresh(w, w.family.refresh_token, scope="openid offline email profile"),
    ),
    Case(
        "server_error: unexpected failure",
        ServerError,
        500,
        lambda w: _server_fails(w, RuntimeError("boom")),
        "The server encountered an unexpected condition.",
    ),
    Case(
        "temporarily_unavailable: database busy",
        TemporarilyUnavailable,
        503,
        lambda w: _server_fails(w, server_errors.TemporarilyUnavailable(debug="locked")),
    ),
    Case(
        "invalid_token: userinfo with a bad token",
        InvalidToken,
        401,
        lambda w: _oauth(w).userinfo("not-a-token"),
    ),
    Case(
        "insufficient_scope: userinfo without openid",
        InsufficientScope,
        403,
        lambda w: _oauth(w).userinfo(issue(w.rt, w.reg, w.user, "offline email").access_token),
    ),
    Case(
        "access_denied: the user clicks deny",
        AccessDenied,
        0,
        lambda w: w.deny(),
    ),
    Case(
        "unsupported_response_type: response_type=token",
        UnsupportedResponseType,
        0,
        lambda w: _authorize(w, response_type="token"),
    ),
    Case(
        "invalid_dpop_proof: a client clock an hour behind",
        InvalidDPoPProof,
        400,
        lambda w: _dpop_refresh(w, server_key(w.rt, skew=-3600), w.http),
        "The DPoP proof is too old.",
    ),
    Case(
        "use_dpop_nonce: a client that ignores the server's nonce",
        UseDPoPNonce,
        400,
        lambda w: _deaf_to_nonces(w),
    ),
    Case(
        "authorization_pending: a device code nobody approved yet",
        AuthorizationPending,
        400,
        lambda w: _device_poll(w),
    ),
    Case(
        "slow_down: the same device code polled twice at once",
        SlowDown,
        400,
        lambda w: _device_poll(w, polls=2),
    ),
    Case(
        "expired_token: a device code past its lifetime",
        ExpiredToken,
        400,
        lambda w: _device_poll(w, advance=601),
    ),
]


@dataclass
class World:
    rt: Any
    http: httpx.Client
    reg: RegisteredClient
    cc_only: RegisteredClient
    user: Any
    family: Any
    monkeypatch: pytest.MonkeyPatch

    def deny(self) -> Any:
        oauth = _oauth(self)
        request = oauth.authorization_url(redirect_uri=REDIRECT_URI)
        callback = sign_in_and_consent(self.http, request.url, self.user.username, decision="deny")
        return oauth.parse_authorization_response(callback, request)


@pytest.fixture
def world(rt, http, reg, user, family, monkeypatch) -> World:  # type: ignore[no-untyped-def]
    cc_only = register_client(rt, grant_types=("client_credentials",), scopes="email")
    return World(rt, http, reg, cc_only, user, family, monkeypatch)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_error_code_raises_its_class(world: World, case: Case) -> None:
    with pytest.raises(OAuthError) as info:
        case.provoke(world)
    exc = info.value
    assert type(exc) is case.error, repr(exc)
    assert exc.error == case.error.code
    # The message is the server's error_description, whenever it sent one (it always does).
    assert exc.error_description and str(exc) == exc.error_description
    if case.description is not None:
        assert exc.error_description == case.description
    if case.status:  # token and userinfo endpoints; authorization errors come in a redirect
        assert exc.status_code == case.status
    assert isinstance(exc, ClientError)


def test_every_error_class_is_provoked_somewhere() -> None:
    """The table above plus the revocation stub cover every class the client defines."""
    covered = {c.error.code for c in CASES} | {"unsupported_token_type"}
    assert covered == set(ERRORS_BY_CODE)


def test_async_refresh_raises_the_same_classes(world: World, async_http) -> None:  # type: ignore[no-untyped-def]
    async def run() -> tuple[BaseException, BaseException]:
        async with async_http() as h:
            with pytest.raises(InvalidGrant) as grant:
                await async_refresh_tokens(
                    "tkd_rt_" + "A" * 49,
                    token_endpoint=TOKEN_ENDPOINT,
                    client_id=world.reg.client_id,
                    client_secret=world.reg.secret,
                    http_client=h,
                )
            with pytest.raises(InvalidClient) as client:
                await async_refresh_tokens(
                    world.family.refresh_token,
                    token_endpoint=TOKEN_ENDPOINT,
                    client_id=world.reg.client_id,
                    client_secret="wrong",
                    http_client=h,
                )
        return grant.value, client.value

    grant, client = asyncio.run(run())
    assert str(client) == "Client authentication failed."
    assert isinstance(grant, InvalidGrant) and grant.status_code == 400


@pytest.mark.parametrize(
    ("code", "cls"), sorted(ERRORS_BY_CODE.items()), ids=sorted(ERRORS_BY_CODE)
)
def test_without_description_the_message_is_the_class_default(
    code: str, cls: type[OAuthError]
) -> None:
    exc = error_from(code)
    assert type(exc) is cls
    assert str(exc) == cls.default_message and exc.error_description is None


def test_unknown_code_is_the_base_class_and_names_the_code() -> None:
    exc = error_from("login_required", status_code=None)
    assert type(exc) is OAuthError
    assert exc.error == "login_required"
    assert "login_required" in str(exc)


def test_refusing_connection_is_a_transport_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/auth/v2/token"  # nothing listens there
    with pytest.raises(TransportError) as info:
        refresh_tokens("tkd_rt_x", token_endpoint=endpoint, client_id="c", client_secret="s")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert not isinstance(info.value, OAuthError)

    async def run() -> None:
        await async_refresh_tokens(
            "tkd_rt_x", token_endpoint=endpoint, client_id="c", client_secret="s"
        )

    with pytest.raises(TransportError):
        asyncio.run(run())


def test_an_answer_that_is_not_oauth_json_is_invalid_response(world: World) -> None:
    # The login form refuses a POST without its CSRF token with an HTML page (403).
    with pytest.raises(InvalidResponse) as info:
        refresh_tokens(
            world.family.refresh_token,
            token_endpoint=f"{ISSUER}/auth/v2/authorize/login",
            client_id=world.reg.client_id,
            client_secret=world.reg.secret,
            http_client=world.http,
        )
    assert info.value.status_code == 403
    assert str(info.value) == "The token endpoint answered HTTP 403 without an OAuth error."
