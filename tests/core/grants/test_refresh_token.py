"""The refresh token grant (tokend.core.grants.refresh_token): RFC 6749 §6 with rotation and
reuse detection, DESIGN.md "Refresh token rules". Time only moves by FrozenClock.advance."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.core.memory_store import MemoryTransaction
from tests.core.world import (
    DAY,
    DERIVATION_KEY,
    FULL_SCOPE,
    Registered,
    World,
    expected_at_hash,
)
from tokend.core.errors import InvalidGrant, InvalidRequest, InvalidScope
from tokend.core.events import EventKind
from tokend.core.models import StoredRefreshToken, TokenResponse
from tokend.core.secrets import (
    derive_successor,
    hash_secret,
    is_well_formed,
    new_client_secret,
    new_refresh_token,
)

T0 = 1_800_000_000.0  # FrozenClock's start


def rt_of(response: TokenResponse) -> str:
    assert response.refresh_token is not None
    assert is_well_formed(response.refresh_token, "tkd_rt_")
    return response.refresh_token


@pytest.fixture
def rt0(world: World) -> str:
    """The first refresh token of a fresh family of client ``web`` (scope FULL_SCOPE)."""
    return rt_of(world.start())


def assert_revoked_for_reuse(world: World, token: str, client_id: str = "web") -> None:
    family = world.store.family_of(token)
    assert family.revoked_at == world.clock.now()
    assert world.store.state.revocation_reasons[family.id] == EventKind.REFRESH_TOKEN_REUSE
    (event,) = world.store.events(EventKind.REFRESH_TOKEN_REUSE)
    assert event.at == world.clock.now()
    assert event.family_id == family.id
    assert event.client_id == client_id
    assert event.user_id == family.user_id


def assert_not_revoked(world: World, token: str) -> None:
    assert world.store.family_of(token).revoked_at is None
    assert world.store.events(EventKind.REFRESH_TOKEN_REUSE) == []


# -- rotation -------------------------------------------------------------------------------


def test_rotation_returns_a_new_token_and_spends_the_old(world: World, rt0: str) -> None:
    response = world.refresh(rt0)
    rt1 = rt_of(response)
    assert rt1 != rt0
    old, new = world.store.token(rt0), world.store.token(rt1)
    assert old is not None and new is not None
    assert old.spent_at == T0
    assert old.successor_hash == hash_secret(rt1)
    assert new.spent_at is None
    assert new.family_id == old.family_id
    assert len(world.store.tokens_of_family(old.family_id)) == 2


def test_rotation_issues_an_access_token_of_the_family(world: World, rt0: str) -> None:
    world.clock.advance(600)
    response = world.refresh(rt0)
    family = world.store.family_of(rt0)
    claims = world.access_claims(response)
    assert claims["sub"] == "alice"
    assert claims["client_id"] == "web"
    assert claims["sid"] == family.id
    assert claims["scope"] == FULL_SCOPE
    assert claims["iat"] == int(T0 + 600)
    assert response.expires_in == world.policy.access_token_ttl
    assert claims["exp"] - claims["iat"] == world.policy.access_token_ttl
    assert response.scope == FULL_SCOPE


def test_the_successor_can_be_rotated_in_turn(world: World, rt0: str) -> None:
    tokens = [rt0]
    for _ in range(5):
        world.clock.advance(60)
        tokens.append(rt_of(world.refresh(tokens[-1])))
    assert len(set(tokens)) == 6
    assert [world.store.token(t).spent_at is None for t in tokens] == [False] * 5 + [True]


def test_only_hashes_are_stored(world: World, rt0: str) -> None:
    rt1 = rt_of(world.refresh(rt0))
    world.clock.advance(1)
    assert rt_of(world.refresh(rt0)) == rt1  # the grace retry recomputes, never reads, rt1
    dump = repr(world.store.state)
    for token in (rt0, rt1):
        assert token not in dump
        assert token[len("tkd_rt_") : -6] not in dump
        assert hash_secret(token) in world.store.state.tokens


def test_public_client_refreshes_without_a_secret(world: World) -> None:
    rt = rt_of(world.start(world.spa))
    response = world.refresh(rt, world.spa)
    assert world.access_claims(response)["client_id"] == "spa"
    assert rt_of(response) != rt


def test_missing_refresh_token_is_invalid_request(world: World) -> None:
    with pytest.raises(InvalidRequest) as exc:
        world.token(world.web, {"grant_type": "refresh_token"})
    assert exc.value.error == "invalid_request"
    assert world.store.transactions_begun == 0


# -- lifetimes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rotate_after", "expected_expiry"),
    [
        (0, T0 + 7 * DAY),
        (20 * DAY, T0 + 27 * DAY),
        (23 * DAY, T0 + 30 * DAY),
        (29 * DAY, T0 + 30 * DAY),
    ],
    ids=["idle-first", "idle-still-inside", "idle-reaches-family-expiry", "capped-by-family"],
)
def test_successor_expiry_is_min_of_idle_and_family_expiry(
    world: World, rotate_after: float, expected_expiry: float
) -> None:
    """Idle 7 days, family 30 days (tests/core/world.py); rotate daily to keep it alive."""
    rt = rt_of(world.start())
    while world.clock.now() < T0 + rotate_after:
        world.clock.advance(min(DAY, T0 + rotate_after - world.clock.now()))
        rt = rt_of(world.refresh(rt))
    row = world.store.token(rt)
    assert row is not None
    assert row.expires_at == expected_expiry


def test_absolute_family_expiry_is_never_extended(world: World, rt0: str) -> None:
    family_expiry = world.store.family_of(rt0).expires_at
    assert family_expiry == T0 + 30 * DAY
    rt = rt0
    for _ in range(29):
        world.clock.advance(DAY)
        rt = rt_of(world.refresh(rt))
        assert world.store.family_of(rt).expires_at == family_expiry
        assert world.store.token(rt).expires_at <= family_expiry
    world.clock.advance(DAY - 1)
    rt = rt_of(world.refresh(rt))  # one second before the family expires: still fine
    world.clock.advance(1)
    before = world.store.snapshot()
    with pytest.raises(InvalidGrant) as exc:
        world.refresh(rt)
    assert "expired" in exc.value.description
    assert world.store.snapshot() == before  # expiry is not reuse: nothing revoked or spent


def test_family_expiry_binds_even_a_token_row_that_outlives_it(world: World, rt0: str) -> None:
    """Defence in depth: a row written with a longer expiry (an older policy, a bug) still
    dies with its family."""
    family = world.store.family_of(rt0)
    rogue = new_refresh_token()
    with world.store.transaction() as tx:
        tx.insert_refresh_token(
            hash_secret(rogue),
            family_id=family.id,
            created_at=T0,
            expires_at=family.expires_at + 365 * DAY,
        )
    world.clock.advance(family.expires_at - T0)
    with pytest.raises(InvalidGrant):
        world.refresh(rogue)


@pytest.mark.parametrize(
    ("idle_elapsed", "usable"),
    [(0, True), (7 * DAY - 1, True), (7 * DAY, False), (7 * DAY + 1, False), (40 * DAY, False)],
    ids=["fresh", "last-second", "at-idle-expiry", "after-idle-expiry", "long-after"],
)
def test_idle_expiry(world: World, rt0: str, idle_elapsed: float, usable: bool) -> None:
    world.clock.advance(idle_elapsed)
    if usable:
        rt_of(world.refresh(rt0))
        return
    before = world.store.snapshot()
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    assert world.store.snapshot() == before


def test_rotation_restarts_the_idle_clock(world: World, rt0: str) -> None:
    world.clock.advance(7 * DAY - 1)
    rt1 = rt_of(world.refresh(rt0))
    world.clock.advance(7 * DAY - 1)
    rt2 = rt_of(world.refresh(rt1))
    world.clock.advance(7 * DAY)
    with pytest.raises(InvalidGrant):
        world.refresh(rt2)


def test_per_client_lifetimes_override_the_policy(world: World) -> None:
    reg = world.register("short", refresh_idle_ttl=100, refresh_token_ttl=250, access_token_ttl=30)
    rt = rt_of(world.start(reg))
    assert world.store.family_of(rt).expires_at == T0 + 250
    assert world.store.token(rt).expires_at == T0 + 100
    world.clock.advance(99)
    response = world.refresh(rt, reg)
    assert response.expires_in == 30
    rt = rt_of(response)
    assert world.store.token(rt).expires_at == T0 + 199
    world.clock.advance(99)
    rt = rt_of(world.refresh(rt, reg))
    assert world.store.token(rt).expires_at == T0 + 250  # capped by the family
    world.clock.advance(52)
    with pytest.raises(InvalidGrant):
        world.refresh(rt, reg)


# -- reuse detection and the grace window -----------------------------------------------------


def test_reuse_after_grace_revokes_the_family(world: World, rt0: str) -> None:
    rt1 = rt_of(world.refresh(rt0))
    world.clock.advance(world.policy.refresh_reuse_grace + 1)
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    assert_revoked_for_reuse(world, rt0)
    (event,) = world.store.events(EventKind.REFRESH_TOKEN_REUSE)
    assert event.detail["seconds_since_spent"] == world.policy.refresh_reuse_grace + 1
    # The successor, never used, is dead too, and presenting it records nothing more.
    with pytest.raises(InvalidGrant):
        world.refresh(rt1)
    assert world.store.token(rt1).spent_at is None
    assert len(world.store.events()) == 1


def test_reuse_revokes_only_that_family(world: World, rt0: str) -> None:
    sibling = rt_of(world.start())  # same user, same client, another authorization
    rt_of(world.refresh(rt0))
    world.clock.advance(3600)
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    assert world.store.family_of(sibling).revoked_at is None
    rt_of(world.refresh(sibling))


@pytest.mark.parametrize(
    ("delay", "retry"),
    [(0, True), (5, True), (10, True), (10.001, False), (60, False)],
    ids=["same-instant", "inside", "last-moment", "just-after", "long-after"],
)
def test_grace_window_boundary(world: World, rt0: str, delay: float, retry: bool) -> None:
    assert world.policy.refresh_reuse_grace == 10
    rt1 = rt_of(world.refresh(rt0))
    world.clock.advance(delay)
    if retry:
        assert world.refresh(rt0).refresh_token == rt1
        assert_not_revoked(world, rt0)
    else:
        with pytest.raises(InvalidGrant):
            world.refresh(rt0)
        assert_revoked_for_reuse(world, rt0)


def test_retry_inside_grace_returns_the_same_successor(world: World, rt0: str) -> None:
    first = world.refresh(rt0)
    rt1 = rt_of(first)
    world.clock.advance(3)
    retries = [world.refresh(rt0) for _ in range(3)]
    assert {r.refresh_token for r in retries} == {rt1}
    access_tokens = {first.access_token, *(r.access_token for r in retries)}
    assert len(access_tokens) == 4  # a new access token each time
    claims = world.access_claims(retries[0])
    assert claims["iat"] == int(T0 + 3)
    assert claims["scope"] == FULL_SCOPE
    family = world.store.family_of(rt0)
    assert len(world.store.tokens_of_family(family.id)) == 2  # still exactly one successor
    assert world.store.token(rt1).spent_at is None
    assert world.store.token(rt0).spent_at == T0  # the retry does not re-spend
    assert_not_revoked(world, rt0)
    # Each retry is recorded (issue 10 §5), and nothing else is.
    assert [e.kind for e in world.store.events()] == ["refresh_token_grace_retry"] * 3
    rt_of(world.refresh(rt1))  # and the successor works


def test_retry_after_the_successor_was_spent_revokes(world: World, rt0: str) -> None:
    rt1 = rt_of(world.refresh(rt0))
    world.clock.advance(1)
    rt2 = rt_of(world.refresh(rt1))
    world.clock.advance(1)  # rt0 is still inside its grace window
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    assert_revoked_for_reuse(world, rt0)
    with pytest.raises(InvalidGrant):
        world.refresh(rt2)


def test_retry_inside_grace_just_after_the_idle_expiry(world: World, rt0: str) -> None:
    """Rotated one second before its idle expiry, response lost, retried two seconds later:
    still the just-spent token inside the grace window, so the same successor comes back
    (idle expiry is about a token left unused; a spent token was used)."""
    world.clock.advance(7 * DAY - 1)
    rt1 = rt_of(world.refresh(rt0))
    world.clock.advance(2)
    assert world.store.token(rt0).expires_at < world.clock.now()
    assert world.refresh(rt0).refresh_token == rt1
    assert_not_revoked(world, rt0)


def test_reuse_past_the_spent_tokens_idle_expiry_still_revokes(world: World, rt0: str) -> None:
    """An attacker who rotated a stolen token first leaves the victim holding the spent one;
    the victim coming back after the idle expiry must still end the attacker's family."""
    stolen = rt_of(world.refresh(rt0))
    world.clock.advance(6 * DAY)
    stolen = rt_of(world.refresh(stolen))  # the attacker keeps the family alive
    world.clock.advance(2 * DAY)
    assert world.store.token(rt0).expires_at < world.clock.now()
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    assert_revoked_for_reuse(world, rt0)


def test_grace_zero_turns_retries_off(make_world: Callable[..., World]) -> None:
    world = make_world(refresh_reuse_grace=0)
    rt0 = rt_of(world.start())
    rt_of(world.refresh(rt0))
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)  # same instant: would be a retry with any grace > 0
    assert_revoked_for_reuse(world, rt0)


@pytest.mark.parametrize(
    ("policy_grace", "client_grace", "delay", "retry"),
    [
        (10, 0, 0, False),
        (0, 60, 30, True),
        (10, 60, 30, True),
        (10, 60, 61, False),
        (60, 5, 6, False),
        (60, None, 30, True),
    ],
    ids=[
        "client-turns-it-off",
        "client-turns-it-on",
        "client-longer",
        "client-longer-elapsed",
        "client-shorter",
        "no-override-uses-policy",
    ],
)
def test_per_client_grace_overrides_the_policy(
    make_world: Callable[..., World],
    policy_grace: int,
    client_grace: int | None,
    delay: float,
    retry: bool,
) -> None:
    world = make_world(refresh_reuse_grace=policy_grace)
    reg = world.register("graceful", refresh_grace=client_grace)
    rt0 = rt_of(world.start(reg))
    rt1 = rt_of(world.refresh(rt0, reg))
    world.clock.advance(delay)
    if retry:
        assert world.refresh(rt0, reg).refresh_token == rt1
        assert_not_revoked(world, rt0)
    else:
        with pytest.raises(InvalidGrant):
            world.refresh(rt0, reg)
        assert_revoked_for_reuse(world, rt0, client_id="graceful")


def test_concurrent_refreshes_converge_on_one_successor(world: World, rt0: str) -> None:
    results = run_concurrently(8, lambda: world.refresh(rt0))
    successors = {r.refresh_token for r in results if isinstance(r, TokenResponse)}
    assert len(successors) == 1
    assert all(isinstance(r, TokenResponse) for r in results)
    family = world.store.family_of(rt0)
    assert len(world.store.tokens_of_family(family.id)) == 2
    assert_not_revoked(world, rt0)


def test_concurrent_refreshes_without_grace_issue_one_successor(
    make_world: Callable[..., World],
) -> None:
    world = make_world(refresh_reuse_grace=0)
    rt0 = rt_of(world.start())
    results = run_concurrently(8, lambda: world.refresh(rt0))
    assert sum(isinstance(r, TokenResponse) for r in results) == 1
    assert sum(isinstance(r, InvalidGrant) for r in results) == 7
    family = world.store.family_of(rt0)
    assert len(world.store.tokens_of_family(family.id)) == 2
    assert_revoked_for_reuse(world, rt0)


def run_concurrently(n: int, call: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


class _StaleFirstRead:
    """A transaction whose first read is stale: right after it, another process rotates the
    same token and commits, so this one then loses the compare-and-set (the race the
    Transaction contract allows where reads do not lock)."""

    def __init__(self, tx: MemoryTransaction, world: World, presented: str) -> None:
        self._tx = tx
        self._world = world
        self._presented = presented
        self._raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        stored = self._tx.find_refresh_token(token_hash)
        if not self._raced and stored is not None:
            self._raced = True
            successor = hash_secret(derive_successor(DERIVATION_KEY, self._presented))
            now = self._world.clock.now()
            assert self._tx.spend_refresh_token(token_hash, at=now, successor_hash=successor)
            self._tx.insert_refresh_token(
                successor, family_id=stored.family.id, created_at=now, expires_at=now + 60
            )
        return stored


def test_losing_the_compare_and_set_race_returns_the_winners_successor(
    world: World, rt0: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_transaction = world.store.transaction

    @contextmanager
    def racing_transaction() -> Iterator[_StaleFirstRead]:
        with real_transaction() as tx:
            yield _StaleFirstRead(tx, world, rt0)

    monkeypatch.setattr(world.store, "transaction", racing_transaction)
    response = world.refresh(rt0)
    assert response.refresh_token == derive_successor(DERIVATION_KEY, rt0)
    family = world.store.family_of(rt0)
    assert len(world.store.tokens_of_family(family.id)) == 2  # the loser inserted nothing
    assert_not_revoked(world, rt0)


# -- scope ----------------------------------------------------------------------------------


def test_narrowing_narrows_the_access_token_but_not_the_family(world: World, rt0: str) -> None:
    narrowed = world.refresh(rt0, scope="email")
    assert narrowed.scope == "email"
    assert world.access_claims(narrowed)["scope"] == "email"
    assert narrowed.id_token is None
    rt1 = rt_of(narrowed)  # a refresh token still, though "offline" was not asked again
    assert world.store.family_of(rt1).scopes == tuple(FULL_SCOPE.split())

    world.clock.advance(60)
    full = world.refresh(rt1, scope=FULL_SCOPE)
    assert full.scope == FULL_SCOPE
    assert world.access_claims(full)["scope"] == FULL_SCOPE
    world.clock.advance(60)
    assert world.refresh(rt_of(full)).scope == FULL_SCOPE  # no scope: the family's


def test_narrowing_applies_to_a_grace_retry(world: World, rt0: str) -> None:
    rt1 = rt_of(world.refresh(rt0))
    retry = world.refresh(rt0, scope="profile")
    assert retry.refresh_token == rt1
    assert world.access_claims(retry)["scope"] == "profile"


@pytest.mark.parametrize(
    "scope",
    ["admin", "openid admin", "offline_access", "Email"],
    ids=["new-scope", "subset-plus-new", "ungranted-alias", "case-differs"],
)
def test_widening_is_invalid_scope_and_changes_nothing(world: World, rt0: str, scope: str) -> None:
    before = world.store.snapshot()
    with pytest.raises(InvalidScope) as exc:
        world.refresh(rt0, scope=scope)
    assert exc.value.error == "invalid_scope"
    assert world.store.snapshot() == before
    assert world.store.token(rt0).spent_at is None
    rt_of(world.refresh(rt0))  # still usable


def test_widening_on_a_grace_retry_changes_nothing(world: World, rt0: str) -> None:
    rt1 = rt_of(world.refresh(rt0))
    before = world.store.snapshot()
    with pytest.raises(InvalidScope):
        world.refresh(rt0, scope="admin")
    assert world.store.snapshot() == before  # in particular: not treated as reuse
    assert world.refresh(rt0).refresh_token == rt1


def test_malformed_scope_is_invalid_scope_before_any_storage(world: World, rt0: str) -> None:
    begun = world.store.transactions_begun
    with pytest.raises(InvalidScope):
        world.refresh(rt0, scope='"email"')
    assert world.store.transactions_begun == begun


# -- whose token ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "presenter"),
    [("web", "other"), ("web", "spa"), ("spa", "web")],
    ids=["confidential-by-confidential", "confidential-by-public", "public-by-confidential"],
)
def test_token_of_another_client_is_invalid_grant(world: World, owner: str, presenter: str) -> None:
    owner_reg: Registered = getattr(world, owner)
    presenter_reg: Registered = getattr(world, presenter)
    rt = rt_of(world.start(owner_reg))
    before = world.store.snapshot()
    with pytest.raises(InvalidGrant):
        world.refresh(rt, presenter_reg)
    family = world.store.family_of(rt)
    (event,) = world.store.events()
    assert event.kind == EventKind.REFRESH_TOKEN_WRONG_CLIENT
    assert event.client_id == presenter
    assert event.family_id == family.id
    assert event.user_id == family.user_id
    assert event.detail["owner_client_id"] == owner
    after = world.store.snapshot()
    after.events.clear()
    after.event_windows.clear()
    after.event_counts.clear()
    assert after == before  # only the event: nothing spent, nothing revoked
    rt_of(world.refresh(rt, owner_reg))  # still usable by its owner


def test_wrong_client_attempts_are_one_row_per_window_with_a_count(world: World) -> None:
    """Issue 10 §7: anyone holding a token can try it under a public client's id; a flood of
    such attempts must not grow the audit trail."""
    rt = rt_of(world.start(world.web))
    for _ in range(50):
        with pytest.raises(InvalidGrant):
            world.refresh(rt, world.spa)
    [event] = world.store.events(EventKind.REFRESH_TOKEN_WRONG_CLIENT)
    assert world.store.state.event_counts[world.store.state.events.index(event)] == 50
    world.clock.advance(world.policy.event_aggregation_window)
    with pytest.raises(InvalidGrant):
        world.refresh(rt, world.spa)
    assert (
        len(world.store.events(EventKind.REFRESH_TOKEN_WRONG_CLIENT)) == 2
    )  # a new window, a new row


# -- tokens that are not (or no longer) good ------------------------------------------------

BAD_TOKENS: list[tuple[str, Callable[[str], str], bool]] = [
    # (id, from a live token to the presented value, well-formed?)
    ("garbage", lambda rt: "garbage", False),
    ("client-secret", lambda rt: new_client_secret(), False),
    ("truncated", lambda rt: rt[:-1], False),
    ("extra-char", lambda rt: rt + "A", False),
    ("flipped-body-char", lambda rt: rt[:20] + ("A" if rt[20] != "A" else "B") + rt[21:], False),
    ("flipped-checksum-char", lambda rt: rt[:-1] + ("A" if rt[-1] != "A" else "B"), False),
    ("uppercased", lambda rt: rt.upper(), False),
    ("never-issued", lambda rt: new_refresh_token(), True),
    ("successor-under-another-key", lambda rt: derive_successor(b"other key", rt), True),
]


@pytest.mark.parametrize(
    ("make_bad", "well_formed"),
    [(f, w) for _, f, w in BAD_TOKENS],
    ids=[i for i, _, _ in BAD_TOKENS],
)
def test_malformed_or_unknown_token_is_invalid_grant_and_touches_nothing(
    world: World, rt0: str, make_bad: Callable[[str], str], well_formed: bool
) -> None:
    bad = make_bad(rt0)
    assert bad != rt0
    assert is_well_formed(bad, "tkd_rt_") is well_formed
    before = world.store.snapshot()
    begun = world.store.transactions_begun
    with pytest.raises(InvalidGrant) as exc:
        world.refresh(bad)
    assert exc.value.error == "invalid_grant"
    assert bad not in exc.value.description
    assert world.store.snapshot() == before
    if not well_formed:
        assert world.store.transactions_begun == begun  # rejected without storage work
    rt_of(world.refresh(rt0))


def test_token_of_a_revoked_family_is_invalid_grant(world: World, rt0: str) -> None:
    family = world.store.family_of(rt0)
    assert world.store.revoke(family.id, at=world.clock.now())
    world.clock.advance(1)
    before = world.store.snapshot()
    with pytest.raises(InvalidGrant) as exc:
        world.refresh(rt0)
    assert "revoked" in exc.value.description
    assert world.store.snapshot() == before  # not spent, no event: revocation is not reuse


def test_spent_token_of_a_revoked_family_records_no_second_event(world: World, rt0: str) -> None:
    rt_of(world.refresh(rt0))
    world.clock.advance(60)
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    before = world.store.snapshot()
    with pytest.raises(InvalidGrant):
        world.refresh(rt0)
    assert world.store.snapshot() == before


# -- id_token (OIDC Core §12.2) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("family_scope", "requested", "has_id_token"),
    [
        (FULL_SCOPE, None, True),
        (FULL_SCOPE, "openid", True),
        (FULL_SCOPE, "openid email", True),
        (FULL_SCOPE, "email profile", False),
        ("offline email", None, False),
        ("offline_access email", "email", False),
    ],
    ids=[
        "family-openid",
        "narrowed-to-openid",
        "narrowed-keeps-openid",
        "narrowed-drops-openid",
        "family-without-openid",
        "family-without-openid-narrowed",
    ],
)
def test_id_token_iff_the_narrowed_scope_has_openid(
    world: World, family_scope: str, requested: str | None, has_id_token: bool
) -> None:
    rt = rt_of(world.start(scope=family_scope))
    response = world.refresh(rt, scope=requested)
    assert (response.id_token is not None) is has_id_token


def test_id_token_on_refresh_claims(world: World) -> None:
    rt = rt_of(world.start(auth_time=T0 - 300, nonce="nonce-from-authorize"))
    world.clock.advance(2 * 3600)
    response = world.refresh(rt)
    claims = world.id_claims(response, "web")  # verifies signature, iss and aud
    assert claims["aud"] == "web"
    assert claims["sub"] == "alice"
    assert claims["auth_time"] == int(T0 - 300)  # the original authentication, not now
    assert claims["iat"] == int(T0 + 2 * 3600)
    assert "nonce" not in claims  # OIDC Core §12.2: SHOULD NOT be present on refresh
    assert claims["sid"] == world.store.family_of(rt).id
    assert claims["at_hash"] == expected_at_hash(response.access_token)
