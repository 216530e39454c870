"""Abuse limits over HTTP (issue 10 §2, §7): failed client authentications and sign-ins are
throttled per (client|username, source address) and per address, across processes; the
password is not checked while throttled; Argon2 runs under a per-process bound; wrong-client
revocations are aggregated. Real servers on loopback where addresses and processes matter."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

import tokend.core.accounts as accounts
from tests.conftest import ISSUER, SECRET_KEY
from tests.support.family import cheap_password_hash, register_user
from tests.support.server import running_server
from tests.web.helpers import INTROSPECT, REVOKE, TOKEN, TOKEN_SLASH, assert_no_store
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.events import EventKind
from tokend.core.models import Client, User
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret, new_id
from tokend.runtime import Runtime, build_runtime
from tokend.store.schema import abuse_counters
from tokend.web.app import create_app

LIMIT = 3
WINDOW = 900
LIMITS = {
    "TOKEND_CLIENT_AUTH_FAILURE_LIMIT": str(LIMIT),
    "TOKEND_CLIENT_AUTH_ADDRESS_FAILURE_LIMIT": "20",
    "TOKEND_THROTTLE_WINDOW": str(WINDOW),
    "TOKEND_SECRET_KEY": SECRET_KEY,
}
CC = {"grant_type": "client_credentials"}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        secret_key=SECRET_KEY,
        issuer=ISSUER,
        client_auth_failure_limit=LIMIT,
        client_auth_address_failure_limit=20,
        login_failure_limit=LIMIT,
        login_address_failure_limit=20,
        throttle_window=WINDOW,
        password_hash_concurrency=1,
    )


def confidential(rt: Runtime) -> tuple[str, str]:
    secret = new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name="throttled",
        public=False,
        secret_hash=hash_secret(secret),
        grant_types=frozenset({"client_credentials", "refresh_token"}),
        redirect_uris=("https://app.example/cb",),
        scopes=("openid",),
    )
    rt.store.create_client(client, now=time.time())
    return client.client_id, secret


def from_address(base: str, address: str) -> httpx.Client:
    """An HTTP client whose connections leave from ``address`` (any of 127/8 on Linux)."""
    return httpx.Client(
        base_url=base, transport=httpx.HTTPTransport(local_address=address), timeout=30
    )


def assert_throttled(r: httpx.Response) -> int:
    """429, Retry-After in whole seconds within the window, RFC 6749 §5.2 JSON shape."""
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/json"
    assert_no_store(r)
    assert set(r.json()) == {"error", "error_description"}
    assert r.json()["error"] == "temporarily_unavailable"
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= WINDOW
    return retry


def events(rt: Runtime, kind: str) -> list[dict[str, Any]]:
    return rt.store.list_events(kind)


def counter_rows(rt: Runtime) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(abuse_counters)).scalar_one()


# -- over real servers on loopback --------------------------------------------------------------


def test_a_throttled_address_gets_429_everywhere_and_another_address_gets_in(
    rt: Runtime, db_url: str
) -> None:
    client_id, secret = confidential(rt)
    with (
        running_server(db_url, env=LIMITS) as base,
        from_address(base, "127.0.0.1") as attacker,
        from_address(base, "127.0.0.2") as real,
    ):
        for _ in range(LIMIT):
            r = attacker.post(TOKEN, data=CC, auth=(client_id, "tkd_cs_wrong"))
            assert r.status_code == 401, r.text
        # Past the limit, even the right secret is not judged from this address.
        assert_throttled(attacker.post(TOKEN, data=CC, auth=(client_id, secret)))
        assert_throttled(attacker.post(TOKEN_SLASH, data=CC, auth=(client_id, secret)))
        assert_throttled(attacker.post(REVOKE, data={"token": "x"}, auth=(client_id, secret)))
        assert_throttled(attacker.post(INTROSPECT, data={"token": "x"}, auth=(client_id, secret)))
        assert_throttled(
            attacker.post(TOKEN, json={**CC, "client_id": client_id, "client_secret": secret})
        )
        # The real client, elsewhere, is not locked out.
        r = real.post(TOKEN, data=CC, auth=(client_id, secret))
        assert r.status_code == 200, r.text
        r = real.post(
            INTROSPECT, data={"token": r.json()["access_token"]}, auth=(client_id, secret)
        )
        assert r.status_code == 200 and r.json()["active"] is True
    # One decision, one event (not one per refused request), and no secret in it.
    [event] = events(rt, EventKind.THROTTLED)
    assert event["client_id"] == client_id
    assert event["address"] == "127.0.0.1" and event["detail"]["limit"] == "client"
    assert secret not in str(event) and "tkd_cs_wrong" not in str(event)


def test_two_servers_on_one_database_share_one_limit(rt: Runtime, db_url: str) -> None:
    client_id, secret = confidential(rt)
    with (
        running_server(db_url, env=LIMITS) as a,
        running_server(db_url, env=LIMITS) as b,
        from_address(a, "127.0.0.3") as on_a,
        from_address(b, "127.0.0.3") as on_b,
    ):
        assert on_a.post(TOKEN, data=CC, auth=(client_id, "tkd_cs_1")).status_code == 401
        assert on_b.post(TOKEN, data=CC, auth=(client_id, "tkd_cs_2")).status_code == 401
        assert on_a.post(TOKEN, data=CC, auth=(client_id, "tkd_cs_3")).status_code == 401
        assert_throttled(on_a.post(TOKEN, data=CC, auth=(client_id, secret)))
        # b shares the count: its next wrong guess is past the limit, refused, not a 401 ...
        assert_throttled(on_b.post(TOKEN, data=CC, auth=(client_id, "tkd_cs_4")))
        # ... and from then on b refuses before judging, the right secret too.
        assert_throttled(on_b.post(TOKEN, data=CC, auth=(client_id, secret)))


def test_forwarded_for_is_believed_only_from_trusted_proxies(rt: Runtime, db_url: str) -> None:
    client_id, secret = confidential(rt)
    env = {**LIMITS, "TOKEND_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
    with (
        running_server(db_url, env=env) as base,
        from_address(base, "127.0.0.1") as proxy,
        from_address(base, "127.0.0.2") as direct,
    ):

        def via(xff: str, who: str = secret, c: httpx.Client = proxy) -> httpx.Response:
            return c.post(TOKEN, data=CC, auth=(client_id, who), headers={"X-Forwarded-For": xff})

        for _ in range(LIMIT):
            assert via("198.51.100.7", "tkd_cs_wrong").status_code == 401
        assert_throttled(via("198.51.100.7"))
        # Hops the client wrote (left) cannot hide it; trusted hops (right) are skipped.
        assert_throttled(via("203.0.113.1, 198.51.100.7"))
        assert_throttled(via("198.51.100.7, 10.1.2.3"))
        # Another address behind the proxy, and the proxy's own address, are not locked.
        assert via("198.51.100.8").status_code == 200
        assert proxy.post(TOKEN, data=CC, auth=(client_id, secret)).status_code == 200
        # From a peer that is no trusted proxy, the header is ignored: a new value per
        # request does not escape the limit, and it poisons no one else's address.
        for i in range(LIMIT):
            r = via(f"192.0.2.{i}", "tkd_cs_wrong", direct)
            assert r.status_code == 401
        assert_throttled(via("192.0.2.200", secret, direct))
        assert via("192.0.2.0").status_code == 200


# -- in-process: sign-ins, the success path, window expiry, events ------------------------------


@pytest.fixture
def at() -> Iterator[Any]:
    """``at(rt, address)``: the app in-process, as seen from ``address``."""
    opened: list[TestClient] = []

    def make(rt: Runtime, address: str) -> TestClient:
        c = TestClient(
            create_app(rt.settings, runtime=rt),
            base_url=ISSUER,
            raise_server_exceptions=False,
            client=(address, 40000),
        )
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def make_user(rt: Runtime, password: str) -> User:
    return register_user(
        rt, username=f"u{new_id()[:8]}", password_hash=cheap_password_hash(password)
    )


def sign_in(http: TestClient, username: str, password: str) -> httpx.Response:
    page = http.get("/account")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text
    return http.post(
        "/auth/v2/authorize/login",
        data={
            "csrf_token": csrf.group(1),
            "next": "/account",
            "username": username,
            "password": password,
        },
        follow_redirects=False,
    )


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the Argon2 checks of the login form, and the most running at once."""
    stats = {"calls": 0, "running": 0, "peak": 0}
    real = accounts.verify_password
    lock = threading.Lock()

    def counted(*args: Any) -> bool:
        with lock:
            stats["calls"] += 1
            stats["running"] += 1
            stats["peak"] = max(stats["peak"], stats["running"])
        try:
            time.sleep(0.05)
            return real(*args)
        finally:
            with lock:
                stats["running"] -= 1

    monkeypatch.setattr(accounts, "verify_password", counted)
    return stats


def test_sign_in_throttled_without_checking_the_password(
    rt: Runtime, at: Any, hashes: dict[str, int], clock: FrozenClock
) -> None:
    user = make_user(rt, "right password")
    attacker, elsewhere = at(rt, "192.0.2.10"), at(rt, "192.0.2.11")
    for _ in range(LIMIT):
        r = sign_in(attacker, user.username, "guess")
        assert r.status_code == 400 and "Incorrect username or password" in r.text
    assert hashes["calls"] == LIMIT
    r = sign_in(attacker, user.username, "right password")
    # A readable page, like the others, with Retry-After; no session; no Argon2 ran.
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("text/html")
    assert "Too many failed sign-in attempts" in r.text and '<form method="post"' in r.text
    assert 1 <= int(r.headers["retry-after"]) <= WINDOW
    assert "tokend_session" not in r.headers.get("set-cookie", "")
    assert hashes["calls"] == LIMIT
    # The same account from another address signs in.
    assert sign_in(elsewhere, user.username, "right password").status_code == 303
    [event] = events(rt, EventKind.THROTTLED)
    assert event["detail"]["username"] == user.username and "right password" not in str(event)
    # When the window has passed, the first address is back.
    clock.advance(WINDOW)
    assert sign_in(attacker, user.username, "right password").status_code == 303


def test_the_per_address_sign_in_limit_spans_usernames(rt: Runtime, at: Any) -> None:
    http = at(rt, "192.0.2.20")
    for i in range(20):
        assert sign_in(http, f"nobody{i}", "guess").status_code == 400
    user = make_user(rt, "pw")
    assert sign_in(http, user.username, "pw").status_code == 429


def test_argon2_runs_under_a_per_process_bound(
    rt: Runtime, at: Any, hashes: dict[str, int]
) -> None:
    """TOKEND_PASSWORD_HASH_CONCURRENCY=1: eight sign-ins at once hash one at a time."""
    http = at(rt, "192.0.2.30")
    http.get("/account")  # one CSRF cookie for all
    statuses: list[int] = []

    def attempt(i: int) -> None:
        statuses.append(sign_in(http, f"nobody{i}", "guess").status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [400] * 8
    assert hashes["calls"] == 8 and hashes["peak"] == 1


def test_success_is_never_counted_nor_slowed(rt: Runtime, at: Any) -> None:
    client_id, secret = confidential(rt)
    http = at(rt, "192.0.2.40")
    for _ in range(3 * LIMIT):
        assert http.post(TOKEN, data=CC, auth=(client_id, secret)).status_code == 200
    assert counter_rows(rt) == 0  # success writes nothing
    user = make_user(rt, "pw")
    for _ in range(2 * LIMIT):
        assert sign_in(http, user.username, "pw").status_code == 303
    assert counter_rows(rt) == 0


def test_client_window_expiry_lets_the_client_back_in(
    rt: Runtime, at: Any, clock: FrozenClock
) -> None:
    client_id, secret = confidential(rt)
    http = at(rt, "192.0.2.50")
    for _ in range(LIMIT):
        assert http.post(TOKEN, data=CC, auth=(client_id, "tkd_cs_x")).status_code == 401
    clock.advance(WINDOW - 1)
    assert http.post(TOKEN, data=CC, auth=(client_id, secret)).status_code == 429
    clock.advance(1)
    assert http.post(TOKEN, data=CC, auth=(client_id, secret)).status_code == 200


def test_public_client_failures_are_throttled_without_a_read_on_success(
    rt: Runtime, at: Any
) -> None:
    http = at(rt, "192.0.2.60")
    for _ in range(LIMIT):
        r = http.post(REVOKE, data={"token": "x", "client_id": "no-such-client"})
        assert r.status_code == 401
    r = http.post(REVOKE, data={"token": "x", "client_id": "no-such-client"})
    assert_throttled(r)


def test_wrong_client_revocations_add_one_row_with_a_count(
    rt: Runtime, at: Any, make_client: Any, issue: Any
) -> None:
    """Issue 10 §7: 50 revocations of another client's token with a public client_id made
    50 rows; now one row per (client, address) per window, counting them."""
    victim, thief = make_client(), make_client(public=True)
    token = issue(victim).refresh_token
    http = at(rt, "192.0.2.70")
    for _ in range(50):
        r = http.post(REVOKE, data={"token": token, "client_id": thief.client_id})
        assert r.status_code == 200
    [event] = events(rt, EventKind.REVOCATION_WRONG_CLIENT)
    assert event["count"] == 50 and event["client_id"] == thief.client_id
    assert event["detail"]["owner_client_id"] == victim.client_id
    # From another address: a row of its own.
    at(rt, "192.0.2.71").post(REVOKE, data={"token": token, "client_id": thief.client_id})
    assert [e["count"] for e in events(rt, EventKind.REVOCATION_WRONG_CLIENT)] == [50, 1]


def test_gc_removes_ended_counters(rt: Runtime, at: Any, clock: FrozenClock) -> None:
    http = at(rt, "192.0.2.80")
    http.post(TOKEN, data=CC, auth=("someone", "tkd_cs_x"))
    assert counter_rows(rt) == 2
    assert rt.store.gc(now=clock.now(), retention=0)["abuse_counters"] == 0
    assert rt.store.gc(now=clock.now() + WINDOW + 1, retention=0)["abuse_counters"] == 2
    assert counter_rows(rt) == 0


def test_runtime_settings_round_trip(db_url: str) -> None:
    """The settings reach the rule (env names as documented in the README)."""
    s = Settings(database_url=db_url, secret_key=SECRET_KEY, trusted_proxies="10.0.0.0/8, ::1")
    assert [str(n) for n in s.trusted_proxy_networks] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError):
        Settings(database_url=db_url, secret_key=SECRET_KEY, trusted_proxies="10.0.0.0/33")
    rt = build_runtime(s, prepare=True)
    try:
        assert rt.throttle.policy.client.max_failures == 10
        assert rt.throttle.policy.login_address.window == 900
    finally:
        rt.close()
