"""DPoP (RFC 9449) over HTTP, on SQLite and PostgreSQL: bound access tokens at the token
endpoint, public clients' families bound across refreshes, refreshes of a bound family
without a proof or with another key refused (and nothing changed: the token then still
works with the right proof), every kind of bad proof refused with nothing changed, replays,
server nonces (required per client, or for every client with ``TOKEND_DPOP_NONCE=on``),
UserInfo with ``Authorization: DPoP`` and ``ath``, and the documents (discovery, OpenAPI)
that tell clients about it."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY, RegisteredClient
from tests.support.dpop import ProofKey, b64, compact
from tests.support.family import nonce_runtime
from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    INTROSPECT,
    JSON,
    TOKEN,
    TOKEN_SLASH,
    USERINFO,
    assert_bearer_error,
    assert_no_store,
    assert_oauth_error,
    bearer,
    introspection,
    refresh,
    storage_snapshot,
)
from tests.web.test_openapi import assert_documented
from tokend.core.authorization import validate
from tokend.core.dpop import REPLAY_MARGIN
from tokend.core.events import EventKind
from tokend.core.models import User
from tokend.core.secrets import hash_secret
from tokend.keys.material import derive
from tokend.runtime import Runtime
from tokend.store.schema import dpop_proofs, security_events, token_families
from tokend.web.app import create_app
from tokend.web.openapi import openapi_document

TOKEN_HTU = ISSUER + TOKEN
USERINFO_HTU = ISSUER + USERINFO
REDIRECT_URI = "https://app.example/cb"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
_DPOP_CHALLENGE = re.compile(
    r'DPoP error="([a-z_]+)", error_description="([\x20\x21\x23-\x5b\x5d-\x7e]+)", '
    r'algs="ES256 RS256 EdDSA"'
)


# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document(ISSUER)


@pytest.fixture(scope="module")
def registry(doc):  # type: ignore[no-untyped-def]
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resource(
        "urn:tokend:openapi", Resource(contents=doc, specification=DRAFT202012)
    )


@pytest.fixture
def key() -> ProofKey:
    return ProofKey("ES256")


@pytest.fixture
def other_key() -> ProofKey:
    return ProofKey("ES256")


# -- helpers ---------------------------------------------------------------------------------


def now(rt: Runtime) -> float:
    return rt.clock.now()


def dpop(proof: str) -> dict[str, str]:
    return {"DPoP": proof}


def post_token(
    http: TestClient,
    reg: RegisteredClient,
    data: dict[str, str],
    proof: str | None = None,
    *,
    path: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {**(headers or {}), **(dpop(proof) if proof else {})}
    if reg.secret is None:
        return http.post(path, data={**data, "client_id": reg.client_id}, headers=all_headers)
    return http.post(path, data=data, auth=reg.basic, headers=all_headers)


def code_for(rt: Runtime, reg: RegisteredClient, user: User, scope: str = "openid offline") -> str:
    """An authorization code, as if ``user`` had signed in and consented (PKCE S256)."""
    request = validate(
        [
            ("response_type", "code"),
            ("client_id", reg.client_id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", scope),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
        rt.store.get_client,
    )
    t = now(rt)
    return rt.codes.issue(
        request,
        user_id=user.id,
        subject=rt.subjects.subject(reg.client, user.id),
        auth_time=t,
        now=t,
    )


def code_params(code: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }


def assert_dpop_tokens(r: httpx.Response, rt: Runtime, key: ProofKey) -> dict[str, Any]:
    """A successful response with a DPoP-bound access token (RFC 9449 §5, §6)."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    body = r.json()
    assert body["token_type"] == "DPoP"
    header, claims = rt.keys.verify(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["cnf"] == {"jkt": key.jkt}
    return body


def family_jkt(rt: Runtime, refresh_token_response: dict[str, Any]) -> str | None:
    sid = jwt.decode(refresh_token_response["access_token"], options={"verify_signature": False})[
        "sid"
    ]
    with rt.store.engine.connect() as conn:
        return conn.execute(
            select(token_families.c.dpop_jkt).where(token_families.c.id == sid)
        ).scalar_one()


def proof_rows(rt: Runtime) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(dpop_proofs)).scalar_one()


def assert_dpop_error(r: httpx.Response, error: str, status: int = 401) -> dict[str, str]:
    """RFC 9449 §7.1: the DPoP challenge with the error, its description and ``algs``."""
    body = assert_oauth_error(r, error, status)
    m = _DPOP_CHALLENGE.fullmatch(r.headers["www-authenticate"])
    assert m, r.headers["www-authenticate"]
    assert m.group(1) == error and m.group(2) == body["error_description"]
    return body


# -- the token endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_a_proof_makes_a_dpop_bound_access_token(http, rt, make_client, issue, alg) -> None:
    key = ProofKey(alg)
    reg = make_client()
    first = issue(reg, "openid offline email")
    r = post_token(http, reg, refresh(first.refresh_token), key.proof(TOKEN_HTU, iat=now(rt)))
    body = assert_dpop_tokens(r, rt, key)
    # RFC 6749 §5.1's members in the usual order; only token_type differs from Bearer.
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "id_token",
    ]
    # Nonces are not required by default, but always offered to a request that used DPoP.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", r.headers["dpop-nonce"])
    # The ID token is not bound (OIDC): it has no cnf.
    assert "cnf" not in jwt.decode(body["id_token"], options={"verify_signature": False})


def test_token_responses_with_dpop_match_the_openapi_document(
    http, rt, make_client, issue, key, doc, registry
) -> None:
    reg = make_client()
    first = issue(reg)
    r = post_token(http, reg, refresh(first.refresh_token), key.proof(TOKEN_HTU, iat=now(rt)))
    assert r.status_code == 200
    assert_documented(doc, registry, TOKEN, r)
    bad = post_token(http, reg, refresh(r.json()["refresh_token"]), "not-a-proof")
    assert bad.json()["error"] == "invalid_dpop_proof"
    assert_documented(doc, registry, TOKEN, bad)


def test_public_client_family_is_bound_at_code_exchange_and_across_refreshes(
    http, rt, make_client, user, key
) -> None:
    reg = make_client(public=True)
    r = post_token(
        http, reg, code_params(code_for(rt, reg, user)), key.proof(TOKEN_HTU, iat=now(rt))
    )
    body = assert_dpop_tokens(r, rt, key)
    assert family_jkt(rt, body) == key.jkt
    for _ in range(3):
        rt.clock.advance(5)
        r = post_token(http, reg, refresh(body["refresh_token"]), key.proof(TOKEN_HTU, iat=now(rt)))
        body = assert_dpop_tokens(r, rt, key)
        assert family_jkt(rt, body) == key.jkt


def test_introspection_of_tokens_minted_through_dpop(http, rt, make_client, user, key) -> None:
    """RFC 7662 + RFC 9449 §6.2: a resource server introspecting the DPoP flow's real tokens
    sees them bound: token_type DPoP and cnf.jkt for the access token, cnf.jkt for the
    public client's bound refresh token."""
    reg = make_client(public=True)
    rs = make_client(scopes="openid")  # a confidential resource server
    r = post_token(
        http, reg, code_params(code_for(rt, reg, user)), key.proof(TOKEN_HTU, iat=now(rt))
    )
    body = assert_dpop_tokens(r, rt, key)

    def introspect(token: str) -> dict[str, Any]:
        return introspection(http.post(INTROSPECT, data={"token": token}, auth=rs.basic))

    at = introspect(body["access_token"])
    assert at["active"] is True
    assert at["token_type"] == "DPoP"
    assert at["cnf"] == {"jkt": key.jkt}
    assert at["client_id"] == reg.client_id
    rt_info = introspect(body["refresh_token"])
    assert rt_info["active"] is True
    assert rt_info["token_type"] == "refresh_token"
    assert rt_info["cnf"] == {"jkt": key.jkt}
    # After a DPoP refresh the old refresh token is spent (inactive), the new one bound.
    rt.clock.advance(1)
    r = post_token(http, reg, refresh(body["refresh_token"]), key.proof(TOKEN_HTU, iat=now(rt)))
    new = assert_dpop_tokens(r, rt, key)
    assert introspect(body["refresh_token"]) == {"active": False}
    assert introspect(new["refresh_token"])["cnf"] == {"jkt": key.jkt}


def test_public_clients_unbound_family_is_bound_at_its_first_dpop_refresh(
    http, rt, make_client, issue, key, other_key
) -> None:
    reg = make_client(public=True)
    first = issue(reg)
    r = post_token(http, reg, refresh(first.refresh_token))
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    assert family_jkt(rt, r.json()) is None
    r = post_token(http, reg, refresh(r.json()["refresh_token"]), key.proof(TOKEN_HTU, iat=now(rt)))
    body = assert_dpop_tokens(r, rt, key)
    assert family_jkt(rt, body) == key.jkt
    r = post_token(http, reg, refresh(body["refresh_token"]))
    assert_oauth_error(r, "invalid_grant")
    proof = other_key.proof(TOKEN_HTU, iat=now(rt))
    assert_oauth_error(
        post_token(http, reg, refresh(body["refresh_token"]), proof), "invalid_grant"
    )


def test_confidential_client_binds_access_tokens_but_not_its_family(
    http, rt, make_client, user, key
) -> None:
    reg = make_client()
    r = post_token(
        http, reg, code_params(code_for(rt, reg, user)), key.proof(TOKEN_HTU, iat=now(rt))
    )
    body = assert_dpop_tokens(r, rt, key)
    assert family_jkt(rt, body) is None
    r = post_token(http, reg, refresh(body["refresh_token"]))  # no proof: a Bearer token
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "Bearer"


@pytest.mark.parametrize("how", ["no_proof", "other_key"])
def test_refresh_of_a_bound_family_without_its_key_changes_nothing(
    http, rt, make_client, user, key, other_key, how
) -> None:
    reg = make_client(public=True)
    r = post_token(
        http, reg, code_params(code_for(rt, reg, user)), key.proof(TOKEN_HTU, iat=now(rt))
    )
    token = assert_dpop_tokens(r, rt, key)["refresh_token"]
    before = storage_snapshot(rt.store.engine)
    proof = None if how == "no_proof" else other_key.proof(TOKEN_HTU, iat=now(rt))
    body = assert_oauth_error(
        post_token(http, reg, refresh(token), proof), "invalid_grant", leaks=(token,)
    )
    assert "DPoP" in body["error_description"]
    # (The other key's valid proof was recorded, then rolled back with the refusal.)
    assert storage_snapshot(rt.store.engine) == before
    # The token was not spent: the real client, with its key, goes on.
    r = post_token(http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt)))
    assert_dpop_tokens(r, rt, key)


# -- reuse detection is never defeated by a binding (issue 10, §1) ----------------------------


def reuse_state(rt: Runtime, refresh_token_response: dict[str, Any]) -> tuple[bool, int]:
    """(family revoked?, number of reuse events of the family) of a token response's family."""
    sid = jwt.decode(refresh_token_response["access_token"], options={"verify_signature": False})[
        "sid"
    ]
    with rt.store.engine.connect() as conn:
        revoked = conn.execute(
            select(token_families.c.revoked_at).where(token_families.c.id == sid)
        ).scalar_one()
        events = conn.execute(
            select(func.count())
            .select_from(security_events)
            .where(
                security_events.c.family_id == sid,
                security_events.c.kind == EventKind.REFRESH_TOKEN_REUSE,
            )
        ).scalar_one()
    return revoked is not None, events


@pytest.mark.parametrize("public", [True, False], ids=["public", "confidential"])
@pytest.mark.parametrize("order", ["thief_first", "real_first"])
@pytest.mark.parametrize("real_proof", [False, True], ids=["real_bearer", "real_dpop"])
@pytest.mark.parametrize("when", ["grace_0", "past_grace", "inside_grace"])
def test_a_thiefs_key_never_shields_a_family_from_reuse_detection(
    http, rt, make_client, issue, key, other_key, public, order, real_proof, when
) -> None:
    """The reproduction of issue 10 §1 and its variants: a stolen, unbound refresh token
    refreshed by the thief with a proof of the thief's own key and by the real client
    (without DPoP, or with its own key), in either order. The second use always revokes the
    family with a reuse event, and the winner's successor dies with it."""
    reg = make_client(public=public, refresh_grace=0 if when == "grace_0" else 10)
    stolen = issue(reg).refresh_token
    thief = lambda: key.proof(TOKEN_HTU, iat=now(rt))  # noqa: E731
    real = (lambda: other_key.proof(TOKEN_HTU, iat=now(rt))) if real_proof else (lambda: None)
    first, second = (thief, real) if order == "thief_first" else (real, thief)
    r = post_token(http, reg, refresh(stolen), first())
    assert r.status_code == 200, r.text
    winner = r.json()
    rt.clock.advance(11 if when == "past_grace" else 1)
    r = post_token(http, reg, refresh(stolen), second())
    assert_oauth_error(r, "invalid_grant", leaks=(stolen, winner["refresh_token"]))
    assert reuse_state(rt, winner) == (True, 1)
    # The winner's chain is dead too, with its own key.
    r = post_token(http, reg, refresh(winner["refresh_token"]), first())
    assert_oauth_error(r, "invalid_grant")


def test_a_bound_familys_live_token_without_its_key_is_refused_and_not_burned(
    http, rt, make_client, issue, key, other_key
) -> None:
    """The other side: the thief holding the live token of a bound family but not its key can
    neither use it nor have the family revoked; the real client goes on."""
    reg = make_client(public=True)
    r = post_token(http, reg, refresh(issue(reg).refresh_token), key.proof(TOKEN_HTU, iat=now(rt)))
    live = assert_dpop_tokens(r, rt, key)
    rt.clock.advance(30)
    for proof in (None, other_key.proof(TOKEN_HTU, iat=now(rt))):
        assert_oauth_error(
            post_token(http, reg, refresh(live["refresh_token"]), proof), "invalid_grant"
        )
    assert reuse_state(rt, live) == (False, 0)
    r = post_token(http, reg, refresh(live["refresh_token"]), key.proof(TOKEN_HTU, iat=now(rt)))
    assert_dpop_tokens(r, rt, key)


def test_grace_retries_over_http_are_bounded_and_recorded(http, rt, make_client, issue) -> None:
    reg = make_client(refresh_grace=10)
    token = issue(reg).refresh_token
    first = post_token(http, reg, refresh(token)).json()
    limit = rt.settings.refresh_grace_retries
    for _ in range(limit):
        r = post_token(http, reg, refresh(token))
        assert r.status_code == 200 and r.json()["refresh_token"] == first["refresh_token"]
    assert_oauth_error(post_token(http, reg, refresh(token)), "invalid_grant")
    assert reuse_state(rt, first) == (True, 1)
    sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    with rt.store.engine.connect() as conn:
        kinds = conn.execute(
            select(security_events.c.kind).where(security_events.c.family_id == sid)
        ).scalars()
        assert sorted(kinds) == sorted(
            [EventKind.REFRESH_TOKEN_GRACE_RETRY] * limit + [EventKind.REFRESH_TOKEN_REUSE]
        )


def _bad_proofs(key: ProofKey, other: ProofKey, t: float, used: str) -> dict[str, list[str]]:
    claims = key.claims(TOKEN_HTU, iat=t)
    return {
        "wrong_htu": [key.proof(ISSUER + "/auth/v2/revoke", iat=t)],
        "htu_of_another_host": [key.proof("http://testserver/auth/v2/token", iat=t)],
        "wrong_htm": [key.proof(TOKEN_HTU, "GET", iat=t)],
        "old_iat": [key.proof(TOKEN_HTU, iat=t - 61)],
        "future_iat": [key.proof(TOKEN_HTU, iat=t + 61)],
        "replayed_jti": [used],
        "wrong_key": [key.sign(claims, header={"jwk": other.jwk})],
        "private_key_in_jwk": [key.sign(claims, header={"jwk": key.private_jwk})],
        "malformed_jwt": ["not.a-jwt"],
        "alg_none": [compact({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk}, claims)],
        "hs256": [
            compact(
                {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2s"}},
                claims,
                lambda d: hmac.new(b"sk", d, hashlib.sha256).digest(),
            )
        ],
        "missing_typ": [key.sign(claims, header={"typ": None})],
        "two_proofs": [key.proof(TOKEN_HTU, iat=t), key.proof(TOKEN_HTU, iat=t)],
    }


BAD_PROOFS = list(_bad_proofs(ProofKey(), ProofKey(), 0, "x"))


@pytest.mark.parametrize("case", BAD_PROOFS)
def test_a_bad_proof_is_invalid_dpop_proof_and_changes_nothing(
    http, rt, make_client, user, key, other_key, case
) -> None:
    reg = make_client(public=True)
    used = key.proof(TOKEN_HTU, iat=now(rt))
    r = post_token(http, reg, code_params(code_for(rt, reg, user)), used)
    token = assert_dpop_tokens(r, rt, key)["refresh_token"]
    values = _bad_proofs(key, other_key, now(rt), used)[case]
    before = storage_snapshot(rt.store.engine)
    r = http.post(
        TOKEN,
        data={**refresh(token), "client_id": reg.client_id},
        headers=[("DPoP", v) for v in values],  # type: ignore[arg-type]
    )
    assert_oauth_error(r, "invalid_dpop_proof", leaks=(token, values[0][:30]))
    assert storage_snapshot(rt.store.engine) == before
    r = post_token(http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt)))
    assert_dpop_tokens(r, rt, key)  # the token was not spent


def test_replaying_a_whole_request_changes_nothing(http, rt, make_client, issue, key) -> None:
    """Without DPoP the grace window would answer the same request twice; with a proof the
    replay cache refuses the second before the grant runs."""
    reg = make_client()
    token = issue(reg).refresh_token
    proof = key.proof(TOKEN_HTU, iat=now(rt))
    first = post_token(http, reg, refresh(token), proof)
    body = assert_dpop_tokens(first, rt, key)
    before = storage_snapshot(rt.store.engine)
    for data in (refresh(token), refresh(body["refresh_token"])):
        assert_oauth_error(post_token(http, reg, data, proof), "invalid_dpop_proof")
        assert storage_snapshot(rt.store.engine) == before
    rt.clock.advance(1)
    r = post_token(http, reg, refresh(body["refresh_token"]), key.proof(TOKEN_HTU, iat=now(rt)))
    assert_dpop_tokens(r, rt, key)


def test_the_replay_cache_row_lives_as_long_as_the_proof(http, rt, make_client, issue, key) -> None:
    reg = make_client()
    before = proof_rows(rt)
    post_token(http, reg, refresh(issue(reg).refresh_token), key.proof(TOKEN_HTU, iat=now(rt)))
    assert proof_rows(rt) == before + 1
    with rt.store.engine.connect() as conn:
        latest = conn.execute(select(func.max(dpop_proofs.c.expires_at))).scalar_one()
    assert latest == int(now(rt)) + rt.settings.dpop_proof_window + REPLAY_MARGIN


def test_requests_without_dpop_record_nothing(http, rt, make_client, issue) -> None:
    reg = make_client()
    before = proof_rows(rt)
    r = post_token(http, reg, refresh(issue(reg).refresh_token))
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    assert "cnf" not in rt.keys.verify(r.json()["access_token"])[1]
    assert proof_rows(rt) == before


def test_htu_is_the_issuers_uri_whatever_the_host_header(http, rt, make_client, key) -> None:
    reg = make_client()
    data = {"grant_type": "client_credentials"}
    evil = {"Host": "evil.test"}
    r = post_token(
        http, reg, data, key.proof("https://evil.test/auth/v2/token", iat=now(rt)), headers=evil
    )
    assert_oauth_error(r, "invalid_dpop_proof")
    r = post_token(http, reg, data, key.proof(TOKEN_HTU, iat=now(rt)), headers=evil)
    assert_dpop_tokens(r, rt, key)


def test_trailing_slash_route_has_its_own_htu(http, rt, make_client, key) -> None:
    reg = make_client()
    data = {"grant_type": "client_credentials"}
    r = post_token(http, reg, data, key.proof(TOKEN_HTU, iat=now(rt)), path=TOKEN_SLASH)
    assert_oauth_error(r, "invalid_dpop_proof")
    r = post_token(http, reg, data, key.proof(ISSUER + TOKEN_SLASH, iat=now(rt)), path=TOKEN_SLASH)
    assert_dpop_tokens(r, rt, key)


def test_client_credentials_with_a_proof(http, rt, make_client, key) -> None:
    reg = make_client()
    r = post_token(
        http, reg, {"grant_type": "client_credentials"}, key.proof(TOKEN_HTU, iat=now(rt))
    )
    body = assert_dpop_tokens(r, rt, key)
    assert "refresh_token" not in body


# -- server nonces (TOKEND_DPOP_NONCE=on) -----------------------------------------------------


@pytest.fixture(scope="module")
def nonce_rt(shared_rt: Runtime) -> Iterator[Runtime]:
    """A second runtime on the same database and clock, with nonces required."""
    with nonce_runtime(shared_rt) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def nonce_http(nonce_rt: Runtime) -> Iterator[TestClient]:
    app = create_app(nonce_rt.settings, runtime=nonce_rt)
    with TestClient(app, base_url=ISSUER, raise_server_exceptions=False) as client:
        yield client


def test_nonce_flow_at_the_token_endpoint(
    nonce_http, nonce_rt, rt, make_client, issue, key, doc, registry
) -> None:
    reg = make_client()
    token = issue(reg).refresh_token
    before = storage_snapshot(rt.store.engine)
    # 1. No nonce yet: use_dpop_nonce with one to use; nothing changed, nothing recorded.
    r = post_token(nonce_http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt)))
    assert_oauth_error(r, "use_dpop_nonce")
    nonce = r.headers["dpop-nonce"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", nonce)
    assert storage_snapshot(rt.store.engine) == before
    assert_documented(doc, registry, TOKEN, r)
    # 2. With it: tokens, and the (same) nonce again.
    r = post_token(nonce_http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce))
    body = assert_dpop_tokens(r, nonce_rt, key)
    assert r.headers["dpop-nonce"] == nonce
    assert_documented(doc, registry, TOKEN, r)
    # 3. A nonce from the previous period is still good; the server hands out the new one.
    rt.clock.advance(300)
    proof = key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce)
    r = post_token(nonce_http, reg, refresh(body["refresh_token"]), proof)
    body = assert_dpop_tokens(r, nonce_rt, key)
    fresh = r.headers["dpop-nonce"]
    assert fresh != nonce
    # 4. Two periods on, the first nonce is stale: use_dpop_nonce again.
    rt.clock.advance(300)
    proof = key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce)
    r = post_token(nonce_http, reg, refresh(body["refresh_token"]), proof)
    assert_oauth_error(r, "use_dpop_nonce")
    assert r.headers["dpop-nonce"] not in (nonce, fresh)


def test_nonce_is_checked_after_the_rest_of_the_proof(nonce_http, rt, make_client, key) -> None:
    """A broken proof is invalid_dpop_proof, not a request for a nonce (still with one)."""
    reg = make_client()
    r = post_token(
        nonce_http,
        reg,
        {"grant_type": "client_credentials"},
        key.proof(TOKEN_HTU, iat=now(rt) - 3600),
    )
    assert_oauth_error(r, "invalid_dpop_proof")
    assert "dpop-nonce" in r.headers


def test_nonces_are_derived_from_the_system_secret(nonce_http, rt, make_client, key) -> None:
    """Stateless: HMAC-SHA256(derive(secret, "dpop-nonce"), period), the same in every
    process, and no other secret's nonce passes."""
    reg = make_client()
    r = post_token(
        nonce_http, reg, {"grant_type": "client_credentials"}, key.proof(TOKEN_HTU, iat=now(rt))
    )
    period = int(now(rt) // 300)
    mac = hmac.new(derive(SECRET_KEY, "dpop-nonce"), f"dpop-nonce:{period}".encode(), "sha256")
    assert r.headers["dpop-nonce"] == b64(mac.digest()[:16])
    forged = hmac.new(
        derive("another secret" * 4, "dpop-nonce"), f"dpop-nonce:{period}".encode(), "sha256"
    )
    r = post_token(
        nonce_http,
        reg,
        {"grant_type": "client_credentials"},
        key.proof(TOKEN_HTU, iat=now(rt), nonce=b64(forged.digest()[:16])),
    )
    assert_oauth_error(r, "use_dpop_nonce")


def test_without_dpop_nonces_change_nothing(nonce_http, rt, make_client, issue) -> None:
    reg = make_client()
    r = post_token(nonce_http, reg, refresh(issue(reg).refresh_token))
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    assert "dpop-nonce" not in r.headers


# -- server nonces per client (Client.dpop_nonce_required) ------------------------------------


def nonce_of(rt: Runtime, at: float | None = None, *, secret: str = SECRET_KEY) -> str:
    """The deployment's stateless nonce for the period of ``at`` (default: now)."""
    period = int((now(rt) if at is None else at) // 300)
    mac = hmac.new(derive(secret, "dpop-nonce"), f"dpop-nonce:{period}".encode(), "sha256")
    return b64(mac.digest()[:16])


def assert_use_dpop_nonce(r: httpx.Response, rt: Runtime) -> str:
    """RFC 9449 §8: 400 use_dpop_nonce with the current nonce in ``DPoP-Nonce``."""
    body = assert_oauth_error(r, "use_dpop_nonce")
    assert "nonce" in body["error_description"]
    assert r.headers["dpop-nonce"] == nonce_of(rt)
    return r.headers["dpop-nonce"]


def spent(rt: Runtime, refresh_token: str) -> bool:
    stored = rt.store.peek_refresh_token(hash_secret(refresh_token))
    assert stored is not None
    return stored.spent_at is not None


def test_per_client_nonce_flow_at_the_token_endpoint(
    http, rt, make_client, issue, key, doc, registry
) -> None:
    reg = make_client(dpop_nonce_required=True)
    token = issue(reg).refresh_token
    before = storage_snapshot(rt.store.engine)
    # 1. A proof without a nonce: use_dpop_nonce, with the nonce to use; nothing changed
    #    (the token is not spent, no family rotated, the proof's jti not recorded).
    r = post_token(http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt)))
    nonce = assert_use_dpop_nonce(r, rt)
    assert_documented(doc, registry, TOKEN, r)
    assert storage_snapshot(rt.store.engine) == before
    assert not spent(rt, token)
    # 2. The retry, with a new proof carrying the nonce: DPoP-bound tokens, the nonce again.
    r = post_token(http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce))
    body = assert_dpop_tokens(r, rt, key)
    assert r.headers["dpop-nonce"] == nonce
    assert_documented(doc, registry, TOKEN, r)
    assert spent(rt, token) and not spent(rt, body["refresh_token"])
    assert proof_rows(rt) == before["counts"]["dpop_proofs"] + 1  # type: ignore[index]
    # 3. A nonce of the previous period still passes; the answer hands out the new one.
    rt.clock.advance(300)
    proof = key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce)
    r = post_token(http, reg, refresh(body["refresh_token"]), proof)
    body = assert_dpop_tokens(r, rt, key)
    fresh = r.headers["dpop-nonce"]
    assert fresh == nonce_of(rt) != nonce
    # 4. Two periods on, the first nonce is stale: use_dpop_nonce, and nothing changed.
    rt.clock.advance(300)
    before = storage_snapshot(rt.store.engine)
    proof = key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce)
    r = post_token(http, reg, refresh(body["refresh_token"]), proof)
    assert assert_use_dpop_nonce(r, rt) not in (nonce, fresh)
    assert storage_snapshot(rt.store.engine) == before
    assert not spent(rt, body["refresh_token"])


def test_per_client_nonce_of_another_deployment_is_refused(http, rt, make_client, key) -> None:
    reg = make_client(dpop_nonce_required=True)
    cc = {"grant_type": "client_credentials"}
    forged = nonce_of(rt, secret="another secret" * 4)
    assert forged != nonce_of(rt)
    r = post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt), nonce=forged))
    assert_use_dpop_nonce(r, rt)
    r = post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce_of(rt)))
    assert_dpop_tokens(r, rt, key)


def test_a_client_without_the_setting_needs_no_nonce_but_is_offered_one(
    http, rt, make_client, issue, key
) -> None:
    reg = make_client()
    assert reg.client.dpop_nonce_required is False
    r = post_token(http, reg, refresh(issue(reg).refresh_token), key.proof(TOKEN_HTU, iat=now(rt)))
    assert_dpop_tokens(r, rt, key)
    assert r.headers["dpop-nonce"] == nonce_of(rt)
    # A nonce it chose to use (valid or not) changes nothing for it.
    cc = {"grant_type": "client_credentials"}
    for nonce in (nonce_of(rt), "not-a-nonce"):
        r = post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce))
        assert_dpop_tokens(r, rt, key)


def test_per_client_nonce_with_client_credentials(http, rt, make_client, key) -> None:
    reg = make_client(dpop_nonce_required=True)
    cc = {"grant_type": "client_credentials"}
    before = storage_snapshot(rt.store.engine)
    nonce = assert_use_dpop_nonce(post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt))), rt)
    assert storage_snapshot(rt.store.engine) == before
    r = post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce))
    assert "refresh_token" not in assert_dpop_tokens(r, rt, key)


@pytest.mark.parametrize("public", [True, False], ids=["public", "confidential"])
def test_per_client_nonce_with_authorization_code(http, rt, make_client, user, key, public) -> None:
    reg = make_client(public=public, dpop_nonce_required=True)
    params = code_params(code_for(rt, reg, user))
    before = storage_snapshot(rt.store.engine)
    r = post_token(http, reg, params, key.proof(TOKEN_HTU, iat=now(rt)))
    nonce = assert_use_dpop_nonce(r, rt)
    assert storage_snapshot(rt.store.engine) == before  # the code is not consumed
    r = post_token(http, reg, params, key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce))
    body = assert_dpop_tokens(r, rt, key)
    assert family_jkt(rt, body) == (key.jkt if public else None)
    # And the public client's bound family refreshes on with nonce and key.
    r = post_token(
        http, reg, refresh(body["refresh_token"]), key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce)
    )
    assert_dpop_tokens(r, rt, key)


def test_a_bad_client_is_invalid_client_before_any_nonce(
    http, rt, make_client, issue, key, doc, registry
) -> None:
    """Client authentication first: an unknown client or a wrong secret is invalid_client,
    not an invitation to retry with a nonce (the nonce header is there all the same)."""
    reg = make_client(dpop_nonce_required=True)
    token = issue(reg).refresh_token
    for auth in ((reg.client_id, "tkd_cs_wrong"), ("nobody", "tkd_cs_x")):
        r = http.post(
            TOKEN, data=refresh(token), auth=auth, headers=dpop(key.proof(TOKEN_HTU, iat=now(rt)))
        )
        assert_oauth_error(r, "invalid_client")
        assert r.headers["dpop-nonce"] == nonce_of(rt)
        assert_documented(doc, registry, TOKEN, r)
    assert not spent(rt, token)


def test_a_bad_proof_is_invalid_dpop_proof_before_any_nonce(
    http, rt, make_client, issue, key
) -> None:
    reg = make_client(dpop_nonce_required=True)
    token = issue(reg).refresh_token
    r = post_token(http, reg, refresh(token), key.proof(TOKEN_HTU, iat=now(rt) - 3600))
    assert_oauth_error(r, "invalid_dpop_proof")
    assert r.headers["dpop-nonce"] == nonce_of(rt)


def test_a_refused_proofs_jti_is_not_recorded(http, rt, make_client, issue, key) -> None:
    """After use_dpop_nonce the proof was not recorded as used: the very same proof passes
    for a client that needs no nonce (and only then is it a replay)."""
    strict, relaxed = make_client(dpop_nonce_required=True), make_client()
    cc = {"grant_type": "client_credentials"}
    proof = key.proof(TOKEN_HTU, iat=now(rt))
    rows = proof_rows(rt)
    assert_use_dpop_nonce(post_token(http, strict, cc, proof), rt)
    assert proof_rows(rt) == rows
    assert_dpop_tokens(post_token(http, relaxed, cc, proof), rt, key)
    assert proof_rows(rt) == rows + 1
    assert_oauth_error(post_token(http, relaxed, cc, proof), "invalid_dpop_proof")


def test_the_setting_takes_effect_at_once(http, rt, make_client, key) -> None:
    """``clients update --dpop-nonce`` on a running server: every process reads the client
    per request, so the next request needs a nonce (and the one after the change back none)."""
    reg = make_client()
    cc = {"grant_type": "client_credentials"}
    assert_dpop_tokens(post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt))), rt, key)
    rt.store.update_client(reg.client_id, {"dpop_nonce_required": True}, now=now(rt))
    assert_use_dpop_nonce(post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt))), rt)
    rt.store.update_client(reg.client_id, {"dpop_nonce_required": False}, now=now(rt))
    assert_dpop_tokens(post_token(http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt))), rt, key)


def test_per_client_nonce_without_dpop_changes_nothing(http, rt, make_client, issue) -> None:
    """No proof, no nonce: the client gets Bearer tokens, and no DPoP-Nonce header."""
    reg = make_client(dpop_nonce_required=True)
    r = post_token(http, reg, refresh(issue(reg).refresh_token))
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    assert "dpop-nonce" not in r.headers
    r = post_token(http, reg, {"grant_type": "password"})
    assert_oauth_error(r, "unsupported_grant_type")
    assert "dpop-nonce" not in r.headers


def test_global_setting_requires_nonces_whatever_the_clients_say(
    nonce_http, rt, make_client, key
) -> None:
    cc = {"grant_type": "client_credentials"}
    for reg in (make_client(), make_client(dpop_nonce_required=True)):
        r = post_token(nonce_http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt)))
        nonce = assert_use_dpop_nonce(r, rt)
        r = post_token(nonce_http, reg, cc, key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce))
        assert_dpop_tokens(r, rt, key)


def test_userinfo_ignores_the_per_client_setting(http, rt, make_client, issue, key) -> None:
    """A resource knows no client: with TOKEND_DPOP_NONCE=off it neither requires a nonce
    nor sends one, whatever the token's client requires at the token endpoint."""
    reg = make_client(dpop_nonce_required=True)
    first = issue(reg, "openid offline email")
    nonce = nonce_of(rt)
    proof = key.proof(TOKEN_HTU, iat=now(rt), nonce=nonce)
    bound = assert_dpop_tokens(post_token(http, reg, refresh(first.refresh_token), proof), rt, key)
    token = bound["access_token"]
    proof = key.proof(USERINFO_HTU, "GET", iat=now(rt), access_token=token)
    r = http.get(USERINFO, headers=dpop_auth(token, proof))
    assert r.status_code == 200, r.text
    assert "dpop-nonce" not in r.headers


# -- UserInfo (RFC 9449 §7) -------------------------------------------------------------------


@pytest.fixture
def bound_token(http, rt, make_client, issue, key) -> str:
    reg = make_client()
    first = issue(reg, "openid offline email")
    r = post_token(http, reg, refresh(first.refresh_token), key.proof(TOKEN_HTU, iat=now(rt)))
    return assert_dpop_tokens(r, rt, key)["access_token"]


def dpop_auth(token: str, proof: str | None) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", **(dpop(proof) if proof else {})}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_with_the_dpop_scheme_and_ath(
    http, rt, bound_token, key, method, doc, registry
) -> None:
    proof = key.proof(USERINFO_HTU, method, iat=now(rt), access_token=bound_token)
    r = http.request(method, USERINFO, headers=dpop_auth(bound_token, proof))
    assert r.status_code == 200, r.text
    assert_no_store(r)
    assert isinstance(r.json()["sub"], str)
    assert_documented(doc, registry, USERINFO, r)


def test_a_bound_token_as_bearer_is_invalid_token(http, bound_token) -> None:
    assert_bearer_error(http.get(USERINFO, headers=bearer(bound_token)), "invalid_token", 401)
    r = http.post(USERINFO, data={"access_token": bound_token})
    assert_bearer_error(r, "invalid_token", 401)


def test_an_unbound_token_with_the_dpop_scheme_is_invalid_token(
    http, rt, make_client, issue, key
) -> None:
    token = issue(make_client()).access_token
    proof = key.proof(USERINFO_HTU, "GET", iat=now(rt), access_token=token)
    assert_dpop_error(http.get(USERINFO, headers=dpop_auth(token, proof)), "invalid_token")


def _userinfo_cases(key: ProofKey, other: ProofKey, token: str, t: float) -> dict[str, Any]:
    good = key.proof(USERINFO_HTU, "GET", iat=t, access_token=token)
    return {
        "no_proof": (None, "invalid_dpop_proof"),
        "wrong_ath": (
            key.proof(USERINFO_HTU, "GET", iat=t, access_token=token + "x"),
            "invalid_dpop_proof",
        ),
        "no_ath": (key.proof(USERINFO_HTU, "GET", iat=t), "invalid_dpop_proof"),
        "wrong_htm": (
            key.proof(USERINFO_HTU, "POST", iat=t, access_token=token),
            "invalid_dpop_proof",
        ),
        "token_endpoint_htu": (
            key.proof(TOKEN_HTU, "GET", iat=t, access_token=token),
            "invalid_dpop_proof",
        ),
        "old_iat": (
            key.proof(USERINFO_HTU, "GET", iat=t - 120, access_token=token),
            "invalid_dpop_proof",
        ),
        "malformed": ("x.y.z", "invalid_dpop_proof"),
        "another_key": (
            other.proof(USERINFO_HTU, "GET", iat=t, access_token=token),
            "invalid_token",
        ),
        "good": (good, None),
    }


USERINFO_CASES = list(_userinfo_cases(ProofKey(), ProofKey(), "t", 0))


@pytest.mark.parametrize("case", USERINFO_CASES)
def test_userinfo_dpop_errors(http, rt, bound_token, key, other_key, case, doc, registry) -> None:
    proof, error = _userinfo_cases(key, other_key, bound_token, now(rt))[case]
    r = http.get(USERINFO, headers=dpop_auth(bound_token, proof))
    if error is None:
        assert r.status_code == 200, r.text
    else:
        assert_dpop_error(r, error)
    assert_documented(doc, registry, USERINFO, r)


def test_userinfo_refuses_a_replayed_proof(http, rt, bound_token, key) -> None:
    proof = key.proof(USERINFO_HTU, "GET", iat=now(rt), access_token=bound_token)
    assert http.get(USERINFO, headers=dpop_auth(bound_token, proof)).status_code == 200
    r = http.get(USERINFO, headers=dpop_auth(bound_token, proof))
    assert_dpop_error(r, "invalid_dpop_proof")
    assert "used before" in r.json()["error_description"]


def test_userinfo_dpop_token_also_in_the_body_is_invalid_request(
    http, rt, bound_token, key
) -> None:
    proof = key.proof(USERINFO_HTU, "POST", iat=now(rt), access_token=bound_token)
    r = http.post(
        USERINFO, headers=dpop_auth(bound_token, proof), data={"access_token": bound_token}
    )
    assert_dpop_error(r, "invalid_request", 400)


def test_userinfo_nonce_flow(nonce_http, nonce_rt, rt, bound_token, key, doc, registry) -> None:
    proof = key.proof(USERINFO_HTU, "GET", iat=now(rt), access_token=bound_token)
    r = nonce_http.get(USERINFO, headers=dpop_auth(bound_token, proof))
    assert_dpop_error(r, "use_dpop_nonce")
    assert_documented(doc, registry, USERINFO, r)
    nonce = r.headers["dpop-nonce"]
    proof = key.proof(USERINFO_HTU, "GET", iat=now(rt), access_token=bound_token, nonce=nonce)
    r = nonce_http.get(USERINFO, headers=dpop_auth(bound_token, proof))
    assert r.status_code == 200, r.text
    assert r.headers["dpop-nonce"] == nonce


# -- the documents ----------------------------------------------------------------------------


def test_discovery_lists_the_dpop_algorithms(http) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        doc = http.get(path).json()
        assert doc["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "EdDSA"]


def test_openapi_documents_the_dpop_headers(doc) -> None:
    op = doc["paths"][TOKEN]["post"]
    assert [p["name"] for p in op["parameters"]] == ["DPoP"]
    assert "DPoP-Nonce" in op["responses"]["200"]["headers"]
    assert "DPoP-Nonce" in op["responses"]["400"]["headers"]
    assert "DPoP-Nonce" in op["responses"]["401"]["headers"]
    assert "dpop_nonce_required" in op["parameters"][0]["description"]
    error_codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    assert {"invalid_dpop_proof", "use_dpop_nonce"} <= set(error_codes)
    token_types = doc["components"]["schemas"]["TokenResponse"]["properties"]["token_type"]
    assert token_types["enum"] == ["Bearer", "DPoP"]
    assert {"dpop": []} in doc["paths"][USERINFO]["get"]["security"]
