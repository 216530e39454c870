"""RFC 8628 over HTTP, on SQLite and PostgreSQL: ``POST /auth/v2/device/authorize`` (client
authentication and bodies as at the token endpoint, scope, only device clients, §3.2 answer)
and the device_code grant at the real token endpoint (pending, approve, tokens, refresh,
slow_down, deny, expiry, single redemption, another client, unknown code, a browser row,
DPoP). The person's side is ``rt.device`` here; the /device pages have their own tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY, RegisteredClient
from tests.support.dpop import ProofKey
from tests.support.family import register_client, register_user
from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    JSON,
    TOKEN,
    assert_no_store,
    assert_oauth_error,
    assert_tokens,
    basic,
    refresh,
)
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.device import DEVICE_CODE_GRANT, normalize_user_code
from tokend.core.events import EventKind
from tokend.core.models import User
from tokend.core.secrets import new_device_code
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app

DEVICE = "/auth/v2/device/authorize"

rt, http, settings, clock = shared_runtime_fixtures(reset_clock=True)


@pytest.fixture
def tv(rt: Runtime) -> RegisteredClient:
    """A public device client (a TV app) with refresh tokens."""
    return register_client(
        rt,
        name="Living room TV",
        public=True,
        grant_types=(DEVICE_CODE_GRANT, "refresh_token"),
        redirect_uris=(),
        scopes="openid offline profile",
    )


@pytest.fixture
def cli(rt: Runtime) -> RegisteredClient:
    """A confidential device client."""
    return register_client(
        rt, grant_types=(DEVICE_CODE_GRANT,), redirect_uris=(), scopes="openid profile"
    )


@pytest.fixture
def person(rt: Runtime) -> User:
    return register_user(rt)


def authorize(
    http: TestClient, reg: RegisteredClient, scope: str | None = "openid offline", **kw: Any
) -> httpx.Response:
    data = {} if scope is None else {"scope": scope}
    if reg.secret is None:
        return http.post(DEVICE, data={**data, "client_id": reg.client_id}, **kw)
    return http.post(DEVICE, data=data, auth=reg.basic, **kw)


def started(
    http: TestClient, reg: RegisteredClient, scope: str = "openid offline"
) -> dict[str, Any]:
    r = authorize(http, reg, scope)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def poll(
    http: TestClient, reg: RegisteredClient, device_code: str, **headers: str
) -> httpx.Response:
    data = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    if reg.secret is None:
        return http.post(TOKEN, data={**data, "client_id": reg.client_id}, headers=headers)
    return http.post(TOKEN, data=data, auth=reg.basic, headers=headers)


def approve(rt: Runtime, user_code: str, person: User, *, auth_time: float | None = None) -> None:
    pending = rt.device.pending(user_code)
    assert pending is not None
    when = rt.clock.now() if auth_time is None else auth_time
    assert rt.device.approve(pending.id, user_id=person.id, auth_time=when, address="192.0.2.5")


# -- the device authorization endpoint -----------------------------------------------------------


def test_answer_of_3_2(http: TestClient, tv: RegisteredClient) -> None:
    r = authorize(http, tv)
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    assert_no_store(r)
    body = r.json()
    assert set(body) == {
        "device_code", "user_code", "verification_uri", "verification_uri_complete",
        "expires_in", "interval",
    }  # fmt: skip
    assert body["verification_uri"] == f"{ISSUER}/device"
    assert body["expires_in"] == 600 and body["interval"] == 5
    assert normalize_user_code(body["user_code"]) is not None and body["user_code"][4] == "-"
    link = urlsplit(body["verification_uri_complete"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{ISSUER}/device"
    assert parse_qs(link.query) == {"user_code": [body["user_code"]]}
    assert body["device_code"].startswith("tkd_dc_") and len(body["device_code"]) >= 50


def test_json_body_and_basic_auth(http: TestClient, cli: RegisteredClient) -> None:
    r = http.post(DEVICE, json={"scope": "openid"}, auth=cli.basic)
    assert r.status_code == 200, r.text
    r = http.post(
        DEVICE, data={"client_id": cli.client_id, "client_secret": cli.secret, "scope": "openid"}
    )
    assert r.status_code == 200, r.text  # client_secret_post


def test_client_authentication_as_at_the_token_endpoint(
    http: TestClient, cli: RegisteredClient, tv: RegisteredClient
) -> None:
    assert_oauth_error(http.post(DEVICE, data={"scope": "openid"}), "invalid_client")
    wrong = http.post(DEVICE, data={"scope": "openid"}, headers=basic(cli.client_id, "nope"))
    assert_oauth_error(wrong, "invalid_client", leaks=("nope",))
    # a confidential client without its secret, a public client with one
    assert_oauth_error(http.post(DEVICE, data={"client_id": cli.client_id}), "invalid_client")
    assert_oauth_error(
        http.post(DEVICE, data={"client_id": tv.client_id, "client_secret": "x"}), "invalid_client"
    )
    assert_oauth_error(http.post(DEVICE, data={"client_id": "nobody"}), "invalid_client")


def test_only_device_clients(rt: Runtime, http: TestClient) -> None:
    web = register_client(rt, grant_types=("authorization_code", "refresh_token"))
    assert_oauth_error(authorize(http, web, "openid"), "unauthorized_client")


def test_scope_within_the_registration(http: TestClient, tv: RegisteredClient) -> None:
    assert_oauth_error(authorize(http, tv, "openid admin"), "invalid_scope")
    assert_oauth_error(authorize(http, tv, 'openid "x'), "invalid_scope")
    assert authorize(http, tv, None).status_code == 200  # the registered scope


def test_repeated_parameter_and_bad_body(http: TestClient, tv: RegisteredClient) -> None:
    r = http.post(
        DEVICE,
        content=f"client_id={tv.client_id}&scope=openid&scope=openid",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(r, "invalid_request")
    r = http.post(DEVICE, content=b"{not json", headers={"content-type": JSON})
    assert_oauth_error(r, "invalid_request")


def test_get_is_not_allowed(http: TestClient) -> None:
    assert http.get(DEVICE).status_code == 405


# -- the grant at the token endpoint ------------------------------------------------------------


def test_pending_approve_tokens_refresh(
    rt: Runtime, http: TestClient, clock: FrozenClock, tv: RegisteredClient, person: User
) -> None:
    start = started(http, tv, "openid offline profile")
    assert_oauth_error(poll(http, tv, start["device_code"]), "authorization_pending")
    clock.advance(5)
    assert_oauth_error(poll(http, tv, start["device_code"]), "authorization_pending")
    auth_time = clock.now() - 20
    approve(rt, start["user_code"], person, auth_time=auth_time)
    clock.advance(5)
    body = assert_tokens(poll(http, tv, start["device_code"]))
    assert body["scope"] == "openid offline profile" and body["refresh_token"]
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_claims["aud"] == tv.client_id and id_claims["sub"] == person.id
    assert id_claims["auth_time"] == int(auth_time)
    _, access = rt.keys.verify(body["access_token"])
    assert access["client_id"] == tv.client_id and access["sub"] == person.id
    r = http.post(TOKEN, data={**refresh(body["refresh_token"]), "client_id": tv.client_id})
    assert assert_tokens(r)["refresh_token"] != body["refresh_token"]
    [event] = [
        e
        for e in rt.store.list_events(EventKind.DEVICE_AUTHORIZATION_APPROVED)
        if e["client_id"] == tv.client_id
    ]
    assert event["user_id"] == person.id and event["address"] == "192.0.2.5"


def test_confidential_client_without_offline_gets_no_refresh_token(
    rt: Runtime, http: TestClient, cli: RegisteredClient, person: User
) -> None:
    start = started(http, cli, "openid")
    approve(rt, start["user_code"], person)
    body = assert_tokens(poll(http, cli, start["device_code"]))
    assert "refresh_token" not in body and body["id_token"]


def test_slow_down(
    rt: Runtime, http: TestClient, clock: FrozenClock, tv: RegisteredClient, person: User
) -> None:
    code = started(http, tv)["device_code"]
    assert_oauth_error(poll(http, tv, code), "authorization_pending")
    clock.advance(2)
    assert_oauth_error(poll(http, tv, code), "slow_down")
    clock.advance(6)  # the old 5 s passed, but the interval is 10 s now
    assert_oauth_error(poll(http, tv, code), "slow_down")
    clock.advance(15)  # 15 s now
    assert_oauth_error(poll(http, tv, code), "authorization_pending")


def test_deny(rt: Runtime, http: TestClient, tv: RegisteredClient) -> None:
    start = started(http, tv)
    pending = rt.device.pending(start["user_code"])
    assert pending is not None and rt.device.deny(pending.id, address=None)
    assert_oauth_error(poll(http, tv, start["device_code"]), "access_denied")
    assert [e for e in rt.store.list_events(EventKind.DEVICE_AUTHORIZATION_DENIED)
            if e["client_id"] == tv.client_id]  # fmt: skip


def test_expiry(
    rt: Runtime, http: TestClient, clock: FrozenClock, tv: RegisteredClient, person: User
) -> None:
    start = started(http, tv)
    approve(rt, start["user_code"], person)
    clock.advance(600)
    assert_oauth_error(poll(http, tv, start["device_code"]), "expired_token")
    assert rt.device.pending(started(http, tv)["user_code"]) is not None


def test_redeemed_once(
    rt: Runtime, http: TestClient, clock: FrozenClock, tv: RegisteredClient, person: User
) -> None:
    start = started(http, tv)
    approve(rt, start["user_code"], person)
    body = assert_tokens(poll(http, tv, start["device_code"]))
    clock.advance(5)
    second = poll(http, tv, start["device_code"])
    assert_oauth_error(second, "invalid_grant", leaks=(start["device_code"],))
    # the replay revoked what the first redemption issued
    r = http.post(TOKEN, data={**refresh(body["refresh_token"]), "client_id": tv.client_id})
    assert_oauth_error(r, "invalid_grant")


def test_another_client(
    rt: Runtime, http: TestClient, tv: RegisteredClient, cli: RegisteredClient, person: User
) -> None:
    start = started(http, tv)
    assert_oauth_error(poll(http, cli, start["device_code"]), "invalid_grant")
    approve(rt, start["user_code"], person)
    assert_oauth_error(poll(http, cli, start["device_code"]), "invalid_grant")
    assert_tokens(poll(http, tv, start["device_code"]))  # still the owner's


def test_unknown_and_missing_codes(http: TestClient, tv: RegisteredClient) -> None:
    assert_oauth_error(poll(http, tv, new_device_code()), "invalid_grant")
    assert_oauth_error(poll(http, tv, "ABCD-EFGH"), "invalid_grant")
    r = http.post(TOKEN, data={"grant_type": DEVICE_CODE_GRANT, "client_id": tv.client_id})
    assert_oauth_error(r, "invalid_request")


def test_a_client_without_the_grant_cannot_poll(
    rt: Runtime, http: TestClient, tv: RegisteredClient
) -> None:
    code = started(http, tv)["device_code"]
    web = register_client(rt, public=True, grant_types=("authorization_code",))
    assert_oauth_error(poll(http, web, code), "unauthorized_client")


def test_a_browser_row_is_refused_at_the_token_endpoint(
    rt: Runtime, http: TestClient, tv: RegisteredClient, person: User
) -> None:
    start = rt.device.start_browser(
        tv.client, ("openid",), request_hash=hashlib.sha256(b"req").digest(), address=None
    )
    approve(rt, start.user_code, person)
    assert_oauth_error(poll(http, tv, start.device_code), "invalid_grant")


def test_dpop_binds_the_tokens(
    rt: Runtime, http: TestClient, tv: RegisteredClient, person: User
) -> None:
    start = started(http, tv)
    approve(rt, start["user_code"], person)
    key = ProofKey("ES256")
    proof = key.proof(f"{ISSUER}{TOKEN}", iat=rt.clock.now())
    r = poll(http, tv, start["device_code"], DPoP=proof)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "DPoP"
    _, claims = rt.keys.verify(body["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt}
    # a public client's refresh token is bound too: without a proof it is refused
    r = http.post(TOKEN, data={**refresh(body["refresh_token"]), "client_id": tv.client_id})
    assert_oauth_error(r, "invalid_grant")


def test_discovery(http: TestClient) -> None:
    doc = http.get("/.well-known/openid-configuration").json()
    assert doc["device_authorization_endpoint"] == f"{ISSUER}{DEVICE}"
    assert DEVICE_CODE_GRANT in doc["grant_types_supported"]


# -- abuse limits -------------------------------------------------------------------------------


@pytest.fixture
def strict(db_url: str) -> Iterator[tuple[Runtime, TestClient]]:
    settings = Settings(
        database_url=db_url,
        secret_key=SECRET_KEY,
        issuer=ISSUER,
        client_auth_failure_limit=3,
        client_auth_address_failure_limit=100,
    )
    runtime = build_runtime(settings, clock=FrozenClock(), prepare=True)
    with TestClient(create_app(settings, runtime=runtime), base_url=ISSUER) as client:
        yield runtime, client
    runtime.close()


def test_failed_client_authentication_is_throttled(strict: tuple[Runtime, TestClient]) -> None:
    runtime, client = strict
    reg = register_client(runtime, grant_types=(DEVICE_CODE_GRANT,), redirect_uris=())
    wrong = basic(reg.client_id, "wrong")
    for _ in range(3):
        assert_oauth_error(
            client.post(DEVICE, data={"scope": "openid"}, headers=wrong), "invalid_client"
        )
    r = client.post(DEVICE, data={"scope": "openid"}, headers=wrong)
    assert r.status_code == 429 and r.json()["error"] == "temporarily_unavailable"
    # the right secret is refused too while the window lasts (it is never compared)
    assert client.post(DEVICE, data={"scope": "openid"}, auth=reg.basic).status_code == 429


# -- the OpenAPI document ---------------------------------------------------------------------


def test_answers_match_the_openapi_document(
    rt: Runtime, http: TestClient, tv: RegisteredClient, person: User
) -> None:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from tests.web.test_openapi import _validator, assert_documented

    doc = http.get("/openapi.json").json()
    registry = Registry().with_resource(
        "urn:tokend:openapi", Resource(contents=doc, specification=DRAFT202012)
    )
    ok = authorize(http, tv)
    assert_documented(doc, registry, DEVICE, ok)
    for r in (
        authorize(http, tv, "admin"),
        http.post(DEVICE, data={"client_id": "nobody"}),
        authorize(http, register_client(rt, grant_types=("authorization_code",)), "openid"),
    ):
        assert_documented(doc, registry, DEVICE, r)
    code = ok.json()["device_code"]
    params = {"grant_type": DEVICE_CODE_GRANT, "device_code": code, "client_id": tv.client_id}
    request_schema = doc["paths"][TOKEN]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]
    assert not list(_validator(request_schema, registry).iter_errors(params))
    assert_documented(doc, registry, TOKEN, poll(http, tv, code))  # authorization_pending
    approve(rt, ok.json()["user_code"], person)
    assert_documented(doc, registry, TOKEN, poll(http, tv, code))  # tokens
