"""Clients nobody here wrote, against the real ``tokend serve`` on loopback (SQLite only:
what is under test is the HTTP contract, and tests/integration/test_concurrency.py covers
PostgreSQL's rotation): Authlib's ``OAuth2Session`` and ``AsyncOAuth2Client`` (refresh, and
automatic refresh with an ``update_token`` hook), requests-oauthlib's ``OAuth2Session`` with
``auto_refresh_url``, the spec's JavaScript example run by Node, and the authorization code
flow driven by Authlib (PKCE S256, sign-in and consent through the real pages, id_token
verified with joserfc, Authlib's JOSE library)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from joserfc import jwt
from joserfc.jwk import KeySet
from requests_oauthlib import OAuth2Session as RequestsOAuthlibSession

from tests.client.support import (
    REDIRECT_URI,
    issue,
    register_client,
    register_user,
    sign_in_and_consent,
)
from tokend.client import refresh_tokens

with warnings.catch_warnings():  # Authlib's httpx integration warns about its own future
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

pytestmark = pytest.mark.timeout(60)
NODE_SCRIPT = Path(__file__).parent / "interop" / "refresh_tokens.mjs"


@pytest.fixture(scope="module")
def endpoints(live) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _, base = live
    return httpx.get(f"{base}/.well-known/openid-configuration").json()


@pytest.fixture
def world(live):  # type: ignore[no-untyped-def]
    rt, _ = live
    reg = register_client(rt)
    user = register_user(rt, email="grace@example.com", email_verified=True)
    return rt, reg, user


def expired(token: Any) -> dict[str, Any]:
    """The server's token response as a client would have stored it an hour ago."""
    return {**token.to_dict(), "expires_in": 3600, "expires_at": int(time.time()) - 60}


# -- Authlib ----------------------------------------------------------------------------------


def test_authlib_oauth2session_refresh_token(world, endpoints) -> None:  # type: ignore[no-untyped-def]
    rt, reg, user = world
    family = issue(rt, reg, user)
    with AuthlibSession(reg.client_id, reg.secret) as session:
        token = session.refresh_token(
            endpoints["token_endpoint"], refresh_token=family.refresh_token
        )
        assert token["token_type"] == "Bearer" and token["scope"] == "openid offline"
        assert token["refresh_token"] != family.refresh_token
        assert token["expires_at"] >= int(time.time()) + 3500  # Authlib computed it
        r = session.get(endpoints["userinfo_endpoint"])  # Authlib adds the new Bearer
        assert r.status_code == 200 and r.json()["sub"]
        # An error reaches Authlib as the server sent it.
        with pytest.raises(AuthlibOAuthError) as info:
            session.refresh_token(endpoints["token_endpoint"], refresh_token="tkd_rt_" + "A" * 49)
    assert info.value.error == "invalid_grant"
    assert info.value.description == "The refresh token was invalid or has expired."


def test_authlib_async_client_refreshes_automatically(world, endpoints) -> None:  # type: ignore[no-untyped-def]
    rt, reg, user = world
    family = issue(rt, reg, user)
    updates: list[tuple[dict[str, Any], str | None]] = []

    async def update_token(token: dict[str, Any], refresh_token: str | None = None, **_: Any):  # type: ignore[no-untyped-def]
        updates.append((dict(token), refresh_token))

    async def run() -> list[int]:
        async with AsyncOAuth2Client(
            reg.client_id,
            reg.secret,
            token=expired(family),
            token_endpoint=endpoints["token_endpoint"],
            update_token=update_token,
        ) as client:
            first = await client.get(endpoints["userinfo_endpoint"])
            again = await client.get(endpoints["userinfo_endpoint"])  # no second refresh
            return [first.status_code, again.status_code]

    assert asyncio.run(run()) == [200, 200]
    ((token, spent),) = updates
    assert spent == family.refresh_token
    assert token["refresh_token"] not in (None, family.refresh_token)
    # What the hook was given is a working token: the application would store it.
    assert refresh_tokens(
        token["refresh_token"],
        token_endpoint=endpoints["token_endpoint"],
        client_id=reg.client_id,
        client_secret=reg.secret,
    ).refresh_token


# -- requests-oauthlib ------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["client_secret_post", "client_secret_basic"])
def test_requests_oauthlib_auto_refresh(world, endpoints, monkeypatch, auth) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    rt, reg, user = world
    family = issue(rt, reg, user)
    updated: list[dict[str, Any]] = []
    credentials = {"client_id": reg.client_id, "client_secret": reg.secret}
    session = RequestsOAuthlibSession(
        reg.client_id,
        token=expired(family),
        auto_refresh_url=endpoints["token_endpoint"],
        # The documented way: client credentials in the refresh body ...
        auto_refresh_kwargs=credentials if auth == "client_secret_post" else {},
        token_updater=updated.append,
    )
    with session:
        # ... or, per request, as HTTP Basic.
        extra = credentials if auth == "client_secret_basic" else {}
        r = session.get(endpoints["userinfo_endpoint"], **extra)
        assert r.status_code == 200, r.text
        r = session.get(endpoints["userinfo_endpoint"], **extra)
        assert r.status_code == 200, r.text
    (token,) = updated
    assert token["refresh_token"] not in (None, family.refresh_token)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600


# -- Node: the spec's example -----------------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node (Node.js 20) is required for the interop tests in CI")
        pytest.skip("node is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    major = int(re.match(r"v(\d+)", version).group(1))  # type: ignore[union-attr]
    assert major >= 18, f"the spec's example needs fetch and btoa (Node 18+), found {version}"
    return node


def run_spec_example(token_endpoint: str, client_id: str, secret: str, refresh_token: str) -> Any:
    return subprocess.run(
        [_node(), str(NODE_SCRIPT), refresh_token],
        env={
            **os.environ,
            "TOKEN_ENDPOINT": token_endpoint,
            "CLIENT_ID": client_id,
            "CLIENT_SECRET": secret,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_node_spec_example_refreshes(world, endpoints) -> None:  # type: ignore[no-untyped-def]
    rt, reg, user = world
    family = issue(rt, reg, user)
    out = run_spec_example(
        endpoints["token_endpoint"], reg.client_id, reg.secret, family.refresh_token
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "id_token",
    }
    assert data["token_type"] == "Bearer" and data["expires_in"] == 3600
    assert data["refresh_token"] != family.refresh_token
    # What Node got is a working refresh token for the Python client.
    assert refresh_tokens(
        data["refresh_token"],
        token_endpoint=endpoints["token_endpoint"],
        client_id=reg.client_id,
        client_secret=reg.secret,
    ).refresh_token


@pytest.mark.parametrize("case", ["invalid_grant", "invalid_client"])
def test_node_spec_example_throws_the_error_description(world, endpoints, case) -> None:  # type: ignore[no-untyped-def]
    rt, reg, user = world
    family = issue(rt, reg, user)
    token, secret = family.refresh_token, reg.secret
    if case == "invalid_grant":
        token = "tkd_rt_" + "A" * 49
    else:
        secret = "not-the-secret"
    # What the server says to this very request, asked without Node:
    expected = httpx.post(
        endpoints["token_endpoint"],
        auth=(reg.client_id, secret),
        data={"grant_type": "refresh_token", "refresh_token": token},
    ).json()
    assert expected["error"] == case
    out = run_spec_example(endpoints["token_endpoint"], reg.client_id, secret, token)
    assert out.returncode == 1
    assert f"refreshTokens threw: {expected['error_description']}\n" in out.stderr
    assert "Error refreshing tokens:" in out.stderr  # the spec's console.error ran
    assert out.stdout == ""


# -- the authorization code flow, driven by Authlib ---------------------------------------------


def test_authlib_authorization_code_flow_with_pkce(world, endpoints, live) -> None:  # type: ignore[no-untyped-def]
    _, base = live
    _, reg, user = world
    verifier, nonce = generate_token(64), generate_token(24)
    with AuthlibSession(
        reg.client_id,
        reg.secret,
        scope="openid offline email",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
    ) as client:
        url, state = client.create_authorization_url(
            endpoints["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        with httpx.Client() as browser:  # the user's browser, cookies and all
            callback = sign_in_and_consent(browser, url, user.username)
        assert callback.startswith(REDIRECT_URI + "?")
        token = client.fetch_token(
            endpoints["token_endpoint"],
            authorization_response=callback,
            state=state,
            code_verifier=verifier,
        )
        assert token["scope"] == "openid offline email" and token["refresh_token"]
        r = client.get(endpoints["userinfo_endpoint"])
        assert r.status_code == 200 and r.json()["email"]["email"] == "grace@example.com"
        refreshed = client.refresh_token(endpoints["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]

    keys = KeySet.import_key_set(httpx.get(endpoints["jwks_uri"]).json())
    id_token = jwt.decode(token["id_token"], keys)
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": base},
        aud={"essential": True, "value": reg.client_id},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True, "value": r.json()["sub"]},
        exp={"essential": True},
    ).validate(id_token.claims)


def test_authlib_code_flow_without_pkce_verifier_is_refused(world, endpoints) -> None:  # type: ignore[no-untyped-def]
    """The same flow, but the token request forgets the code_verifier: the server refuses
    it and Authlib reports the server's error."""
    _, reg, user = world
    with AuthlibSession(
        reg.client_id, reg.secret, scope="openid", redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
    ) as client:  # fmt: skip
        url, state = client.create_authorization_url(
            endpoints["authorization_endpoint"], code_verifier=generate_token(64)
        )
        with httpx.Client() as browser:
            callback = sign_in_and_consent(browser, url, user.username)
        with pytest.raises(AuthlibOAuthError) as info:
            client.fetch_token(
                endpoints["token_endpoint"], authorization_response=callback, state=state
            )
    assert info.value.error == "invalid_grant"
    assert "code_verifier" in info.value.description
