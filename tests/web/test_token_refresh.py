"""The refresh token flow of spec/refresh-token.md over HTTP (in-process ASGI)."""

from __future__ import annotations

import base64

import jwt

TOKEN = "/auth/v2/token"


def test_spec_example_request_and_response_shape(http, make_client, issue, rt):
    reg = make_client()
    first = issue(reg, "openid offline email")
    r = http.post(
        TOKEN,
        auth=reg.basic,
        data={"grant_type": "refresh_token", "refresh_token": first.refresh_token},
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
    body = r.json()
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "id_token",
    ]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "openid offline email"
    assert body["refresh_token"] != first.refresh_token
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == rt.keys.current_kid()


def test_spec_code_example_basic_header_without_form_encoding(http, make_client, issue):
    """The spec's JavaScript sends ``btoa(clientId + ':' + clientSecret)`` without the
    RFC 6749 §2.3.1 form-encoding; generated ids and secrets (base62, ``_``) read the same
    either way, so that client works."""
    reg = make_client()
    first = issue(reg)
    raw = base64.b64encode(f"{reg.client_id}:{reg.secret}".encode()).decode()
    r = http.post(
        TOKEN,
        content=f"grant_type=refresh_token&refresh_token={first.refresh_token}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Basic " + raw,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["refresh_token"].startswith("tkd_rt_")


def test_spec_example_error_response(http, make_client, issue):
    reg = make_client()
    token = issue(reg).refresh_token
    mistyped = token[:-1] + ("A" if token[-1] != "A" else "B")
    r = http.post(
        TOKEN, auth=reg.basic, data={"grant_type": "refresh_token", "refresh_token": mistyped}
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": "invalid_grant",
        "error_description": "The refresh token was invalid or has expired.",
    }
