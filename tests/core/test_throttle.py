"""The abuse-limit rule (``tokend.core.throttle``) on an in-memory counter store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from tests.core.memory_store import MemoryStore
from tokend.core.clock import FrozenClock
from tokend.core.errors import TooManyAttempts
from tokend.core.events import EventKind
from tokend.core.throttle import Attempt, Counter, Limit, Throttle, ThrottlePolicy, network_of

WINDOW = 900.0


class MemoryCounters(MemoryStore):
    """``CounterStore``: the rule of ``add_failure`` as the SQL upsert implements it."""

    def __init__(self) -> None:
        super().__init__()
        self.counters: dict[bytes, Counter] = {}
        self.reads = 0
        self.writes = 0

    def read_counters(self, digests: Sequence[bytes]) -> dict[bytes, Counter]:
        self.reads += 1
        return {d: self.counters[d] for d in digests if d in self.counters}

    def add_failure(self, windows: Mapping[bytes, float], *, now: float) -> dict[bytes, Counter]:
        self.writes += 1
        for d, window in windows.items():
            c = self.counters.get(d)
            if c is None or c.window_end <= now:
                self.counters[d] = Counter(1, now + window)
            else:
                self.counters[d] = Counter(c.hits + 1, c.window_end)
        return {d: self.counters[d] for d in windows}


def policy(client: int = 3, client_address: int = 10, login: int = 3, login_address: int = 10):
    return ThrottlePolicy(
        client=Limit("client", client, WINDOW),
        client_address=Limit("client_address", client_address, WINDOW),
        login=Limit("login", login, WINDOW),
        login_address=Limit("login_address", login_address, WINDOW),
    )


@pytest.fixture
def store() -> MemoryCounters:
    return MemoryCounters()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def throttle(store: MemoryCounters, clock: FrozenClock) -> Throttle:
    return Throttle(store=store, policy=policy(), clock=clock)


def fail(throttle: Throttle, keys, attempt: Attempt, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        throttle.check(keys)
        throttle.failed(keys, attempt)


def test_network_of_groups_an_ipv6_subscriber_and_unmaps_ipv4() -> None:
    assert network_of("2001:db8:1:2:aaaa::1") == network_of("2001:db8:1:2:ffff::9")
    assert network_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
    assert network_of("::ffff:192.0.2.7") == "192.0.2.7" == network_of("192.0.2.7")
    assert network_of("192.0.2.7") != network_of("192.0.2.8")
    assert network_of("testclient") == "testclient"


def test_no_limit_keys_on_the_client_or_the_account_alone() -> None:
    p = policy()
    here, there = p.client_keys("web", "192.0.2.1"), p.client_keys("web", "192.0.2.2")
    assert {k.digest for k in here}.isdisjoint(k.digest for k in there)
    here, there = p.login_keys("alice", "192.0.2.1"), p.login_keys("alice", "192.0.2.2")
    assert {k.digest for k in here}.isdisjoint(k.digest for k in there)
    # The per-address counter is shared by every client (and every username) of an address,
    # and sign-ins and client authentications count apart.
    assert p.client_keys("web", "192.0.2.1")[1] == p.client_keys("other", "192.0.2.1")[1]
    assert p.login_keys("alice", "192.0.2.1")[1] == p.login_keys("bob", "192.0.2.1")[1]
    assert p.client_keys("alice", "192.0.2.1")[0] != p.login_keys("alice", "192.0.2.1")[0]


def test_past_the_limit_the_attempt_is_refused_before_judging(throttle, store, clock) -> None:
    keys = throttle.policy.client_keys("web", "192.0.2.1")
    fail(throttle, keys, Attempt("192.0.2.1", client_id="web"), 3)
    clock.advance(100)
    with pytest.raises(TooManyAttempts) as exc:
        throttle.check(keys)
    assert exc.value.status_code == 429 and exc.value.error == "temporarily_unavailable"
    assert exc.value.retry_after == int(WINDOW - 100)
    # Another client from the same address, and the same client from elsewhere, go on.
    throttle.check(throttle.policy.client_keys("other", "192.0.2.1"))
    throttle.check(throttle.policy.client_keys("web", "192.0.2.2"))


def test_the_per_address_limit_spans_clients(throttle) -> None:
    for i in range(10):
        keys = throttle.policy.client_keys(f"c{i}", "192.0.2.1")
        fail(throttle, keys, Attempt("192.0.2.1"), 1)
    with pytest.raises(TooManyAttempts):
        throttle.check(throttle.policy.client_keys("fresh", "192.0.2.1"))
    throttle.check(throttle.policy.client_keys("fresh", "192.0.2.9"))


def test_window_expiry_lets_the_source_back_in(throttle, clock) -> None:
    keys = throttle.policy.login_keys("alice", "192.0.2.1")
    fail(throttle, keys, Attempt("192.0.2.1", username="alice"), 3)
    clock.advance(WINDOW - 1)
    with pytest.raises(TooManyAttempts) as exc:
        throttle.check(keys)
    assert exc.value.retry_after == 1
    clock.advance(1)
    throttle.check(keys)
    fail(throttle, keys, Attempt("192.0.2.1", username="alice"), 2)  # a fresh window
    throttle.check(keys)


def test_one_event_per_decision_never_per_refusal(throttle, store, clock) -> None:
    keys = throttle.policy.login_keys("alice", "192.0.2.1")
    fail(throttle, keys, Attempt("192.0.2.1", username="alice"), 3)
    writes = store.writes
    for _ in range(20):
        with pytest.raises(TooManyAttempts):
            throttle.check(keys)
    assert store.writes == writes  # refusals are not counted: no write
    [event] = store.events(EventKind.THROTTLED)
    assert event.detail["limit"] == "login" and event.address == "192.0.2.1"
    assert event.detail["username"] == "alice" and event.detail["failures"] == 3
    assert event.at == clock.now()


def test_uncounted_failures_refused_when_full(throttle, store) -> None:
    """A request with no secret to judge (public client) is not checked up front; when it
    fails with the counter full, it is refused uncounted."""
    keys = throttle.policy.client_keys("pub", "192.0.2.1")
    for _ in range(3):
        throttle.failed(keys, Attempt("192.0.2.1"), checked=False)
    writes = store.writes
    with pytest.raises(TooManyAttempts):
        throttle.failed(keys, Attempt("192.0.2.1"), checked=False)
    assert store.writes == writes


def test_a_limit_of_zero_is_off(store, clock) -> None:
    t = Throttle(store=store, policy=policy(client=0, client_address=0), clock=clock)
    keys = t.policy.client_keys("web", "192.0.2.1")
    assert keys == ()
    fail(t, keys, Attempt("192.0.2.1"), 50)
    assert store.reads == store.writes == 0


# -- the hot path: what a process knows, without I/O --------------------------------------------


def test_check_known_costs_no_read_and_learns_from_its_own_failures(
    store: MemoryCounters, clock: FrozenClock
) -> None:
    """The token endpoint's success path makes no statement: ``check_known`` reads nothing;
    the process learns a full window from the counters its failures get back."""
    a = Throttle(store=store, policy=policy(), clock=clock)
    keys = a.policy.client_keys("web", "192.0.2.1")
    for _ in range(10):
        a.check_known(keys)  # nothing known: no refusal, and no read
    assert store.reads == 0
    for _ in range(3):
        a.check_known(keys)
        a.failed(keys, Attempt("192.0.2.1", client_id="web"))
    with pytest.raises(TooManyAttempts) as exc:
        a.check_known(keys)  # learned from the third failure's counter
    assert exc.value.retry_after == int(WINDOW)
    assert store.reads == 0
    a.check_known(a.policy.client_keys("web", "192.0.2.2"))  # elsewhere: not refused
    clock.advance(WINDOW)
    a.check_known(keys)  # the window ended: forgotten


def test_a_process_that_has_not_learned_refuses_the_wrong_guess_past_the_limit(
    store: MemoryCounters, clock: FrozenClock
) -> None:
    """Two processes on one counter store: the limit filled on one, the other's next wrong
    guess is counted past it and refused (never a 401 past the limit), and from then on the
    other refuses before judging too."""
    a = Throttle(store=store, policy=policy(), clock=clock)
    b = Throttle(store=store, policy=policy(), clock=clock)
    keys = a.policy.client_keys("web", "192.0.2.1")
    for _ in range(3):
        a.failed(keys, Attempt("192.0.2.1", client_id="web"))
    b.check_known(keys)  # b does not know yet: it would judge the credential
    with pytest.raises(TooManyAttempts):
        b.failed(keys, Attempt("192.0.2.1", client_id="web"))
    with pytest.raises(TooManyAttempts):
        b.check_known(keys)
    assert len(store.events(EventKind.THROTTLED)) == 1  # one decision, one event


def test_what_a_process_knows_is_bounded(store: MemoryCounters, clock: FrozenClock) -> None:
    t = Throttle(store=store, policy=policy(client=1, client_address=0), clock=clock, max_known=8)
    for i in range(50):
        t.failed(t.policy.client_keys(f"c{i}", "192.0.2.1"), Attempt("192.0.2.1"))
    assert len(t._known) <= 8
    with pytest.raises(TooManyAttempts):  # the newest are kept
        t.check_known(t.policy.client_keys("c49", "192.0.2.1"))


def test_user_code_entry_counts_per_address_only() -> None:
    """RFC 8628 §5.1: wrong user codes are limited per address (an IPv6 /64 as one), never
    per code or account, and apart from the sign-in counters of the same address."""
    p = ThrottlePolicy(
        client=Limit("client", 3, WINDOW),
        client_address=Limit("client_address", 10, WINDOW),
        login=Limit("login", 3, WINDOW),
        login_address=Limit("login_address", 10, WINDOW),
        user_code=Limit("user_code_address", 5, WINDOW),
    )
    (key,) = p.user_code_keys("2001:db8:1:2::1")
    assert key.limit.name == "user_code_address" and key.limit.max_failures == 5
    assert p.user_code_keys("2001:db8:1:2:ffff::9") == (key,)
    assert p.user_code_keys("2001:db8:1:3::1") != (key,)
    assert key.digest not in {k.digest for k in p.login_keys("", "2001:db8:1:2::1")}
    assert key.digest not in {k.digest for k in p.device_start_keys("2001:db8:1:2::1")}
    off = ThrottlePolicy(p.client, p.client_address, p.login, p.login_address,
                         user_code=Limit("user_code_address", 0, WINDOW))  # fmt: skip
    assert off.user_code_keys("192.0.2.7") == ()


def test_user_code_guesses_are_refused_once_the_window_is_full(
    store: MemoryCounters, clock: FrozenClock
) -> None:
    base = policy()
    p = ThrottlePolicy(base.client, base.client_address, base.login, base.login_address,
                       user_code=Limit("user_code_address", 3, WINDOW))  # fmt: skip
    throttle = Throttle(store=store, policy=p, clock=clock)
    keys = p.user_code_keys("192.0.2.7")
    fail(throttle, keys, Attempt("192.0.2.7"), 3)
    with pytest.raises(TooManyAttempts):
        throttle.check(keys)
    throttle.check(p.user_code_keys("192.0.2.8"))  # another address is not affected
    clock.advance(WINDOW)
    throttle.check(keys)
