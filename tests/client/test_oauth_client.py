"""``OAuthClient`` / ``AsyncOAuthClient`` and ``refresh_tokens`` against the real app,
in-process: discovery read once, every grant, every client authentication method, the
authorization code flow through the real sign-in and consent pages, userinfo, and what
happens when discovery does not advertise an endpoint."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.client.conftest import TOKEN_ENDPOINT
from tests.client.support import (
    REDIRECT_URI,
    issue,
    register_client,
    sign_in_and_consent,
)
from tests.conftest import ISSUER
from tokend.client import (
    AsyncOAuthClient,
    EndpointNotSupported,
    InvalidGrant,
    InvalidResponse,
    OAuthClient,
    ServerMetadata,
    TokenResponse,
    async_refresh_tokens,
    refresh_tokens,
)
from tokend.client._wire import id_token_claims, s256


def oauth_for(http: httpx.Client, reg: Any, **kw: Any) -> OAuthClient:
    return OAuthClient.from_issuer(
        ISSUER, client_id=reg.client_id, client_secret=reg.secret, http_client=http, **kw
    )


# -- refresh_tokens: the spec's example -------------------------------------------------------


def test_refresh_tokens_is_the_spec_example(http, recorder, reg, family) -> None:  # type: ignore[no-untyped-def]
    new = refresh_tokens(
        family.refresh_token,
        token_endpoint=TOKEN_ENDPOINT,
        client_id=reg.client_id,
        client_secret=reg.secret,
        http_client=http,
    )
    (sent,) = recorder.sent
    # POST, form body grant_type + refresh_token, Basic base64(client_id:client_secret).
    assert sent.method == "POST" and sent.path == "/auth/v2/token"
    assert sent.form == {"grant_type": "refresh_token", "refresh_token": family.refresh_token}
    basic = base64.b64encode(f"{reg.client_id}:{reg.secret}".encode()).decode()
    assert sent.authorization == f"Basic {basic}"
    assert isinstance(new, TokenResponse)
    assert new.token_type == "Bearer" and new.expires_in == 3600 and new.scope == "openid offline"
    assert new.refresh_token and new.refresh_token != family.refresh_token
    assert new.id_token is not None
    # The successor works; the spent token, once its successor is used, does not.
    newer = refresh_tokens(
        new.refresh_token,
        token_endpoint=TOKEN_ENDPOINT,
        client_id=reg.client_id,
        client_secret=reg.secret,
        http_client=http,
    )
    assert newer.refresh_token not in (None, new.refresh_token)
    with pytest.raises(InvalidGrant):
        refresh_tokens(
            family.refresh_token,
            token_endpoint=TOKEN_ENDPOINT,
            client_id=reg.client_id,
            client_secret=reg.secret,
            http_client=http,
        )


def test_async_refresh_tokens_and_narrowing_scope(async_http, reg, family) -> None:  # type: ignore[no-untyped-def]
    async def run() -> TokenResponse:
        async with async_http() as h:
            return await async_refresh_tokens(
                family.refresh_token,
                token_endpoint=TOKEN_ENDPOINT,
                client_id=reg.client_id,
                client_secret=reg.secret,
                scope="offline",
                http_client=h,
            )

    new = asyncio.run(run())
    assert new.scope == "offline" and new.id_token is None


def test_public_client_sends_its_client_id_in_the_body(http, recorder, rt, user) -> None:  # type: ignore[no-untyped-def]
    public = register_client(rt, public=True)
    first = issue(rt, public, user)
    new = refresh_tokens(
        first.refresh_token, token_endpoint=TOKEN_ENDPOINT, client_id=public.client_id,
        http_client=http,
    )  # fmt: skip
    assert new.refresh_token
    (sent,) = recorder.sent
    assert sent.authorization is None and sent.form["client_id"] == public.client_id


def test_client_secret_post(http, recorder, reg, family) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg, auth_method="client_secret_post")
    assert oauth.refresh(family.refresh_token).refresh_token
    sent = recorder.to("/auth/v2/token")[-1]
    assert sent.authorization is None
    assert sent.form["client_id"] == reg.client_id and sent.form["client_secret"] == reg.secret


# -- OAuthClient ------------------------------------------------------------------------------


def test_from_issuer_reads_discovery_once(http, recorder, reg, family) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg)
    document = http.get("/.well-known/openid-configuration").json()
    assert oauth.metadata.issuer == ISSUER
    assert oauth.metadata.token_endpoint == document["token_endpoint"]
    assert oauth.metadata.authorization_endpoint == document["authorization_endpoint"]
    assert oauth.metadata.userinfo_endpoint == document["userinfo_endpoint"]
    assert oauth.metadata.jwks_uri == document["jwks_uri"]
    token = oauth.refresh(family.refresh_token)
    oauth.refresh(token.refresh_token)
    oauth.client_credentials()
    discovery = [s for s in recorder.sent if s.path.startswith("/.well-known/")]
    assert len(discovery) == 2  # from_issuer's, and the test's own GET


def test_discovery_issuer_must_match(http, reg) -> None:  # type: ignore[no-untyped-def]
    # The app answers for any host; its document says https://issuer.test, not this.
    with pytest.raises(InvalidResponse, match="issuer"):
        OAuthClient.from_issuer("https://impostor.test", client_id=reg.client_id, http_client=http)
    with pytest.raises(InvalidResponse, match="no discovery document"):
        OAuthClient.from_issuer(f"{ISSUER}/tenant", client_id=reg.client_id, http_client=http)


def test_client_credentials(http, reg) -> None:  # type: ignore[no-untyped-def]
    token = oauth_for(http, reg).client_credentials(scope="email")
    assert token.scope == "email" and token.refresh_token is None
    assert token.expires_in == 86400 and token.expires_at is not None


def test_refresh_and_userinfo(http, reg, family) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg)
    token = oauth.refresh(family.refresh_token)
    claims = oauth.userinfo(token)
    assert claims["sub"] == id_token_claims(token.id_token)["sub"]
    assert oauth.userinfo(token.access_token) == claims


def test_authorization_code_flow(http, reg, user) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg, redirect_uri=REDIRECT_URI)
    request = oauth.authorization_url(scope="openid offline email")
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
    assert request.url.startswith(f"{ISSUER}/auth/v2/authorize?")
    assert query == {
        "response_type": "code",
        "client_id": reg.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid offline email",
        "state": request.state,
        "nonce": request.nonce,
        "code_challenge": s256(request.code_verifier),
        "code_challenge_method": "S256",
    }
    assert 43 <= len(request.code_verifier) <= 128 and len(request.state) >= 32
    assert request.code_verifier not in repr(request)  # secrets stay out of logs

    callback = sign_in_and_consent(http, request.url, user.username)
    assert callback.startswith(REDIRECT_URI + "?")
    token = oauth.complete_authorization(callback, request)
    assert token.refresh_token and token.id_token and token.scope == "openid offline email"
    assert id_token_claims(token.id_token)["nonce"] == request.nonce
    assert oauth.userinfo(token)["email"]["email"] == "alice@example.com"
    assert oauth.refresh(token.refresh_token).refresh_token


def test_async_authorization_code_flow_and_userinfo(async_http, http, reg, user) -> None:  # type: ignore[no-untyped-def]
    async def run() -> tuple[TokenResponse, dict[str, Any]]:
        async with async_http() as h:
            oauth = await AsyncOAuthClient.from_issuer(
                ISSUER,
                client_id=reg.client_id,
                client_secret=reg.secret,
                redirect_uri=REDIRECT_URI,
                http_client=h,
            )
            request = oauth.authorization_url(scope="openid offline")
            # The person's browser is a separate (sync) client with its own cookies.
            callback = await asyncio.to_thread(
                sign_in_and_consent, http, request.url, user.username
            )
            token = await oauth.complete_authorization(callback, request)
            refreshed = await oauth.refresh(token.refresh_token)
            return refreshed, await oauth.userinfo(refreshed)

    token, claims = asyncio.run(run())
    assert token.refresh_token and claims["sub"]


def _callback(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for k, v in changes.items():
        if v is None:
            query.pop(k, None)
        else:
            query[k] = v
    return parts._replace(query=httpx.QueryParams(query).__str__()).geturl()


CALLBACK_TAMPERING = [
    ({"state": "forged"}, "state"),
    ({"state": None}, "state"),
    ({"iss": "https://impostor.test"}, "issuer"),
    ({"iss": None}, "issuer"),  # the server advertises RFC 9207, so iss must be there
    ({"code": None}, "neither code nor error"),
]


def test_callback_checks(http, reg, user) -> None:  # type: ignore[no-untyped-def]
    """One sign-in; each round, a fresh request goes straight through (session and consent
    kept), its callback is tampered with and refused, and the untouched one still works:
    the checks refused it, not the code."""
    oauth = oauth_for(http, reg, redirect_uri=REDIRECT_URI)
    for changes, message in CALLBACK_TAMPERING:
        request = oauth.authorization_url()
        callback = sign_in_and_consent(http, request.url, user.username)
        with pytest.raises(InvalidResponse, match=message):
            oauth.complete_authorization(_callback(callback, **changes), request)
        assert oauth.complete_authorization(callback, request).id_token


def test_wrong_verifier_is_refused_by_the_server(http, reg, user) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg, redirect_uri=REDIRECT_URI)
    request = oauth.authorization_url()
    code = oauth.parse_authorization_response(
        sign_in_and_consent(http, request.url, user.username), request
    )
    other = oauth.authorization_url()
    with pytest.raises(InvalidGrant, match="code_verifier"):
        oauth.exchange_code(code, code_verifier=other.code_verifier)


def test_id_token_nonce_is_checked(http, reg, user) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg, redirect_uri=REDIRECT_URI)
    request = oauth.authorization_url()
    code = oauth.parse_authorization_response(
        sign_in_and_consent(http, request.url, user.username), request
    )
    with pytest.raises(InvalidResponse, match="nonce"):
        oauth.exchange_code(code, code_verifier=request.code_verifier, nonce="another-nonce")


# -- endpoints discovery does not advertise ---------------------------------------------------


def test_revoke_and_introspect_need_advertised_endpoints(http, reg, family) -> None:  # type: ignore[no-untyped-def]
    oauth = OAuthClient(
        ServerMetadata(issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT),
        client_id=reg.client_id,
        client_secret=reg.secret,
        http_client=http,
    )
    with pytest.raises(EndpointNotSupported, match="revocation_endpoint"):
        oauth.revoke(family.refresh_token)
    with pytest.raises(EndpointNotSupported, match="introspection_endpoint"):
        oauth.introspect(family.access_token)
    with pytest.raises(EndpointNotSupported, match="userinfo_endpoint"):
        oauth.userinfo(family.access_token)
    with pytest.raises(EndpointNotSupported, match="authorization_endpoint"):
        oauth.authorization_url(redirect_uri=REDIRECT_URI)


def test_revoke_and_introspect_follow_tokends_discovery(http, recorder, reg, family) -> None:  # type: ignore[no-untyped-def]
    """Against the real discovery and the real RFC 7009/7662 endpoints it advertises."""
    oauth = oauth_for(http, reg)
    assert oauth.metadata.revocation_endpoint == f"{ISSUER}/auth/v2/revoke"
    assert oauth.metadata.introspection_endpoint == f"{ISSUER}/auth/v2/introspect"
    access = oauth.introspect(family.access_token)
    assert access.active is True and access.client_id == reg.client_id
    assert access.claims["token_type"] == "Bearer" and access.claims["sid"]
    refresh = oauth.introspect(family.refresh_token, token_type_hint="refresh_token")
    assert refresh.active is True and refresh.claims["token_type"] == "refresh_token"
    assert refresh.sub == access.sub

    assert oauth.revoke(family.refresh_token, token_type_hint="refresh_token") is None
    sent = recorder.sent[-1]
    assert sent.path == "/auth/v2/revoke"
    assert sent.form == {"token": family.refresh_token, "token_type_hint": "refresh_token"}
    with pytest.raises(InvalidGrant):
        oauth.refresh(family.refresh_token)
    # The family is gone, and with it every access token issued from it.
    assert oauth.introspect(family.access_token).active is False
    assert oauth.introspect(family.refresh_token).active is False
    oauth.revoke(family.refresh_token)  # already revoked: still a plain success


def test_revoking_an_access_token_with_the_client(http, reg, family) -> None:  # type: ignore[no-untyped-def]
    oauth = oauth_for(http, reg)
    oauth.revoke(family.access_token, token_type_hint="access_token")
    assert oauth.introspect(family.access_token).active is False
    assert oauth.introspect(family.refresh_token).active is True
    assert oauth.refresh(family.refresh_token).refresh_token


def test_async_revoke_and_introspect_against_tokend(async_http, reg, family) -> None:  # type: ignore[no-untyped-def]
    async def run() -> tuple[bool, bool]:
        async with async_http() as http:
            oauth = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=reg.client_id, client_secret=reg.secret, http_client=http
            )
            before = (await oauth.introspect(family.refresh_token)).active
            await oauth.revoke(family.refresh_token)
            return before, (await oauth.introspect(family.access_token)).active

    assert asyncio.run(run()) == (True, False)


def test_own_http_client_is_closed_and_given_one_is_not(http, reg) -> None:  # type: ignore[no-untyped-def]
    with oauth_for(http, reg) as oauth:
        assert oauth.http is http
    assert not http.is_closed
    own = OAuthClient(ServerMetadata(issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT), client_id="c")
    own.close()
    assert own.http.is_closed
