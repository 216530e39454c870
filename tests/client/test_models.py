"""The client's value types read what servers send and reject what the RFCs forbid:
``TokenResponse`` (RFC 6749 §5.1), ``Introspection`` (RFC 7662 §2.2), ``ServerMetadata``
(OIDC Discovery §4.3), ``DeviceAuthorization`` (RFC 8628 §3.2), and the answer parser
behind every call."""

from __future__ import annotations

import httpx
import pytest

from tokend.client import (
    DeviceAuthorization,
    Introspection,
    InvalidGrant,
    InvalidResponse,
    InvalidToken,
    ServerMetadata,
    TokenResponse,
)
from tokend.client._wire import bearer_challenge, discovery_urls, parse_token_response

BODY = {
    "access_token": "eyJhbGciOiJSUzI1NiJ9.payload.signature",
    "token_type": "Bearer",
    "expires_in": 3600,
    "refresh_token": "tkd_rt_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
    "scope": "openid offline",
    "id_token": "eyJ.id.token",
}


def test_expires_at_is_the_sending_time_plus_expires_in() -> None:
    token = TokenResponse.from_response(BODY, sent_at=1000.0)
    assert token.expires_at == 4600.0
    assert token.scopes == ("openid", "offline")
    assert not token.is_expired(now=4599.0)
    assert token.is_expired(now=4600.0)
    assert token.is_expired(skew=30, now=4571.0)
    assert not token.is_expired(skew=30, now=4569.0)


def test_without_expires_in_the_token_never_counts_as_expired() -> None:
    token = TokenResponse.from_response({"access_token": "a", "token_type": "Bearer"})
    assert token.expires_at is None and not token.is_expired(now=1e12)


def test_saved_form_round_trips_and_keeps_expires_at() -> None:
    token = TokenResponse.from_response({**BODY, "sid": "family-1"}, sent_at=1000.0)
    saved = token.to_dict()
    assert saved["expires_at"] == 4600.0 and saved["sid"] == "family-1"
    again = TokenResponse.from_dict(saved)
    assert again == token
    assert again.extra == {"sid": "family-1"}


def test_repr_never_shows_a_whole_token() -> None:
    token = TokenResponse.from_response(BODY)
    text = repr(token)
    for secret in (BODY["access_token"], BODY["refresh_token"], BODY["id_token"]):
        assert secret not in text
    assert "tkd_rt_012" in text  # enough to tell tokens apart in a log


def test_expires_in_as_a_digit_string_is_accepted() -> None:
    assert TokenResponse.from_response({**BODY, "expires_in": "60"}, sent_at=0).expires_at == 60


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"token_type": "Bearer"},
        {"access_token": "", "token_type": "Bearer"},
        {"access_token": "a"},
        {"access_token": "a", "token_type": "Bearer", "expires_in": "soon"},
        {"access_token": "a", "token_type": "Bearer", "expires_in": True},
        {"access_token": "a", "token_type": "Bearer", "refresh_token": 5},
    ],
    ids=[
        "not an object",
        "no access_token",
        "empty access_token",
        "no token_type",
        "expires_in text",
        "expires_in bool",
        "refresh_token number",
    ],
)
def test_malformed_token_responses_are_invalid_response(body: object) -> None:
    with pytest.raises(InvalidResponse):
        TokenResponse.from_response(body)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200, text="<html>ok</html>"), InvalidResponse),
        (httpx.Response(200, json={"token_type": "Bearer"}), InvalidResponse),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), InvalidResponse),
        (httpx.Response(400, json={"error": "invalid_grant"}), InvalidGrant),
        (
            httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer error="invalid_token", realm="x"'}
            ),
            InvalidToken,
        ),
    ],
    ids=["200 html", "200 no access_token", "502 html", "400 json", "401 challenge only"],
)
def test_answer_parser(response: httpx.Response, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        parse_token_response(response, sent_at=0)


def test_bearer_challenge_parameters() -> None:
    header = (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="needs \\"x\\"", scope="openid email"'
    )
    assert bearer_challenge(header) == {
        "realm": "api",
        "error": "insufficient_scope",
        "error_description": 'needs "x"',
        "scope": "openid email",
    }
    assert bearer_challenge('Basic realm="x"') == {}
    assert bearer_challenge(None) == {}


def test_introspection_needs_a_boolean_active() -> None:
    result = Introspection.from_response({"active": True, "scope": "openid", "sub": "u", "x": 1})
    assert result.active and result.scope == "openid" and result.claims["x"] == 1
    assert Introspection.from_response({"active": False}) == Introspection(
        active=False, claims={"active": False}
    )
    for body in ({}, {"active": "true"}, []):
        with pytest.raises(InvalidResponse):
            Introspection.from_response(body)


def test_metadata_issuer_must_be_the_one_asked_for() -> None:
    doc = {"issuer": "https://a.example", "token_endpoint": "https://a.example/token"}
    assert ServerMetadata.from_document(doc, issuer="https://a.example").token_endpoint == (
        "https://a.example/token"
    )
    with pytest.raises(InvalidResponse, match="issuer"):
        ServerMetadata.from_document(doc, issuer="https://b.example")
    with pytest.raises(InvalidResponse, match="token_endpoint"):
        ServerMetadata.from_document({"issuer": "https://a.example"}, issuer="https://a.example")


def test_discovery_urls_follow_oidc_then_rfc8414() -> None:
    assert discovery_urls("https://a.example/") == [
        "https://a.example/.well-known/openid-configuration",
        "https://a.example/.well-known/oauth-authorization-server",
    ]
    assert discovery_urls("https://a.example/tenant") == [
        "https://a.example/tenant/.well-known/openid-configuration",
        "https://a.example/.well-known/oauth-authorization-server/tenant",
    ]


DEVICE = {
    "device_code": "tkd_dc_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
    "user_code": "BCDF-GHJK",
    "verification_uri": "https://login.example/device",
    "verification_uri_complete": "https://login.example/device?user_code=BCDF-GHJK",
    "expires_in": 600,
    "interval": 5,
}


def test_device_authorization_reads_rfc8628_section_3_2() -> None:
    device = DeviceAuthorization.from_response({**DEVICE, "x-extra": 1}, sent_at=1000.0)
    assert (device.device_code, device.user_code) == (DEVICE["device_code"], "BCDF-GHJK")
    assert device.verification_uri_complete == DEVICE["verification_uri_complete"]
    assert (device.expires_in, device.expires_at, device.interval) == (600, 1600.0, 5)
    assert dict(device.extra) == {"x-extra": 1}
    assert "tkd_dc_" not in repr(device) and "BCDF" not in repr(device)


def test_device_authorization_defaults_and_tolerances() -> None:
    body = {k: v for k, v in DEVICE.items() if k not in ("interval", "verification_uri_complete")}
    device = DeviceAuthorization.from_response(body, sent_at=0.0)
    assert device.interval == 5  # §3.2: "If no value is provided, clients MUST use 5"
    assert device.verification_uri_complete is None
    google = {**body, "verification_url": body.pop("verification_uri"), "expires_in": "1800"}
    assert DeviceAuthorization.from_response(google).verification_uri == DEVICE["verification_uri"]


@pytest.mark.parametrize(
    "body",
    [
        [],
        {**DEVICE, "device_code": ""},
        {k: v for k, v in DEVICE.items() if k != "user_code"},
        {k: v for k, v in DEVICE.items() if k != "verification_uri"},
        {k: v for k, v in DEVICE.items() if k != "expires_in"},
        {**DEVICE, "interval": -1},
        {**DEVICE, "interval": True},
        {**DEVICE, "verification_uri_complete": 7},
    ],
)
def test_malformed_device_authorizations_are_invalid_response(body: object) -> None:
    with pytest.raises(InvalidResponse):
        DeviceAuthorization.from_response(body)


def test_metadata_reads_the_device_authorization_endpoint() -> None:
    document = {
        "issuer": "https://login.example",
        "token_endpoint": "https://login.example/token",
        "device_authorization_endpoint": "https://login.example/device/authorize",
    }
    metadata = ServerMetadata.from_document(document, issuer="https://login.example")
    assert metadata.device_authorization_endpoint == "https://login.example/device/authorize"
    with pytest.raises(InvalidResponse):
        ServerMetadata.from_document(
            {**document, "device_authorization_endpoint": 1}, issuer="https://login.example"
        )
