"""``device_authorizations`` on SQLite and PostgreSQL: the DeviceStorage part of SqlStore
(start, find, decide once, the browser's one completion), the grant's poll and redemption
through the real token service (including a race for one code), and gc."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from tests.conftest import RegisteredClient
from tokend.core.clock import FrozenClock
from tokend.core.device import DEVICE_CODE_GRANT
from tokend.core.errors import AuthorizationPending, OAuthError, SlowDown
from tokend.core.events import EventKind
from tokend.core.models import ClientCredentials, TokenRequest, TokenResponse, User
from tokend.runtime import Runtime
from tokend.store.schema import device_authorizations, token_families

REQUEST_HASH = hashlib.sha256(b"request").digest()


@pytest.fixture
def tv(make_client: Callable[..., RegisteredClient]) -> RegisteredClient:
    return make_client(
        public=True, grant_types=(DEVICE_CODE_GRANT, "refresh_token"), redirect_uris=()
    )


def poll(rt: Runtime, reg: RegisteredClient, device_code: str) -> TokenResponse:
    params = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    creds = ClientCredentials("none", reg.client_id)
    return rt.service.token(TokenRequest(params=params, credentials=creds))


def rows(rt: Runtime) -> list[dict[str, object]]:
    with rt.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return [r._asdict() for r in conn.execute(select(device_authorizations))]


def test_start_find_decide(rt: Runtime, tv: RegisteredClient, user: User) -> None:
    start = rt.device.start(tv.client, ("openid", "offline"), address="192.0.2.7")
    [row] = rows(rt)
    assert row["device_code_hash"] == hashlib.sha256(start.device_code.encode()).digest()
    assert start.device_code.encode() not in repr(row).encode()
    pending = rt.device.pending(start.user_code.lower())
    assert pending is not None
    assert (pending.client_id, pending.client_name, pending.kind) == (
        tv.client_id,
        "test client",
        "device",
    )
    assert pending.scopes == ("openid", "offline") and pending.address == "192.0.2.7"
    assert rt.device.approve(pending.id, user_id=user.id, auth_time=1.0, address="192.0.2.8")
    assert not rt.device.deny(pending.id, address=None)
    assert rt.device.pending(start.user_code) is None
    [event] = rt.store.list_events(EventKind.DEVICE_AUTHORIZATION_APPROVED)
    assert event["client_id"] == tv.client_id and event["user_id"] == user.id


def test_poll_slow_down_then_tokens(
    rt: Runtime, tv: RegisteredClient, user: User, clock: FrozenClock
) -> None:
    start = rt.device.start(tv.client, ("openid", "offline"), address=None)
    with pytest.raises(AuthorizationPending):
        poll(rt, tv, start.device_code)
    clock.advance(1)
    with pytest.raises(SlowDown):
        poll(rt, tv, start.device_code)
    assert rows(rt)[0]["interval"] == 10
    pending = rt.device.pending(start.user_code)
    assert pending is not None
    rt.device.approve(pending.id, user_id=user.id, auth_time=clock.now(), address=None)
    clock.advance(10)
    response = poll(rt, tv, start.device_code)
    assert response.refresh_token and response.id_token
    [row] = rows(rt)
    assert row["status"] == "redeemed" and row["family_id"] is not None


def test_racing_redemptions_of_one_code(rt: Runtime, tv: RegisteredClient, user: User) -> None:
    start = rt.device.start(tv.client, ("openid", "offline"), address=None)
    pending = rt.device.pending(start.user_code)
    assert pending is not None
    rt.device.approve(pending.id, user_id=user.id, auth_time=1.0, address=None)
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def redeem() -> None:
        try:
            barrier.wait()
            poll(rt, tv, start.device_code)
            outcomes.append("tokens")
        except OAuthError as exc:
            outcomes.append(exc.error)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=redeem) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(outcomes) == ["invalid_grant"] * (n - 1) + ["tokens"]
    with rt.store.engine.connect() as conn:  # type: ignore[attr-defined]
        families = conn.execute(select(func.count()).select_from(token_families)).scalar()
    assert families == 1  # one family issued, revoked by the replays that lost


def test_browser_completes_once(rt: Runtime, tv: RegisteredClient, user: User) -> None:
    start = rt.device.start_browser(tv.client, ("openid",), request_hash=REQUEST_HASH, address=None)
    assert rt.device.browser_outcome(start.device_code, REQUEST_HASH).status == "pending"
    pending = rt.device.pending(start.user_code)
    assert pending is not None and pending.kind == "browser"
    rt.device.approve(pending.id, user_id=user.id, auth_time=5.0, address=None)
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                rt.device.browser_outcome(start.device_code, REQUEST_HASH).status
            )
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["approved", "expired", "expired", "expired"]
    assert rows(rt)[0]["status"] == "redeemed"


def test_gc_deletes_expired_authorizations(
    rt: Runtime, tv: RegisteredClient, clock: FrozenClock
) -> None:
    rt.device.start(tv.client, ("openid",), address=None)
    clock.advance(rt.settings.device_code_ttl - 1)
    live = rt.device.start(tv.client, ("openid",), address=None)
    clock.advance(2)
    out = rt.store.gc(now=clock.now(), retention=0)
    assert out["device_authorizations"] == 1
    assert rt.device.pending(live.user_code) is not None
