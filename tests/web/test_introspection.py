"""``POST /auth/v2/introspect`` over HTTP (RFC 7662, Didit's shape), on SQLite and
PostgreSQL: the response for each kind of active token, ``{"active": false}`` alone for every
token that is not active (revoked, reuse-detected, expired, spent, unknown, malformed, not
ours), who may introspect, that lookups take no lock, and clean errors for bad requests."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update

from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    INACTIVE,
    INTROSPECT,
    JSON,
    TOKEN,
    assert_oauth_error,
    basic,
    bearer,
    introspection,
    refresh,
    storage_snapshot,
)
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.secrets import hash_secret, new_refresh_token
from tokend.store.schema import token_families, users

HINTS = [None, "refresh_token", "access_token", "unknown_hint"]


# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures(reset_clock=True)


@pytest.fixture
def rs(make_client):
    """A resource server: a confidential client of its own."""
    return make_client(scopes="openid")


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def ask(http, rs, token: str, hint: str | None = None) -> dict[str, Any]:
    data = {"token": token} if hint is None else {"token": token, "token_type_hint": hint}
    return introspection(http.post(INTROSPECT, data=data, auth=rs.basic))


def sid_of(token: str) -> str:
    return claims(token)["sid"]


# -- active tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("hint", HINTS)
def test_active_access_token(http, rt, make_client, issue, user, rs, hint) -> None:
    reg = make_client()
    tokens = issue(reg, "openid offline email")
    c = claims(tokens.access_token)
    now = int(rt.clock.now())
    expected = {
        "active": True,
        "iss": rt.settings.issuer,
        "sub": user.id,
        "aud": rt.settings.issuer,
        "client_id": reg.client_id,
        "scope": "openid offline email",
        "exp": now + 3600,
        "iat": now,
        "auth_time": now,
        "jti": c["jti"],
        "sid": c["sid"],
        "token_type": "Bearer",
    }
    # A resource server asks about a token issued to another client; so may the client.
    assert ask(http, rs, tokens.access_token, hint) == expected
    assert ask(http, reg, tokens.access_token, hint) == expected


@pytest.mark.parametrize("hint", HINTS)
def test_active_refresh_token(http, rt, make_client, issue, user, rs, hint) -> None:
    reg = make_client()
    tokens = issue(reg, "openid offline")
    now = rt.clock.now()
    assert ask(http, rs, tokens.refresh_token, hint) == {
        "active": True,
        "iss": rt.settings.issuer,
        "sub": user.id,
        "client_id": reg.client_id,
        "scope": "openid offline",
        "exp": int(now + rt.settings.refresh_token_idle_ttl),  # idle expiry comes first
        "iat": int(now),
        "sid": sid_of(tokens.access_token),
        "token_type": "refresh_token",
    }


def test_refresh_token_exp_is_the_earlier_of_idle_and_family_expiry(
    http, rt, make_client, issue, rs, clock
) -> None:
    reg = make_client(refresh_token_ttl=100, refresh_idle_ttl=60)
    t0 = rt.clock.now()
    first = issue(reg)
    assert ask(http, rs, first.refresh_token)["exp"] == int(t0 + 60)
    clock.advance(50)
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    second = r.json()["refresh_token"]
    got = ask(http, rs, second)
    # Rotation never extends the family: min(t0+50+60, t0+100).
    assert (got["iat"], got["exp"]) == (int(t0 + 50), int(t0 + 100))
    clock.t = t0 + 99
    assert ask(http, rs, second)["active"] is True
    clock.t = t0 + 100
    assert ask(http, rs, second) == INACTIVE


def test_idle_expiry(http, rt, make_client, issue, rs, clock) -> None:
    reg = make_client(refresh_idle_ttl=60)
    tokens = issue(reg)
    clock.advance(59)
    assert ask(http, rs, tokens.refresh_token)["active"] is True
    clock.advance(1)
    assert ask(http, rs, tokens.refresh_token) == INACTIVE


def test_access_token_expiry(http, make_client, issue, rs, clock) -> None:
    tokens = issue(make_client(), "openid offline")
    exp = claims(tokens.access_token)["exp"]
    clock.t = exp - 1
    assert ask(http, rs, tokens.access_token)["active"] is True
    clock.t = exp  # RFC 7519 §4.1.4: on or after exp it is no longer valid
    assert ask(http, rs, tokens.access_token) == INACTIVE
    assert ask(http, rs, tokens.refresh_token)["active"] is True


def test_pairwise_subject_is_the_tokens(http, make_client, issue, user, rs) -> None:
    reg = make_client(subject_type="pairwise")
    tokens = issue(reg, "openid offline")
    sub = claims(tokens.access_token)["sub"]
    assert sub != user.id
    assert ask(http, rs, tokens.access_token)["sub"] == sub
    assert ask(http, rs, tokens.refresh_token)["sub"] == sub


def test_client_credentials_token(http, rt, make_client, rs) -> None:
    reg = make_client()
    r = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=reg.basic)
    token = r.json()["access_token"]
    got = ask(http, rs, token)
    assert got["active"] is True and got["sub"] == reg.client_id == got["client_id"]
    assert got["token_type"] == "Bearer"
    assert "sid" not in got and "auth_time" not in got
    # Its client deleted, the token is no longer active (though its JWT still verifies).
    assert rt.store.delete_client(reg.client_id)
    assert ask(http, rs, token) == INACTIVE


def test_dpop_bound_tokens_carry_cnf(http, rt, make_client, issue, rs) -> None:
    """RFC 9449 §6: an access token with cnf.jkt is token_type DPoP, and a refresh token of a
    family bound to a key shows that key's thumbprint."""
    reg = make_client(public=True)
    tokens = issue(reg, "openid offline")
    jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    bound = rt.keys.sign_access_token({**claims(tokens.access_token), "cnf": {"jkt": jkt}})
    got = ask(http, rs, bound)
    assert (got["active"], got["token_type"], got["cnf"]) == (True, "DPoP", {"jkt": jkt})
    assert "cnf" not in ask(http, rs, tokens.refresh_token)
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(token_families)
            .where(token_families.c.id == sid_of(tokens.access_token))
            .values(dpop_jkt=jkt)
        )
    got = ask(http, rs, tokens.refresh_token)
    assert (got["token_type"], got["cnf"]) == ("refresh_token", {"jkt": jkt})


# -- inactive: revoked, reuse-detected, spent ------------------------------------------------------


def test_spent_refresh_token_is_inactive_even_inside_the_grace_window(
    http, make_client, issue, rs
) -> None:
    reg = make_client()
    first = issue(reg)
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    assert ask(http, rs, first.refresh_token) == INACTIVE
    assert ask(http, rs, r.json()["refresh_token"])["active"] is True
    # The grace window still serves a retry; the token stays spent.
    retry = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    assert retry.status_code == 200
    assert ask(http, rs, first.refresh_token) == INACTIVE


def test_reuse_detection_makes_every_token_of_the_family_inactive(
    http, rt, make_client, issue, rs
) -> None:
    reg = make_client(refresh_grace=0)
    first = issue(reg, "openid offline")
    second = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic).json()
    for token in (first.access_token, second["access_token"], second["refresh_token"]):
        assert ask(http, rs, token)["active"] is True
    reuse = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    assert_oauth_error(reuse, "invalid_grant")
    for token in (first.access_token, first.refresh_token, second["access_token"],
                  second["refresh_token"]):  # fmt: skip
        assert ask(http, rs, token) == INACTIVE


@pytest.mark.parametrize("how", ["admin", "user", "client deleted", "user deleted"])
def test_revoked_or_deleted_family_makes_its_tokens_inactive(
    http, rt, make_client, issue, user, rs, how
) -> None:
    reg = make_client()
    tokens = issue(reg, "openid offline")
    other = issue(make_client(), "openid offline")  # another client's family of the same user
    sid = sid_of(tokens.access_token)
    if how == "admin":
        assert rt.store.revoke_families(now=rt.clock.now(), reason="admin", family_id=sid) == 1
    elif how == "user":
        assert rt.accounts.revoke_family(user.id, sid)
    elif how == "client deleted":
        assert rt.store.delete_client(reg.client_id)
    else:
        with rt.store.engine.begin() as conn:  # its families go with it (ON DELETE CASCADE)
            conn.execute(users.delete().where(users.c.id == user.id))
    assert ask(http, rs, tokens.access_token) == INACTIVE
    assert ask(http, rs, tokens.refresh_token) == INACTIVE
    # The user's family at another client lives on, unless the user is gone.
    assert ask(http, rs, other.access_token)["active"] is (how != "user deleted")


@pytest.mark.parametrize("hint", HINTS)
def test_anything_else_is_inactive_and_nothing_more(http, rt, make_client, issue, rs, hint) -> None:
    reg = make_client()
    tokens = issue(reg, "openid offline")
    c = claims(tokens.access_token)
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    head, payload, sig = tokens.access_token.split(".")
    flipped = "A" if sig[10] != "A" else "B"
    candidates = [
        "x",
        "a.b.c",
        "not a token \t at all",
        "é" * 100,
        new_refresh_token(),  # well-formed, never issued
        tokens.refresh_token[:-1] + ("A" if tokens.refresh_token[-1] != "A" else "B"),
        tokens.refresh_token.upper(),
        tokens.access_token[:-2],
        tokens.access_token + ".x",
        ".".join([head, payload, sig[:10] + flipped + sig[11:]]),
        jwt.encode(c, key=None, algorithm="none", headers={"typ": "at+jwt", "kid": kid}),
        jwt.encode(c, "k" * 32, algorithm="HS256", headers={"typ": "at+jwt", "kid": kid}),
        tokens.id_token,  # signed by us, but not an access token
        rt.keys.sign_access_token({**c, "iss": "https://elsewhere.test"}),
        rt.keys.sign_access_token({**c, "aud": "https://api.elsewhere.test"}),
        rt.keys.sign_access_token({**c, "sub": "mallory"}),  # disagrees with its family
        rt.keys.sign_access_token({**c, "exp": "never"}),
        rt.keys.sign_access_token({k: v for k, v in c.items() if k != "client_id"}),
        "y" * 10_000,
    ]
    assert all(candidates)
    for token in candidates:
        assert ask(http, rs, token, hint) == INACTIVE, token


# -- who may introspect ----------------------------------------------------------------------------


def test_client_secret_post_works_too(http, make_client, issue, rs) -> None:
    tokens = issue(make_client())
    r = http.post(
        INTROSPECT,
        data={"token": tokens.refresh_token, "client_id": rs.client_id, "client_secret": rs.secret},
    )
    assert introspection(r)["active"] is True
    r = http.post(INTROSPECT, data={"token": tokens.refresh_token}, headers=basic(*rs.basic))
    assert introspection(r)["active"] is True


@pytest.mark.parametrize(
    "case",
    ["public client", "public client with secret", "no auth", "wrong secret", "unknown client",
     "confidential as none", "malformed basic", "bearer scheme"],
)  # fmt: skip
def test_failed_or_public_client_authentication_is_401(
    http, rt, make_client, issue, rs, case
) -> None:
    reg = make_client(public=True)
    tokens = issue(reg)
    t = tokens.refresh_token
    kwargs: dict[str, Any] = {
        "public client": {"data": {"token": t, "client_id": reg.client_id}},
        "public client with secret": {"auth": (reg.client_id, "x")},
        "no auth": {},
        "wrong secret": {"auth": (rs.client_id, "tkd_cs_wrong")},
        "unknown client": {"auth": ("nobody", "x")},
        "confidential as none": {"data": {"token": t, "client_id": rs.client_id}},
        "malformed basic": {"headers": {"Authorization": "Basic %%%"}},
        "bearer scheme": {"headers": bearer(tokens.access_token)},
    }[case]
    before = storage_snapshot(rt.store.engine)
    r = http.post(INTROSPECT, **{"data": {"token": t}, **kwargs})
    assert_oauth_error(r, "invalid_client", leaks=(t, rs.secret or ""))
    assert storage_snapshot(rt.store.engine) == before


# -- bad requests --------------------------------------------------------------------------------

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
JSON_HEADERS = {"Content-Type": JSON}


@pytest.mark.parametrize(
    "case",
    ["no token", "empty token", "repeated token", "two auth methods", "bad content type",
     "bad json", "json object token", "nul in token", "too large", "bad utf-8"],
)  # fmt: skip
def test_bad_requests_are_clean_4xx(http, make_client, issue, rs, case) -> None:
    t = issue(make_client()).refresh_token
    kwargs: dict[str, Any] = {
        "no token": {"data": {"token_type_hint": "access_token"}},
        "empty token": {"data": {"token": ""}},
        "repeated token": {"content": f"token={t}&token={t}", "headers": FORM_HEADERS},
        "two auth methods": {"data": {"token": t, "client_secret": rs.secret}},
        "bad content type": {"content": f"token={t}", "headers": {"Content-Type": "text/html"}},
        "bad json": {"content": b'{"token":', "headers": JSON_HEADERS},
        "json object token": {"content": b'{"token": {"a": 1}}', "headers": JSON_HEADERS},
        "nul in token": {"content": f"token={t}%00", "headers": FORM_HEADERS},
        "too large": {"data": {"token": t, "pad": "x" * 20_000}},
        "bad utf-8": {"content": b"token=%c3%28", "headers": FORM_HEADERS},
    }[case]
    r = http.post(INTROSPECT, auth=rs.basic, **kwargs)
    status = 413 if case == "too large" else 400
    assert_oauth_error(r, "invalid_request", status, leaks=(t, rs.secret or ""))


def test_json_body_like_the_token_endpoint(http, make_client, issue, rs) -> None:
    t = issue(make_client()).refresh_token
    r = http.post(INTROSPECT, content=f'{{"token": "{t}"}}', headers=JSON_HEADERS, auth=rs.basic)
    assert introspection(r)["active"] is True


def test_only_post(http) -> None:
    r = http.get(INTROSPECT)
    assert r.status_code == 405 and r.json()["error"] == "invalid_request"


def test_database_trouble_is_503_or_500_never_a_leak(http, rt, make_client, issue, rs, monkeypatch):
    tokens = issue(make_client(), "openid offline")

    def busy(*args: object) -> None:
        raise TemporarilyUnavailable(debug="database is locked")

    monkeypatch.setattr(rt.store, "peek_refresh_token", busy)
    monkeypatch.setattr(rt.store, "is_access_token_revoked", busy)
    for token in (tokens.refresh_token, tokens.access_token):
        r = http.post(INTROSPECT, data={"token": token}, auth=rs.basic)
        assert_oauth_error(r, "temporarily_unavailable", 503, leaks=("locked",))

    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rt.store, "peek_family", boom)
    monkeypatch.setattr(rt.store, "is_access_token_revoked", lambda jti: False)
    r = http.post(INTROSPECT, data={"token": tokens.access_token}, auth=rs.basic)
    assert_oauth_error(r, "server_error", 500, leaks=("boom",))


# -- no locks --------------------------------------------------------------------------------------


def test_introspection_takes_no_lock(http, rt, make_client, issue, rs) -> None:
    """Introspecting a refresh token while a refresh holds its row lock (PostgreSQL: SELECT
    ... FOR UPDATE; SQLite: the write lock of BEGIN IMMEDIATE) answers at once: a plain read,
    never the refresh grant's locking query nor a write transaction."""
    reg = make_client()
    tokens = issue(reg)
    results: list[httpx.Response] = []
    with rt.store.transaction() as tx:
        assert tx.find_refresh_token(hash_secret(tokens.refresh_token)) is not None
        worker = threading.Thread(
            target=lambda: results.append(
                http.post(INTROSPECT, data={"token": tokens.refresh_token}, auth=rs.basic)
            )
        )
        worker.start()
        worker.join(timeout=5)
        answered_while_locked = not worker.is_alive()
    worker.join()
    assert answered_while_locked, "introspection waited for the row lock"
    assert introspection(results[0])["active"] is True
