"""The device flow's domain rules (tokend.core.device, tokend.core.grants.device_code) over
the in-memory store: user codes, starting, deciding, polling, redeeming, the browser kind."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter

import pytest

from tests.core.memory_device import MemoryDeviceStorage
from tests.core.world import World
from tokend.core import device as dev
from tokend.core.device import (
    DEVICE_CODE_GRANT,
    USER_CODE_ALPHABET,
    DeviceFlow,
    format_user_code,
    new_user_code,
    normalize_user_code,
)
from tokend.core.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidGrant,
    InvalidScope,
    OAuthError,
    SlowDown,
    UnauthorizedClient,
)
from tokend.core.events import EventKind
from tokend.core.grants.device_code import DeviceCodeGrant
from tokend.core.models import TokenRequest, TokenResponse
from tokend.core.secrets import new_device_code
from tokend.core.service import TokenService
from tokend.core.subjects import Subjects

KEY = b"device-user-code-key-for-tests-0123456789"
TTL = 600
REQUEST_HASH = hashlib.sha256(b"authorization request").digest()


class DeviceWorld:
    """A World with the device flow and grant wired as tokend.runtime wires them."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.storage = MemoryDeviceStorage(world.store)
        self.flow = DeviceFlow(self.storage, clock=world.clock, user_code_key=KEY, ttl=TTL)
        self.grant = DeviceCodeGrant(
            store=world.store, issuer=world.issuer, subjects=Subjects(b"s" * 32)
        )
        grants = frozenset({DEVICE_CODE_GRANT, "refresh_token"})
        self.tv = world.register("tv", public=True, grant_types=grants, redirect_uris=())
        self.cli = world.register("cli", grant_types=grants, redirect_uris=())
        self.service = TokenService(
            store=world.store,
            grants=[self.grant, world.refresh_grant],
            clock=world.clock,
            policy=world.policy,
        )

    def poll(self, device_code: str, reg: object = None) -> TokenResponse:
        reg = reg or self.tv
        creds = reg.credentials()  # type: ignore[attr-defined]
        params = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
        return self.service.token(TokenRequest(params=params, credentials=creds))

    def rows(self) -> list[dev.StoredDevice]:
        return list(self.w.store.state.devices.values())


@pytest.fixture
def d(world: World) -> DeviceWorld:
    return DeviceWorld(world)


# -- user codes ------------------------------------------------------------------------------


def test_user_codes_are_8_chars_of_the_alphabet_and_uniform() -> None:
    codes = [new_user_code() for _ in range(4000)]
    assert all(len(c) == 8 and set(c) <= set(USER_CODE_ALPHABET) for c in codes)
    counts = Counter("".join(codes))
    assert set(counts) == set(USER_CODE_ALPHABET)  # every letter used
    expected = 4000 * 8 / len(USER_CODE_ALPHABET)
    assert all(abs(n - expected) < expected * 0.2 for n in counts.values())
    assert len(set(codes)) > 3990  # no repeating source


def test_alphabet_has_no_vowels_or_look_alikes() -> None:
    assert not set(USER_CODE_ALPHABET) & set("AEIOUY0123456789")
    assert len(set(USER_CODE_ALPHABET)) == 20


@pytest.mark.parametrize(
    "typed", ["BCDF-GHJK", "bcdfghjk", " bcdf ghjk ", "BcDf-gHjK", "bcdf-ghjk\t"]
)
def test_normalize_accepts_case_dash_and_spaces(typed: str) -> None:
    assert normalize_user_code(typed) == "BCDFGHJK"


@pytest.mark.parametrize(
    "typed",
    ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF_GHJK", "BCDF-GHJ1", "ß" * 8, "B" * 40],
)
def test_normalize_refuses_what_cannot_be_a_code(typed: str) -> None:
    assert normalize_user_code(typed) is None


def test_format() -> None:
    assert format_user_code("bcdfghjk") == "BCDF-GHJK"
    with pytest.raises(ValueError):
        format_user_code("nope")


# -- starting ---------------------------------------------------------------------------------


def test_start_stores_only_hashes(d: DeviceWorld) -> None:
    start = d.flow.authorize(d.tv.client, "openid offline", address="192.0.2.1")
    assert start.expires_in == TTL and start.interval == 5
    assert len(start.user_code) == 9 and start.user_code[4] == "-"
    [row] = d.rows()
    assert row.device_code_hash == hashlib.sha256(start.device_code.encode()).digest()
    stored = repr(row)
    assert start.device_code not in stored
    assert normalize_user_code(start.user_code) not in stored
    # keyed: a plain digest of the code is not what is stored
    assert row.user_code_hash != hashlib.sha256(start.user_code.replace("-", "").encode()).digest()
    assert row.scopes == ("openid", "offline") and row.status == "pending"
    assert row.expires_at == d.w.clock.now() + TTL


def test_only_device_clients_may_start(d: DeviceWorld) -> None:
    with pytest.raises(UnauthorizedClient):
        d.flow.authorize(d.w.web.client, "openid", address=None)
    assert d.rows() == []


def test_scope_within_the_client_registration(d: DeviceWorld) -> None:
    with pytest.raises(InvalidScope):
        d.flow.authorize(d.tv.client, "openid admin", address=None)
    with pytest.raises(InvalidScope):
        d.flow.authorize(d.tv.client, 'bad"scope', address=None)
    start = d.flow.authorize(d.tv.client, None, address=None)
    assert d.flow.pending(start.user_code).scopes == d.tv.client.scopes  # type: ignore[union-attr]


def test_a_user_code_clash_draws_again(d: DeviceWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = iter(["BCDFGHJK", "BCDFGHJK", "ZZZZZZZZ"])
    monkeypatch.setattr(dev, "new_user_code", lambda: next(codes))
    assert d.flow.start(d.tv.client, ("openid",), address=None).user_code == "BCDF-GHJK"
    assert d.flow.start(d.tv.client, ("openid",), address=None).user_code == "ZZZZ-ZZZZ"


# -- the person's side ------------------------------------------------------------------------


def test_pending_finds_the_code_however_typed_until_expiry(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address="192.0.2.1")
    seen = d.flow.pending(start.user_code.lower().replace("-", " "))
    assert seen is not None
    assert (seen.client_id, seen.client_name, seen.kind) == ("tv", "tv client", "device")
    assert seen.address == "192.0.2.1"
    assert d.flow.pending("BCDF-GHJK" if start.user_code != "BCDF-GHJK" else "ZZZZ-ZZZZ") is None
    assert d.flow.pending("not a code") is None
    d.w.clock.advance(TTL)
    assert d.flow.pending(start.user_code) is None


def test_decided_once_with_an_event(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    assert d.flow.approve(pending.id, user_id="user-1", auth_time=1.0, address="192.0.2.9")
    assert not d.flow.approve(pending.id, user_id="user-2", auth_time=2.0, address=None)
    assert not d.flow.deny(pending.id, address=None)
    assert d.flow.pending(start.user_code) is None
    [row] = d.rows()
    assert (row.status, row.user_id, row.auth_time) == ("approved", "user-1", 1.0)
    [event] = d.w.store.events(EventKind.DEVICE_AUTHORIZATION_APPROVED)
    assert (event.client_id, event.user_id, event.address) == ("tv", "user-1", "192.0.2.9")
    assert start.device_code not in repr(event) and start.user_code not in repr(event)


def test_deny_records_an_event(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None and d.flow.deny(pending.id, address="192.0.2.9")
    assert [e.client_id for e in d.w.store.events(EventKind.DEVICE_AUTHORIZATION_DENIED)] == ["tv"]


def test_an_expired_authorization_cannot_be_decided(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    d.w.clock.advance(TTL)
    assert not d.flow.approve(pending.id, user_id="user-1", auth_time=1.0, address=None)
    assert d.w.store.events() == []


def test_concurrent_approvals_one_wins(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                d.flow.approve(pending.id, user_id=f"u{i}", auth_time=1.0, address=None)
            )
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


# -- the token endpoint ------------------------------------------------------------------------


def approved(d: DeviceWorld, scope: tuple[str, ...] = ("openid", "offline")) -> str:
    start = d.flow.start(d.tv.client, scope, address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    d.flow.approve(pending.id, user_id="user-1", auth_time=d.w.clock.now() - 30, address=None)
    return start.device_code


def test_pending_then_tokens_then_refresh(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid", "offline"), address=None)
    with pytest.raises(AuthorizationPending):
        d.poll(start.device_code)
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    auth_time = d.w.clock.now()
    d.flow.approve(pending.id, user_id="user-1", auth_time=auth_time, address=None)
    d.w.clock.advance(5)
    response = d.poll(start.device_code)
    assert response.refresh_token is not None and response.id_token is not None
    claims = d.w.id_claims(response, "tv")
    assert claims["sub"] == "user-1" and claims["auth_time"] == int(auth_time)
    assert d.w.access_claims(response)["scope"] == "openid offline"
    refreshed = d.w.refresh(response.refresh_token, d.tv)
    assert refreshed.refresh_token not in (None, response.refresh_token)


def test_no_refresh_token_without_offline(d: DeviceWorld) -> None:
    response = d.poll(approved(d, ("openid",)))
    assert response.refresh_token is None and response.id_token is not None


def test_no_id_token_without_openid(d: DeviceWorld) -> None:
    response = d.poll(approved(d, ("api:read",)))
    assert response.id_token is None and response.refresh_token is None


def test_slow_down_grows_the_interval_for_later_polls(d: DeviceWorld) -> None:
    code = d.flow.start(d.tv.client, ("openid",), address=None).device_code
    with pytest.raises(AuthorizationPending):
        d.poll(code)
    d.w.clock.advance(4.9)
    with pytest.raises(SlowDown):
        d.poll(code)
    assert d.rows()[0].interval == 10
    d.w.clock.advance(9.9)  # the old interval passed, not the new one
    with pytest.raises(SlowDown):
        d.poll(code)
    assert d.rows()[0].interval == 15
    d.w.clock.advance(15)
    with pytest.raises(AuthorizationPending):
        d.poll(code)
    assert d.rows()[0].interval == 15  # it does not shrink back
    for _ in range(20):
        d.w.clock.advance(1)
        with pytest.raises(SlowDown):
            d.poll(code)
    assert d.rows()[0].interval == dev.MAX_POLL_INTERVAL


def test_denied_is_access_denied(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    d.flow.deny(pending.id, address=None)
    with pytest.raises(AccessDenied):
        d.poll(start.device_code)


def test_expired_is_expired_token_even_once_approved(d: DeviceWorld) -> None:
    code = approved(d)
    d.w.clock.advance(TTL)
    with pytest.raises(ExpiredToken):
        d.poll(code)
    assert d.w.store.state.families == {}


def test_redeemed_once_and_a_replay_revokes(d: DeviceWorld) -> None:
    code = approved(d)
    first = d.poll(code)
    with pytest.raises(InvalidGrant):
        d.poll(code)
    [family] = d.w.store.state.families.values()
    assert family.revoked_at is not None
    [event] = d.w.store.events(EventKind.DEVICE_CODE_REPLAY)
    assert event.family_id == family.id
    with pytest.raises(InvalidGrant):
        d.w.refresh(first.refresh_token or "", d.tv)


def test_racing_redemptions_one_wins(d: DeviceWorld) -> None:
    code = approved(d)
    outcomes: list[str] = []

    def redeem() -> None:
        try:
            d.poll(code)
            outcomes.append("tokens")
        except OAuthError as exc:
            outcomes.append(exc.error)

    threads = [threading.Thread(target=redeem) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["invalid_grant"] * 5 + ["tokens"]


def test_another_client_cannot_poll_or_redeem(d: DeviceWorld) -> None:
    start = d.flow.start(d.tv.client, ("openid",), address=None)
    with pytest.raises(InvalidGrant):
        d.poll(start.device_code, d.cli)
    assert d.rows()[0].last_polled_at is None  # its poll counted nothing
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    d.flow.approve(pending.id, user_id="user-1", auth_time=1.0, address=None)
    with pytest.raises(InvalidGrant):
        d.poll(start.device_code, d.cli)
    assert d.rows()[0].status == "approved"
    assert d.poll(start.device_code).access_token


def test_unknown_and_malformed_codes(d: DeviceWorld) -> None:
    begun = d.w.store.transactions_begun
    with pytest.raises(InvalidGrant):
        d.poll("tkd_dc_not-even-the-shape")
    assert d.w.store.transactions_begun == begun  # no storage work for a typo
    with pytest.raises(InvalidGrant):
        d.poll(new_device_code())


def test_a_browser_row_is_never_redeemable_at_the_token_endpoint(d: DeviceWorld) -> None:
    start = d.flow.start_browser(d.tv.client, ("openid",), request_hash=REQUEST_HASH, address=None)
    pending = d.flow.pending(start.user_code)
    assert pending is not None and pending.kind == "browser"
    d.flow.approve(pending.id, user_id="user-1", auth_time=1.0, address=None)
    with pytest.raises(InvalidGrant):
        d.poll(start.device_code)
    assert d.rows()[0].status == "approved"


# -- the waiting browser ------------------------------------------------------------------------


def test_browser_outcome_approved_once(d: DeviceWorld) -> None:
    start = d.flow.start_browser(d.tv.client, ("openid",), request_hash=REQUEST_HASH, address=None)
    assert d.flow.browser_outcome(start.device_code, REQUEST_HASH).status == "pending"
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    d.flow.approve(pending.id, user_id="user-1", auth_time=7.0, address=None)
    other_request = hashlib.sha256(b"another request").digest()
    assert d.flow.browser_outcome(start.device_code, other_request).status == "expired"
    outcome = d.flow.browser_outcome(start.device_code, REQUEST_HASH)
    assert (outcome.status, outcome.user_id, outcome.auth_time) == ("approved", "user-1", 7.0)
    assert d.flow.browser_outcome(start.device_code, REQUEST_HASH).status == "expired"


def test_browser_outcome_denied_expired_unknown(d: DeviceWorld) -> None:
    start = d.flow.start_browser(d.tv.client, ("openid",), request_hash=REQUEST_HASH, address=None)
    assert d.flow.browser_outcome(new_device_code(), REQUEST_HASH).status == "expired"
    assert d.flow.browser_outcome("garbage", REQUEST_HASH).status == "expired"
    pending = d.flow.pending(start.user_code)
    assert pending is not None
    d.flow.deny(pending.id, address=None)
    assert d.flow.browser_outcome(start.device_code, REQUEST_HASH).status == "denied"
    late = d.flow.start_browser(d.tv.client, ("openid",), request_hash=REQUEST_HASH, address=None)
    d.w.clock.advance(TTL)
    assert d.flow.browser_outcome(late.device_code, REQUEST_HASH).status == "expired"


def test_a_device_row_is_no_browser_outcome(d: DeviceWorld) -> None:
    code = approved(d)
    assert d.flow.browser_outcome(code, REQUEST_HASH).status == "expired"
    assert d.rows()[0].status == "approved"
