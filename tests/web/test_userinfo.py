"""The UserInfo endpoint over HTTP (web/userinfo.py; OIDC Core §5.3, RFC 6750): GET and POST,
the bearer token in the Authorization header or a POST form body and nowhere else, every
reason a token is refused (401 invalid_token, 403 insufficient_scope, 400 invalid_request,
each with its WWW-Authenticate challenge), the claims each scope selects, and pairwise
subjects (OIDC Core §8.1) across clients, tokens and refreshes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY, RegisteredClient
from tests.support.family import register_client, register_user, start_family
from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    JSON,
    TOKEN,
    USERINFO,
    assert_bearer_error,
    assert_no_store,
    assert_oauth_error,
    bearer,
    refresh,
)
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.models import User
from tokend.core.secrets import new_id
from tokend.core.subjects import pairwise_subject
from tokend.keys.material import derive
from tokend.keys.ring import generate_private_key, public_jwk
from tokend.runtime import Runtime, build_runtime
from tokend.store.schema import users
from tokend.web.app import create_app

ALL_SCOPES = "openid offline email profile phone names picture"
PROFILE = {
    "email": "alice@example.com",
    "email_verified": True,
    "given_name": "Alice",
    "family_name": "Liddell",
    "phone_number": "+441234567890",
    "phone_number_verified": False,
    "picture": "https://img.example/alice.png",
}


# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures(reset_clock=True)


@pytest.fixture
def alice(rt: Runtime, user: User) -> User:
    """The ``issue`` fixture's user, with a full profile."""
    updated = rt.store.update_user(user.username, PROFILE, now=rt.clock.now())
    assert updated is not None
    return updated


@pytest.fixture
def app(make_client) -> RegisteredClient:
    return make_client(scopes=ALL_SCOPES)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """``header.payload`` of a compact JWS, for hand-made tokens."""
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())


# -- success -----------------------------------------------------------------------------------


def assert_userinfo(r, expected: dict[str, Any]) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    assert "www-authenticate" not in r.headers
    assert r.json() == expected


def test_get_and_post_return_the_claims(http, app, alice, issue) -> None:
    token = issue(app, ALL_SCOPES).access_token
    expected = {
        "sub": alice.id,
        "names": {
            "first_name": "Alice",
            "family_name": "Liddell",
            "full_name": "Alice Liddell",
            "is_verified": False,
        },
        "given_name": "Alice",
        "family_name": "Liddell",
        "name": "Alice Liddell",
        "picture": "https://img.example/alice.png",
        "email": {"email": "alice@example.com", "is_verified": True, "is_primary": True},
        "email_verified": True,
        "phone": {"phone_number": "+441234567890", "is_verified": False, "is_primary": True},
        "phone_number": "+441234567890",
        "phone_number_verified": False,
    }
    assert_userinfo(http.get(USERINFO, headers=bearer(token)), expected)
    assert_userinfo(http.post(USERINFO, headers=bearer(token)), expected)
    # RFC 6750 §2.2: the form body parameter, and the scheme name in any case (RFC 7235).
    assert_userinfo(http.post(USERINFO, data={"access_token": token}), expected)
    assert_userinfo(http.get(USERINFO, headers={"Authorization": f"bearer {token}"}), expected)
    # A POST body of another type, or other form fields, do not matter with the header.
    r = http.post(USERINFO, headers=bearer(token), data={"other": "x"})
    assert_userinfo(r, expected)
    r = http.post(USERINFO, headers={**bearer(token), "Content-Type": JSON}, content=b"{}")
    assert_userinfo(r, expected)


@pytest.mark.parametrize(
    ("scope", "keys"),
    [
        ("openid", set()),
        ("openid offline", set()),
        ("openid names", {"names", "given_name", "family_name", "name"}),
        ("openid picture", {"picture"}),
        ("openid profile", {"names", "given_name", "family_name", "name", "picture"}),
        ("openid email", {"email", "email_verified"}),
        ("openid phone", {"phone", "phone_number", "phone_number_verified"}),
    ],
)
def test_scope_selects_the_claims(http, app, alice, issue, scope: str, keys: set[str]) -> None:
    r = http.get(USERINFO, headers=bearer(issue(app, scope).access_token))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"sub"} | keys


def test_refreshed_token_serves_its_narrowed_scope(http, app, alice, issue) -> None:
    first = issue(app, "openid offline email phone")
    r = http.post(TOKEN, data=refresh(first.refresh_token, scope="openid phone"), auth=app.basic)
    assert r.status_code == 200, r.text
    got = http.get(USERINFO, headers=bearer(r.json()["access_token"])).json()
    assert set(got) == {"sub", "phone", "phone_number", "phone_number_verified"}
    # The first access token still carries (and serves) its own, wider scope.
    assert "email" in http.get(USERINFO, headers=bearer(first.access_token)).json()


def test_unknown_profile_values_are_left_out(http, app, user, issue) -> None:
    r = http.get(USERINFO, headers=bearer(issue(app, ALL_SCOPES).access_token))
    assert_userinfo(r, {"sub": user.id})


def test_profile_changes_show_at_once(http, rt, app, alice, issue) -> None:
    token = issue(app, "openid email").access_token
    rt.store.update_user(alice.username, {"email": "new@example.com"}, now=rt.clock.now())
    assert http.get(USERINFO, headers=bearer(token)).json()["email"]["email"] == "new@example.com"


def test_token_stays_valid_until_just_before_exp(http, app, alice, issue, clock) -> None:
    token = issue(app, "openid").access_token
    exp = claims_of(token)["exp"]
    clock.t = exp - 1
    assert http.get(USERINFO, headers=bearer(token)).status_code == 200
    clock.t = exp  # RFC 7519 §4.1.4: "on or after" exp it MUST NOT be accepted
    assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)


def test_tokens_of_a_retired_key_still_work(http, rt, app, alice, issue) -> None:
    before = issue(app, "openid").access_token
    rt.keys.rotate(rt.keys.access_token_alg)
    rt.keys.load()
    after = issue(app, "openid").access_token
    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    for token in (before, after):
        assert http.get(USERINFO, headers=bearer(token)).json()["sub"] == alice.id


# -- no token: the bare challenge (RFC 6750 §3.1) ----------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YTpi"}, {"Authorization": "Token abc"}],
    ids=["no-header", "basic", "other-scheme"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_token_gets_the_bare_challenge(http, headers, method) -> None:
    r = http.request(method, USERINFO, headers=headers)
    assert_oauth_error(r, "invalid_token", 401)
    assert r.headers["www-authenticate"] == "Bearer"


def test_empty_form_token_is_no_token(http) -> None:
    r = http.post(USERINFO, data={"access_token": ""})
    assert_oauth_error(r, "invalid_token", 401)
    assert r.headers["www-authenticate"] == "Bearer"


# -- invalid tokens: 401 invalid_token ---------------------------------------------------------

Forge = Callable[[Runtime, str], str]


def _tampered_signature(rt: Runtime, token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"  # a fully significant base64url digit
    return ".".join([head, payload, signature[:10] + flipped + signature[11:]])


def _tampered_payload(rt: Runtime, token: str) -> str:
    head, _, signature = token.split(".")
    claims = {**claims_of(token), "scope": "openid email phone profile"}
    return ".".join([head, b64(json.dumps(claims).encode()), signature])


def _alg_none(rt: Runtime, token: str) -> str:
    header = {**jwt.get_unverified_header(token), "alg": "none"}
    return unsigned(header, claims_of(token)) + "."


def _hs256_with_public_key(rt: Runtime, token: str) -> str:
    """The classic confusion attack: HMAC keyed with the (public) verification key."""
    header = {**jwt.get_unverified_header(token), "alg": "HS256"}
    public = rt.keys.verification_keys()[header["kid"]].key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = unsigned(header, claims_of(token))
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def _foreign_key(rt: Runtime, token: str) -> str:
    """Signed by a key that is not ours, naming its own kid."""
    key = generate_private_key("RS256")
    kid = public_jwk(key, "RS256")["kid"]
    return jwt.encode(claims_of(token), key, "RS256", headers={"kid": kid, "typ": "at+jwt"})


def _foreign_key_our_kid(rt: Runtime, token: str) -> str:
    key = generate_private_key("RS256")
    header = jwt.get_unverified_header(token)
    return jwt.encode(claims_of(token), key, "RS256", headers=header)


def _no_kid(rt: Runtime, token: str) -> str:
    _, payload, signature = token.split(".")
    header = {k: v for k, v in jwt.get_unverified_header(token).items() if k != "kid"}
    return ".".join([b64(json.dumps(header).encode()), payload, signature])


def _resigned(**changes: Any) -> Forge:
    """The token's claims changed, re-signed with our own current key: only the claim
    checks can refuse it."""
    return lambda rt, token: rt.keys.sign_access_token({**claims_of(token), **changes})


def _without(claim: str) -> Forge:
    def forge(rt: Runtime, token: str) -> str:
        return rt.keys.sign_access_token({k: v for k, v in claims_of(token).items() if k != claim})

    return forge


FORGERIES: dict[str, Forge] = {
    "tampered-signature": _tampered_signature,
    "tampered-payload": _tampered_payload,
    "alg-none": _alg_none,
    "hs256-signed-with-public-key": _hs256_with_public_key,
    "foreign-key": _foreign_key,
    "foreign-key-with-our-kid": _foreign_key_our_kid,
    "no-kid": _no_kid,
    "truncated": lambda rt, token: token.rsplit(".", 1)[0],
    "wrong-issuer": _resigned(iss="https://evil.test"),
    "wrong-audience": _resigned(aud="https://api.other.test"),
    "expired-exp": lambda rt, token: _resigned(exp=int(rt.clock.now()) - 1)(rt, token),
    "no-exp": _without("exp"),
    "no-sub": _without("sub"),
    "future-nbf": lambda rt, token: _resigned(nbf=rt.clock.now() + 60)(rt, token),
    "wrong-typ-id-token-header": lambda rt, token: rt.keys.sign_id_token(claims_of(token)),
    "unknown-family": _resigned(sid="no-such-family"),
    "other-subject": _resigned(sub="mallory"),
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_or_invalid_tokens_are_refused(http, rt, app, alice, issue, forge) -> None:
    token = issue(app, ALL_SCOPES).access_token
    assert http.get(USERINFO, headers=bearer(token)).status_code == 200  # the original is fine
    forged = forge(rt, token)
    assert forged != token
    for r in (
        http.get(USERINFO, headers=bearer(forged)),
        http.post(USERINFO, data={"access_token": forged}),
    ):
        assert_bearer_error(r, "invalid_token", 401, leaks=(forged, alice.email or ""))


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", "Bearer a b", "Bearer tok\u00e9n", "Bearer abc.def.ghi", "Bearer ===="],
    ids=["no-token", "blank", "two-tokens", "non-b64token", "not-a-jwt", "only-padding"],
)
def test_malformed_credentials(http, authorization: str) -> None:
    r = http.get(USERINFO, headers={"Authorization": authorization.encode()})
    assert_bearer_error(r, "invalid_token", 401)


def test_id_token_is_not_an_access_token(http, app, alice, issue) -> None:
    id_token = issue(app, "openid").id_token
    assert id_token is not None
    assert_bearer_error(http.get(USERINFO, headers=bearer(id_token)), "invalid_token", 401)


def test_refresh_token_is_not_an_access_token(http, app, alice, issue) -> None:
    token = issue(app, "openid offline").refresh_token
    assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)


def test_expired_by_the_clock(http, app, alice, issue, clock) -> None:
    token = issue(app, "openid").access_token
    clock.advance(3600 + 1)
    body = assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)
    assert "expired" in body["error_description"]


def test_revoked_family(http, rt, app, alice, issue) -> None:
    token = issue(app, "openid offline").access_token
    other = issue(app, "openid offline").access_token
    assert http.get(USERINFO, headers=bearer(token)).status_code == 200
    n = rt.store.revoke_families(
        now=rt.clock.now(), reason="test", family_id=claims_of(token)["sid"]
    )
    assert n == 1
    body = assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)
    assert "revoked" in body["error_description"]
    assert http.get(USERINFO, headers=bearer(other)).status_code == 200  # only that family


def test_reused_refresh_token_revokes_the_access_tokens_too(
    http, rt, app, alice, issue, clock
) -> None:
    """Reuse detection (DESIGN.md) kills the family; its access tokens stop working here."""
    first = issue(app, "openid offline")
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=app.basic)
    assert r.status_code == 200
    rotated = r.json()["access_token"]
    assert http.get(USERINFO, headers=bearer(rotated)).status_code == 200
    clock.advance(rt.policy.grace(app.client) + 1)
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=app.basic)
    assert r.json()["error"] == "invalid_grant"
    for token in (first.access_token, rotated):
        assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)


def test_client_credentials_token_is_not_a_user_token(http, app) -> None:
    r = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=app.basic)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert claims_of(token)["sub"] == app.client_id and "sid" not in claims_of(token)
    body = assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)
    assert "user" in body["error_description"]


def test_deleted_user(http, rt, app, alice, issue) -> None:
    token = issue(app, "openid email").access_token
    assert http.get(USERINFO, headers=bearer(token)).status_code == 200
    with rt.store.engine.begin() as conn:
        conn.execute(delete(users).where(users.c.id == alice.id))
    assert_bearer_error(
        http.get(USERINFO, headers=bearer(token)), "invalid_token", 401, leaks=(alice.email,)
    )


def test_user_gone_but_family_left(http, rt, app, alice, issue, monkeypatch) -> None:
    """The user check itself (the foreign key normally takes the family with the user)."""
    token = issue(app, "openid").access_token
    real = rt.store.get_family_and_user

    def without_user(family_id: str):  # type: ignore[no-untyped-def]
        family, user = real(family_id)
        assert user is not None
        return family, None

    monkeypatch.setattr(rt.store, "get_family_and_user", without_user)
    body = assert_bearer_error(http.get(USERINFO, headers=bearer(token)), "invalid_token", 401)
    assert "user" in body["error_description"]


# -- 403 insufficient_scope --------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["email offline", "profile email phone", "offline"])
def test_token_without_openid_is_insufficient_scope(http, app, alice, issue, scope) -> None:
    token = issue(app, scope).access_token
    for r in (
        http.get(USERINFO, headers=bearer(token)),
        http.post(USERINFO, data={"access_token": token}),
    ):
        assert_bearer_error(r, "insufficient_scope", 403, leaks=(alice.email,))
        assert r.headers["www-authenticate"].endswith(', scope="openid"')


# -- 400 invalid_request: where the token may (not) be -----------------------------------------


def test_token_in_the_query_string_is_refused(http, app, alice, issue) -> None:
    token = issue(app, "openid").access_token
    for r in (
        http.get(USERINFO, params={"access_token": token}),
        http.get(USERINFO, params={"access_token": token}, headers=bearer(token)),
        http.post(USERINFO, params={"access_token": token}),
    ):
        body = assert_bearer_error(r, "invalid_request", 400, leaks=(token,))
        assert "query" in body["error_description"]


def test_token_sent_twice_is_refused(http, app, alice, issue) -> None:
    token = issue(app, "openid").access_token
    r = http.post(USERINFO, headers=bearer(token), data={"access_token": token})
    assert_bearer_error(r, "invalid_request", 400, leaks=(token,))
    r = http.post(
        USERINFO,
        content=f"access_token={token}&access_token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_bearer_error(r, "invalid_request", 400, leaks=(token,))


def test_form_token_only_in_a_post_form_body(http, app, alice, issue) -> None:
    """RFC 6750 §2.2: form-encoded, POST; a JSON body is not a place for the token."""
    token = issue(app, "openid").access_token
    body = json.dumps({"access_token": token})
    r = http.post(USERINFO, content=body, headers={"Content-Type": JSON})
    assert_oauth_error(r, "invalid_token", 401)
    assert r.headers["www-authenticate"] == "Bearer"


def test_description_is_a_valid_quoted_string(http, app, alice, issue) -> None:
    """A parameter name with a quote in it is echoed in the body, but never breaks the
    challenge's quoted-string."""
    r = http.post(
        USERINFO,
        content='a"b=1&a"b=2',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert r.headers["www-authenticate"].count('"') == 4, r.headers["www-authenticate"]


def test_oversized_body(http) -> None:
    r = http.post(USERINFO, data={"access_token": "x" * 20_000})
    assert r.status_code == 413
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


# -- pairwise subjects (OIDC Core §8.1) --------------------------------------------------------


def _register(rt: Runtime, *redirect_uris: str, subject_type: str = "pairwise") -> RegisteredClient:
    return register_client(
        rt,
        name="pairwise",
        scopes="openid offline email",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=redirect_uris,
        subject_type=subject_type,
    )


def _subjects(http, token_response) -> set[str]:
    """The sub of the access token, of the ID token, and of the UserInfo response."""
    assert token_response.id_token is not None
    r = http.get(USERINFO, headers=bearer(token_response.access_token))
    assert r.status_code == 200, r.text
    return {
        claims_of(token_response.access_token)["sub"],
        claims_of(token_response.id_token)["sub"],
        r.json()["sub"],
    }


def test_pairwise_subjects(http, rt, alice, issue) -> None:
    a = _register(rt, "https://a.example/cb")
    a_too = _register(rt, "https://a.example/other", "https://a.example:8443/cb")
    b = _register(rt, "https://b.example/cb")
    public = _register(rt, "https://a.example/cb", subject_type="public")
    salt = derive(SECRET_KEY, "pairwise-subject")

    [sub_a] = _subjects(http, issue(a, "openid offline"))
    assert sub_a == pairwise_subject("a.example", alice.id, salt)
    assert _subjects(http, issue(a, "openid")) == {sub_a}  # stable for the client
    assert _subjects(http, issue(a_too, "openid")) == {sub_a}  # and for its sector
    [sub_b] = _subjects(http, issue(b, "openid"))
    assert sub_b == pairwise_subject("b.example", alice.id, salt)
    assert _subjects(http, issue(public, "openid")) == {alice.id}
    assert len({sub_a, sub_b, alice.id}) == 3


def test_pairwise_subject_survives_refresh(http, rt, alice, issue) -> None:
    a = _register(rt, "https://a.example/cb")
    first = issue(a, "openid offline")
    [sub] = _subjects(http, first)
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=a.basic)
    assert r.status_code == 200, r.text
    body = r.json()
    assert claims_of(body["access_token"])["sub"] == sub
    assert claims_of(body["id_token"])["sub"] == sub
    assert http.get(USERINFO, headers=bearer(body["access_token"])).json()["sub"] == sub


def test_pairwise_subjects_differ_per_user(http, rt, issue, alice) -> None:
    a = _register(rt, "https://a.example/cb")
    bob = register_user(rt, username=f"bob{new_id()[:6]}")
    bobs = start_family(rt, a, bob, "openid")
    assert _subjects(http, bobs) != _subjects(http, issue(a, "openid"))


# -- discovery and other signing algorithms ----------------------------------------------------


def test_discovery_advertises_userinfo_and_pairwise(http) -> None:
    meta = http.get("/.well-known/openid-configuration").json()
    assert meta["userinfo_endpoint"] == ISSUER + USERINFO
    assert meta["subject_types_supported"] == ["public", "pairwise"]
    assert {"email", "email_verified", "names", "phone", "picture"} <= set(meta["claims_supported"])


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_other_signing_algorithms(db_url, alg: str) -> None:
    settings = Settings(database_url=db_url, secret_key=SECRET_KEY, issuer=ISSUER, signing_alg=alg)
    runtime = build_runtime(settings, clock=FrozenClock(), prepare=True)
    try:
        user = register_user(runtime, username="u", email="u@x.test")
        reg = _register(runtime, "https://a.example/cb", subject_type="public")
        token = start_family(runtime, reg, user, "openid email").access_token
        assert jwt.get_unverified_header(token)["alg"] == alg
        with TestClient(create_app(settings, runtime=runtime), base_url=ISSUER) as client:
            r = client.get(USERINFO, headers=bearer(token))
            assert r.status_code == 200, r.text
            assert r.json()["email"]["email"] == "u@x.test"
            # The RS256 key (for ID tokens) is published too, but not for this token's kid.
            rs = runtime.keys.sign_id_token(claims_of(token))
            assert_bearer_error(client.get(USERINFO, headers=bearer(rs)), "invalid_token", 401)
    finally:
        runtime.close()
