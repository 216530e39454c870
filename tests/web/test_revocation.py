"""``POST /auth/v2/revoke`` over HTTP (RFC 7009), on SQLite and PostgreSQL: what revoking
each kind of token ends (and what it leaves alone), client authentication as at the token
endpoint, the same empty 200 for every token that cannot or may not be revoked, and clean
RFC 6749 §5.2 errors for bad requests."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    INACTIVE,
    INTROSPECT,
    JSON,
    REVOKE,
    TOKEN,
    USERINFO,
    assert_bearer_error,
    assert_oauth_error,
    assert_revoked_response,
    basic,
    bearer,
    introspection,
    refresh,
    storage_snapshot,
)
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.events import EventKind
from tokend.core.secrets import new_refresh_token
from tokend.store.schema import revoked_access_tokens, token_families

HINTS = [None, "refresh_token", "access_token", "unknown_hint"]


# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures(reset_clock=True)


@pytest.fixture
def resource_server(make_client):
    """A confidential client that introspects (any confidential client may)."""
    return make_client(scopes="openid")


def form(token: str, hint: str | None = None, **extra: str) -> dict[str, str]:
    return {"token": token, **({} if hint is None else {"token_type_hint": hint}), **extra}


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def introspect(http, rs, token: str) -> dict[str, Any]:
    return introspection(http.post(INTROSPECT, data={"token": token}, auth=rs.basic))


def deny_list(rt) -> dict[str, tuple[str, float, float]]:
    with rt.store.engine.connect() as conn:
        rows = conn.execute(select(revoked_access_tokens)).all()
    return {r.jti: (r.client_id, r.revoked_at, r.expires_at) for r in rows}


def family_row(rt, family_id: str) -> tuple[float | None, str | None]:
    with rt.store.engine.connect() as conn:
        row = conn.execute(
            select(token_families.c.revoked_at, token_families.c.revoked_reason).where(
                token_families.c.id == family_id
            )
        ).one()
    return row.revoked_at, row.revoked_reason


def wrong_client_events(rt, client_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in rt.store.list_events(EventKind.REVOCATION_WRONG_CLIENT)
        if e["client_id"] == client_id
    ]


# -- refresh tokens: the whole family -----------------------------------------------------------


@pytest.mark.parametrize("hint", HINTS)
def test_refresh_token_revokes_the_family_and_its_access_tokens(
    http, rt, make_client, issue, resource_server, hint
) -> None:
    reg = make_client()
    first = issue(reg, "openid offline")
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    assert r.status_code == 200, r.text
    second = r.json()
    unrelated = issue(reg, "openid offline")  # same client, same user, another grant
    sid = claims(first.access_token)["sid"]
    for access in (first.access_token, second["access_token"]):
        assert http.get(USERINFO, headers=bearer(access)).status_code == 200

    assert_revoked_response(
        http.post(REVOKE, data=form(second["refresh_token"], hint), auth=reg.basic)
    )

    revoked_at, reason = family_row(rt, sid)
    assert revoked_at == rt.clock.now() and reason == "client"
    assert_oauth_error(
        http.post(TOKEN, data=refresh(second["refresh_token"]), auth=reg.basic), "invalid_grant"
    )
    for access in (first.access_token, second["access_token"]):
        r = http.get(USERINFO, headers=bearer(access))
        assert_bearer_error(r, "invalid_token", 401)
    for token in (first.refresh_token, second["refresh_token"], first.access_token,
                  second["access_token"]):  # fmt: skip
        assert introspect(http, resource_server, token) == INACTIVE
    assert deny_list(rt).keys().isdisjoint({claims(first.access_token)["jti"]})
    # The other grant of the same client and user is untouched.
    assert http.get(USERINFO, headers=bearer(unrelated.access_token)).status_code == 200
    r = http.post(TOKEN, data=refresh(unrelated.refresh_token), auth=reg.basic)
    assert r.status_code == 200, r.text


def test_a_spent_refresh_token_of_the_family_revokes_it_too(http, rt, make_client, issue) -> None:
    reg = make_client()
    first = issue(reg)
    r = http.post(TOKEN, data=refresh(first.refresh_token), auth=reg.basic)
    current = r.json()["refresh_token"]
    assert_revoked_response(http.post(REVOKE, data=form(first.refresh_token), auth=reg.basic))
    assert family_row(rt, claims(first.access_token)["sid"])[1] == "client"
    assert_oauth_error(http.post(TOKEN, data=refresh(current), auth=reg.basic), "invalid_grant")


def test_already_revoked_family_stays_as_it_was(http, rt, make_client, issue, clock) -> None:
    reg = make_client()
    tokens = issue(reg)
    sid = claims(tokens.access_token)["sid"]
    rt.store.revoke_families(now=rt.clock.now(), reason="admin", family_id=sid)
    before = family_row(rt, sid)
    clock.advance(30)
    assert_revoked_response(http.post(REVOKE, data=form(tokens.refresh_token), auth=reg.basic))
    assert family_row(rt, sid) == before  # neither time nor reason rewritten


# -- access tokens: the deny list ---------------------------------------------------------------


@pytest.mark.parametrize("hint", HINTS)
def test_access_token_is_deny_listed_until_its_exp(
    http, rt, make_client, issue, resource_server, hint
) -> None:
    reg = make_client()
    tokens = issue(reg, "openid offline")
    c = claims(tokens.access_token)
    assert introspect(http, resource_server, tokens.access_token)["active"] is True

    assert_revoked_response(http.post(REVOKE, data=form(tokens.access_token, hint), auth=reg.basic))

    assert deny_list(rt)[c["jti"]] == (reg.client_id, rt.clock.now(), c["exp"])
    body = assert_bearer_error(
        http.get(USERINFO, headers=bearer(tokens.access_token)), "invalid_token", 401
    )
    assert "revoked" in body["error_description"]
    assert introspect(http, resource_server, tokens.access_token) == INACTIVE
    # Only that token: its family and refresh token live on, and so do new access tokens.
    assert family_row(rt, c["sid"]) == (None, None)
    assert introspect(http, resource_server, tokens.refresh_token)["active"] is True
    r = http.post(TOKEN, data=refresh(tokens.refresh_token), auth=reg.basic)
    assert r.status_code == 200, r.text
    assert http.get(USERINFO, headers=bearer(r.json()["access_token"])).status_code == 200
    # Revoking it again is the same success and adds nothing.
    n = len(deny_list(rt))
    assert_revoked_response(http.post(REVOKE, data=form(tokens.access_token), auth=reg.basic))
    assert len(deny_list(rt)) == n


def test_client_credentials_access_token(http, rt, make_client, resource_server) -> None:
    reg = make_client()
    r = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=reg.basic)
    token = r.json()["access_token"]
    assert introspect(http, resource_server, token)["active"] is True
    assert_revoked_response(http.post(REVOKE, data=form(token), auth=reg.basic))
    assert claims(token)["jti"] in deny_list(rt)
    assert introspect(http, resource_server, token) == INACTIVE


def test_gc_drops_deny_list_entries_once_their_tokens_expired(
    http, rt, make_client, issue, clock
) -> None:
    reg = make_client()
    tokens = issue(reg, "openid")
    jti = claims(tokens.access_token)["jti"]
    http.post(REVOKE, data=form(tokens.access_token), auth=reg.basic)
    rt.store.gc(now=rt.clock.now(), retention=0)
    assert jti in deny_list(rt)  # still needed
    clock.advance(3601)
    out = rt.store.gc(now=rt.clock.now(), retention=10**9)
    assert out["revoked_access_tokens"] >= 1
    assert jti not in deny_list(rt)


# -- client authentication: exactly as at the token endpoint -------------------------------------


def test_every_authentication_method_of_the_token_endpoint(http, rt, make_client, issue) -> None:
    confidential = make_client()
    public = make_client(public=True)
    cases = [
        (confidential, {"auth": confidential.basic}),
        (confidential, {"headers": basic(confidential.client_id, confidential.secret)}),
        (
            confidential,
            {
                "data_extra": {
                    "client_id": confidential.client_id,
                    "client_secret": confidential.secret,
                }
            },
        ),
        (public, {"data_extra": {"client_id": public.client_id}}),  # none (RFC 7009 §5)
    ]
    for reg, how in cases:
        tokens = issue(reg)
        data = {**form(tokens.refresh_token), **how.get("data_extra", {})}
        kwargs = {k: v for k, v in how.items() if k != "data_extra"}
        assert_revoked_response(http.post(REVOKE, data=data, **kwargs))
        assert family_row(rt, claims(tokens.access_token)["sid"])[1] == "client", how


def test_json_body_like_the_token_endpoint(http, rt, make_client, issue) -> None:
    reg = make_client()
    tokens = issue(reg)
    r = http.post(
        REVOKE,
        content=json.dumps({"token": tokens.refresh_token, "token_type_hint": "refresh_token"}),
        headers={"Content-Type": JSON},
        auth=reg.basic,
    )
    assert_revoked_response(r)
    assert family_row(rt, claims(tokens.access_token)["sid"])[1] == "client"


@pytest.mark.parametrize(
    "case",
    ["no auth", "wrong secret", "unknown client", "public with secret", "confidential as none",
     "malformed basic", "bearer scheme"],
)  # fmt: skip
def test_failed_client_authentication_is_401_and_changes_nothing(
    http, rt, make_client, issue, case
) -> None:
    reg = make_client()
    public = make_client(public=True)
    tokens = issue(reg)
    public_tokens = issue(public)
    token = public_tokens.refresh_token if case == "public with secret" else tokens.refresh_token
    kwargs: dict[str, Any] = {
        "no auth": {},
        "wrong secret": {"auth": (reg.client_id, "tkd_cs_wrong")},
        "unknown client": {"auth": ("nobody", "x")},
        "public with secret": {"auth": (public.client_id, "x")},
        "confidential as none": {"data": form(token, client_id=reg.client_id)},
        "malformed basic": {"headers": {"Authorization": "Basic !!!"}},
        "bearer scheme": {"headers": bearer(tokens.access_token)},
    }[case]
    before = storage_snapshot(rt.store.engine)
    r = http.post(REVOKE, **{"data": form(token), **kwargs})
    assert_oauth_error(r, "invalid_client", leaks=(token, reg.secret or ""))
    assert storage_snapshot(rt.store.engine) == before


# -- what a client may not revoke: another client's tokens ----------------------------------------


def test_a_client_cannot_revoke_another_clients_tokens(
    http, rt, make_client, issue, resource_server
) -> None:
    owner = make_client()
    tokens = issue(owner, "openid offline")
    sid = claims(tokens.access_token)["sid"]
    cc = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=owner.basic).json()
    thief = make_client()
    public_thief = make_client(public=True)
    attempts = [
        (thief, {"auth": thief.basic}),
        (public_thief, {"data_extra": {"client_id": public_thief.client_id}}),
    ]
    for reg, how in attempts:
        for token in (tokens.refresh_token, tokens.access_token, cc["access_token"]):
            for hint in HINTS:
                data = {**form(token, hint), **how.get("data_extra", {})}
                kwargs = {k: v for k, v in how.items() if k != "data_extra"}
                assert_revoked_response(http.post(REVOKE, data=data, **kwargs))
        # Recorded for operators (a client holding another's tokens), never told the client:
        # one row per (client, address) per window, counting every attempt (issue 10 §7).
        [event] = wrong_client_events(rt, reg.client_id)
        assert event["count"] == 3 * len(HINTS)
        assert event["detail"]["owner_client_id"] == owner.client_id
    assert family_row(rt, sid) == (None, None)
    assert deny_list(rt).keys().isdisjoint({claims(tokens.access_token)["jti"],
                                            claims(cc["access_token"])["jti"]})  # fmt: skip
    for token in (tokens.refresh_token, tokens.access_token, cc["access_token"]):
        assert introspect(http, resource_server, token)["active"] is True
    assert http.get(USERINFO, headers=bearer(tokens.access_token)).status_code == 200
    r = http.post(TOKEN, data=refresh(tokens.refresh_token), auth=owner.basic)
    assert r.status_code == 200, r.text


# -- tokens that cannot be revoked: the same empty 200, and nothing changes ----------------------


def test_unknown_malformed_expired_and_foreign_tokens_are_200_and_change_nothing(
    http, rt, make_client, issue, clock
) -> None:
    reg = make_client()
    tokens = issue(reg, "openid offline")
    c = claims(tokens.access_token)
    forged_claims = {**c, "client_id": reg.client_id, "jti": "forged"}
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    head, payload, sig = tokens.access_token.split(".")
    flipped = "A" if sig[10] != "A" else "B"
    candidates = [
        "x",
        "not a token at all \t with spaces",
        new_refresh_token(),  # well-formed, never issued
        tokens.refresh_token[:-1] + ("A" if tokens.refresh_token[-1] != "A" else "B"),
        tokens.refresh_token + "x",
        tokens.access_token[:-2],
        ".".join([head, payload, sig[:10] + flipped + sig[11:]]),  # bad signature
        jwt.encode(forged_claims, key=None, algorithm="none", headers={"typ": "at+jwt"}),
        # HS256 keyed with something public, under our kid (algorithm confusion)
        jwt.encode(
            forged_claims, "k" * 32, algorithm="HS256", headers={"typ": "at+jwt", "kid": kid}
        ),
        tokens.id_token,  # an ID token is not an access token
        "y" * 10_000,
    ]
    assert all(candidates)
    snapshot = storage_snapshot(rt.store.engine)
    for token in candidates:
        for hint in HINTS:
            assert_revoked_response(http.post(REVOKE, data=form(token, hint), auth=reg.basic))
    # Expired: past its exp an access token is not deny-listed (it is dead anyway).
    clock.t = c["exp"]
    assert_revoked_response(http.post(REVOKE, data=form(tokens.access_token), auth=reg.basic))
    assert storage_snapshot(rt.store.engine) == snapshot
    assert c["jti"] not in deny_list(rt)
    clock.t = c["exp"] - 1
    assert http.get(USERINFO, headers=bearer(tokens.access_token)).status_code == 200


# -- bad requests: RFC 6749 §5.2 JSON, never a 500 -----------------------------------------------


FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
JSON_HEADERS = {"Content-Type": JSON}


@pytest.mark.parametrize(
    "case",
    ["no token", "empty token", "only a hint", "repeated token", "two auth methods",
     "bad content type", "no content type", "bad json", "json array", "json number",
     "nul in token", "too large", "too many fields", "bad utf-8"],
)  # fmt: skip
def test_bad_requests_are_clean_4xx_and_change_nothing(http, rt, make_client, issue, case) -> None:
    reg = make_client()
    tokens = issue(reg)
    t = tokens.refresh_token
    kwargs: dict[str, Any] = {
        "no token": {"data": {}},
        "empty token": {"data": {"token": ""}},
        "only a hint": {"data": {"token_type_hint": "refresh_token"}},
        "repeated token": {"content": f"token={t}&token={t}", "headers": FORM_HEADERS},
        "two auth methods": {"data": form(t, client_secret=reg.secret)},
        "bad content type": {"content": f"token={t}", "headers": {"Content-Type": "text/plain"}},
        "no content type": {"content": f"token={t}"},
        "bad json": {"content": b"{", "headers": JSON_HEADERS},
        "json array": {"content": b"[]", "headers": JSON_HEADERS},
        "json number": {"content": b'{"token": 1}', "headers": JSON_HEADERS},
        "nul in token": {"content": f"token={t}%00", "headers": FORM_HEADERS},
        "too large": {"data": form(t, pad="x" * 20_000)},
        "too many fields": {
            "content": "&".join(f"f{i}=1" for i in range(100)) + f"&token={t}",
            "headers": FORM_HEADERS,
        },
        "bad utf-8": {"content": b"token=%ff%fe", "headers": FORM_HEADERS},
    }[case]
    before = storage_snapshot(rt.store.engine)
    r = http.post(REVOKE, auth=reg.basic, **kwargs)
    status = 413 if case == "too large" else 400
    assert_oauth_error(r, "invalid_request", status, leaks=(t, reg.secret or ""))
    assert storage_snapshot(rt.store.engine) == before
    assert family_row(rt, claims(tokens.access_token)["sid"]) == (None, None)


def test_only_post(http) -> None:
    r = http.get(REVOKE, params={"token": "x"})
    assert r.status_code == 405
    assert r.json()["error"] == "invalid_request"
    assert "POST" in r.headers["allow"]


def test_database_trouble_is_503_or_500_never_a_leak(http, rt, make_client, issue, monkeypatch):
    reg = make_client()
    tokens = issue(reg)

    def busy(token_hash: bytes) -> None:
        raise TemporarilyUnavailable(debug="database is locked")

    monkeypatch.setattr(rt.store, "peek_refresh_token", busy)
    r = http.post(REVOKE, data=form(tokens.refresh_token), auth=reg.basic)
    assert_oauth_error(r, "temporarily_unavailable", 503, leaks=("locked",))

    def boom(token_hash: bytes) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rt.store, "peek_refresh_token", boom)
    r = http.post(REVOKE, data=form(tokens.refresh_token), auth=reg.basic)
    assert_oauth_error(r, "server_error", 500, leaks=("boom",))
    monkeypatch.undo()
    assert family_row(rt, claims(tokens.access_token)["sid"]) == (None, None)
