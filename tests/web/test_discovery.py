"""Discovery (web/discovery.py: OIDC Discovery 1.0 §3, RFC 8414), the JWKS (RFC 7517) that
verifies our tokens (RFC 9068 access tokens, OIDC ID tokens), and /healthz."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import urlsplit

import jwt
import pytest
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY
from tests.support.family import first_family
from tests.web.helpers import JSON, TOKEN, assert_no_store, refresh, unreachable_engines
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.runtime import build_runtime
from tokend.web.app import create_app

WELL_KNOWN = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture
def now(clock) -> float:
    """Tokens minted at the wall-clock time, so that PyJWT's exp/iat checks apply as-is."""
    clock.t = float(int(time.time()))
    return clock.t


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _keyset(http) -> jwt.PyJWKSet:
    r = http.get("/auth/jwks")
    assert r.status_code == 200
    return jwt.PyJWKSet.from_dict(r.json())


def verify_access_token(token: str, keyset: jwt.PyJWKSet) -> dict:
    """RFC 9068 §4: typ at+jwt, signature by a published key, iss and aud the issuer."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    key = keyset[header["kid"]]
    return jwt.decode(
        token,
        key=key,
        algorithms=[header["alg"]],
        audience=ISSUER,
        issuer=ISSUER,
        options={"require": ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"]},
    )


# -- the metadata documents ----------------------------------------------------------------


@pytest.mark.parametrize("path", WELL_KNOWN)
def test_metadata_document(http, rt, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == JSON
    assert r.headers["access-control-allow-origin"] == "*"
    assert "max-age=" in r.headers["cache-control"]
    meta = r.json()
    # OIDC Discovery §4.3 / RFC 8414 §3.3: issuer identical to the configured issuer.
    assert meta["issuer"] == rt.settings.issuer == ISSUER
    for name in ("issuer", "token_endpoint", "jwks_uri"):
        assert name in meta
    for name in ("response_types_supported", "subject_types_supported",
                 "id_token_signing_alg_values_supported"):  # fmt: skip
        assert isinstance(meta[name], list) and meta[name], name
    assert meta["grant_types_supported"] == sorted(rt.service.grant_types)
    assert meta["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert {"openid", "offline", "offline_access"} <= set(meta["scopes_supported"])


def test_both_documents_agree(http) -> None:
    first, second = (http.get(p).json() for p in WELL_KNOWN)
    assert first == second


@pytest.mark.parametrize("path", WELL_KNOWN)
def test_every_url_is_absolute_under_the_issuer_and_served(http, path: str) -> None:
    meta = http.get(path).json()
    urls = {k: v for k, v in meta.items() if k.endswith(("_endpoint", "_uri", "_documentation"))}
    assert {"token_endpoint", "jwks_uri"} <= set(urls)
    issuer = urlsplit(meta["issuer"])
    assert issuer.scheme == "https" and issuer.netloc and not issuer.query
    for name, url in urls.items():
        parts = urlsplit(url)
        assert parts.scheme == issuer.scheme and parts.netloc == issuer.netloc, name
        assert url.startswith(meta["issuer"] + "/"), name
        assert not parts.fragment, name
        # Each advertised URL is a route of this app (no 404).
        method = "POST" if name.endswith("_endpoint") else "GET"
        r = http.request(method, _path(url))
        assert r.status_code != 404, (name, url)
    assert _path(meta["token_endpoint"]) == TOKEN
    assert http.get(_path(meta["service_documentation"])).json()["openapi"].startswith("3.1")


def test_advertised_token_endpoint_answers_like_an_oauth_token_endpoint(http) -> None:
    meta = http.get(WELL_KNOWN[0]).json()
    r = http.post(_path(meta["token_endpoint"]), data={"grant_type": "refresh_token"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


# -- JWKS and token verification -----------------------------------------------------------


def test_jwks_shape(http, rt) -> None:
    r = http.get("/auth/jwks")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/jwk-set+json"
    assert r.headers["access-control-allow-origin"] == "*"
    keys = r.json()["keys"]
    assert keys
    for jwk in keys:
        assert not PRIVATE_JWK_MEMBERS & set(jwk), "private key material published"
        assert jwk["use"] == "sig"
        assert jwk["alg"] in {"RS256", "ES256", "EdDSA"}
        # kid is the RFC 7638 thumbprint of the required members.
        required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                    "OKP": ("crv", "kty", "x")}[jwk["kty"]]  # fmt: skip
        canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"),
                               sort_keys=True)  # fmt: skip
        digest = hashlib.sha256(canonical.encode()).digest()
        assert jwk["kid"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert len({k["kid"] for k in keys}) == len(keys)
    assert rt.keys.current_kid() in {k["kid"] for k in keys}


def test_access_and_id_tokens_verify_against_the_jwks(http, make_client, issue, now) -> None:
    reg = make_client()
    first = issue(reg, "openid offline email")
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    assert r.status_code == 200, r.text
    body = r.json()
    keyset = _keyset(http)
    meta = http.get(WELL_KNOWN[0]).json()

    for access_token in (first.access_token, body["access_token"]):
        kid = jwt.get_unverified_header(access_token)["kid"]
        assert kid in {k.key_id for k in keyset.keys}
        claims = verify_access_token(access_token, keyset)
        assert claims["aud"] == ISSUER
        assert claims["client_id"] == reg.client_id
        assert claims["exp"] == claims["iat"] + 3600
        assert claims["iat"] == int(now)
    assert claims["scope"] == "openid offline email"

    header = jwt.get_unverified_header(body["id_token"])
    assert header["alg"] in meta["id_token_signing_alg_values_supported"]
    id_claims = jwt.decode(
        body["id_token"],
        key=keyset[header["kid"]],
        algorithms=meta["id_token_signing_alg_values_supported"],
        audience=reg.client_id,
        issuer=meta["issuer"],
    )
    assert id_claims["sub"] == claims["sub"]
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert id_claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def test_token_verification_is_not_vacuous(http, make_client, issue, now) -> None:
    reg = make_client()
    access_token = issue(reg, "openid offline").access_token
    keyset = _keyset(http)
    verify_access_token(access_token, keyset)
    head, payload, signature = access_token.split(".")
    flipped = "A" if signature[10] != "A" else "B"  # a fully significant base64url digit
    forged = ".".join([head, payload, signature[:10] + flipped + signature[11:]])
    with pytest.raises(jwt.InvalidSignatureError):
        verify_access_token(forged, keyset)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(
            access_token,
            key=keyset[jwt.get_unverified_header(access_token)["kid"]],
            algorithms=["RS256"],
            audience="https://someone-else.test",
        )


def test_rotated_keys_stay_published_and_new_tokens_use_the_new_kid(
    http, rt, make_client, issue, now
) -> None:
    reg = make_client()
    before = issue(reg, "openid offline")
    old_kid = rt.keys.current_kid()
    rt.keys.rotate("RS256")
    rt.keys.load()
    new_kid = rt.keys.current_kid()
    assert new_kid != old_kid

    r = http.post(TOKEN, data=refresh(before.refresh_token), auth=reg.basic)
    assert r.status_code == 200, r.text
    after = r.json()
    assert jwt.get_unverified_header(after["access_token"])["kid"] == new_kid
    keyset = _keyset(http)
    assert {old_kid, new_kid} <= {k.key_id for k in keyset.keys}
    verify_access_token(before.access_token, keyset)
    verify_access_token(after["access_token"], keyset)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_other_signing_algorithms_verify_against_the_jwks(db_url, tmp_path, alg: str) -> None:
    """TOKEND_SIGNING_ALG signs access tokens; ID tokens stay RS256 (OIDC Core §15.1)."""
    settings = Settings(database_url=db_url, secret_key=SECRET_KEY, issuer=ISSUER, signing_alg=alg)
    rt = build_runtime(settings, clock=FrozenClock(float(int(time.time()))), prepare=True)
    try:
        family = first_family(rt, name="alg")
        with TestClient(create_app(settings, runtime=rt), base_url=ISSUER) as http:
            r = http.post(TOKEN, data=refresh(family.refresh_token), auth=family.auth)
            assert r.status_code == 200, r.text
            keyset = _keyset(http)
            meta = http.get(WELL_KNOWN[0]).json()
        body = r.json()
        for token in (family.first.access_token, body["access_token"]):
            assert jwt.get_unverified_header(token)["alg"] == alg
            assert verify_access_token(token, keyset)["sub"] == family.user.id
        id_header = jwt.get_unverified_header(body["id_token"])
        assert id_header["alg"] == "RS256"
        assert id_header["alg"] in meta["id_token_signing_alg_values_supported"]
        jwt.decode(
            body["id_token"],
            key=keyset[id_header["kid"]],
            algorithms=["RS256"],
            audience=family.client.client_id,
            issuer=ISSUER,
        )
        assert {k.key_id for k in keyset.keys} == {
            rt.keys.current_kid(),
            rt.keys.current_kid("RS256"),
        }
    finally:
        rt.close()


# -- /healthz ------------------------------------------------------------------------------


def test_healthz_ok(http) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    assert r.json() == {"status": "ok", "database": "ok", "keys": "ok"}
    live = http.get("/healthz/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert_no_store(live)


def test_healthz_database_unreachable_is_503_while_live_answers(
    http, rt, monkeypatch, tmp_path
) -> None:
    engines = unreachable_engines(rt, tmp_path)
    monkeypatch.setattr(rt.store, "engines", engines)
    try:
        r = http.get("/healthz")
        live = http.get("/healthz/live")  # liveness never asks the database
    finally:
        engines.close()
    assert r.status_code == 503
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    assert r.json() == {"status": "unavailable", "database": "unreachable", "keys": "ok"}
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    monkeypatch.undo()
    assert http.get("/healthz").status_code == 200


def test_healthz_without_a_current_signing_key_is_503(http, rt, monkeypatch) -> None:
    """Readiness also needs the key ring: a ring loaded from a database whose keys were all
    retired (or never made) can sign nothing."""
    monkeypatch.setattr(rt.keys, "_current", {})
    r = http.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "database": "ok", "keys": "missing"}
    assert http.get("/healthz/live").status_code == 200
    monkeypatch.undo()
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz", "/healthz/live", "/auth/jwks", *WELL_KNOWN, "/openapi.json"]
)
def test_get_endpoints_refuse_post_with_405_json(http, path: str) -> None:
    r = http.post(path, data={"a": "b"})
    assert r.status_code == 405
    assert r.headers["content-type"] == JSON
    assert r.json()["error"] == "invalid_request"
    assert "GET" in r.headers["allow"]


@pytest.mark.parametrize("path", WELL_KNOWN)
def test_revocation_and_introspection_are_advertised(http, path: str) -> None:
    """RFC 8414 §2: the RFC 7009 / RFC 7662 endpoints and how clients authenticate at each
    (public clients may revoke their own tokens; only confidential clients introspect)."""
    meta = http.get(path).json()
    assert meta["revocation_endpoint"] == f"{ISSUER}/auth/v2/revoke"
    assert meta["introspection_endpoint"] == f"{ISSUER}/auth/v2/introspect"
    assert meta["revocation_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert meta["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    for name in ("revocation_endpoint", "introspection_endpoint"):
        r = http.post(_path(meta[name]), data={"token": "x"})  # no client authentication
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
