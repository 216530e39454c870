"""The refresh token flow of spec/refresh-token.md over HTTP (in-process ASGI)."""

from __future__ import annotations

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
