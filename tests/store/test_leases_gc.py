"""Leases (store/leases.py) and gc in batches (store/maintenance.py, web/sweep.py): two
processes' stores on one database never both hold a lease; an expired one is taken over; a
holder renews; the sweep deletes in bounded batches and leaves live data alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.conftest import SECRET_KEY
from tests.store.test_sql import count, new_family
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.models import User
from tokend.runtime import Runtime, build_runtime, collect_garbage
from tokend.store import SqlStore
from tokend.store.engine import create_db_engine
from tokend.store.schema import leases, refresh_tokens, token_families
from tokend.web.sweep import LEASE, GcSweep

DAY = 86400.0


@pytest.fixture
def stores(db_url: str) -> Iterator[list[SqlStore]]:
    """Eight stores on the one database, each with its own engine: as many processes."""
    made = [SqlStore(create_db_engine(db_url)) for _ in range(8)]
    yield made
    for s in made:
        s.close()


def holder_of(store: SqlStore, name: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(select(leases.c.holder).where(leases.c.name == name)).scalar()


# -- leases ----------------------------------------------------------------------------------


def race(stores: list[SqlStore], name: str, now: float) -> list[bool]:
    """Every store tries to take lease ``name`` at once, each from its own thread."""
    barrier = threading.Barrier(len(stores))
    won = [False] * len(stores)

    def take(i: int) -> None:
        barrier.wait()
        won[i] = stores[i].take_lease(name, f"holder-{i}", now=now, ttl=30)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_racing_stores_exactly_one_holds_the_lease(stores: list[SqlStore], rt: Runtime) -> None:
    now = rt.clock.now()
    for rnd in range(5):
        name = f"race{rnd}"
        if rnd % 2:  # also the race to take over an expired lease, not only the first insert
            assert stores[0].take_lease(name, "old-holder", now=now - 100, ttl=10)
        won = race(stores, name, now)
        assert won.count(True) == 1, won
        assert holder_of(stores[0], name) == f"holder-{won.index(True)}"


def test_lease_is_renewed_by_its_holder_taken_over_once_expired_and_released(
    stores: list[SqlStore], rt: Runtime
) -> None:
    a, b = stores[:2]
    t = rt.clock.now()
    assert a.take_lease("gc", "a", now=t, ttl=30)
    assert not b.take_lease("gc", "b", now=t + 29, ttl=30)  # a's, until t + 30
    assert a.take_lease("gc", "a", now=t + 29, ttl=30)  # renewed: now until t + 59
    assert not b.take_lease("gc", "b", now=t + 58, ttl=30)
    assert b.take_lease("gc", "b", now=t + 60, ttl=30)  # a stopped renewing: b takes over
    assert not a.take_lease("gc", "a", now=t + 61, ttl=30)
    assert holder_of(a, "gc") == "b"
    assert not a.release_lease("gc", "a")  # not a's to release
    assert b.release_lease("gc", "b")
    assert a.take_lease("gc", "a", now=t + 62, ttl=30)  # released: taken at once
    with pytest.raises(ValueError):
        a.take_lease("gc", "a", now=t, ttl=0)
    with pytest.raises(ValueError):
        a.take_lease("gc", "x" * 65, now=t, ttl=1)


# -- gc in batches ---------------------------------------------------------------------------


def deletes(store: SqlStore) -> Iterator[list[tuple[str, int]]]:
    """(statement, rows) of every DELETE the store's engine runs."""
    seen: list[tuple[str, int]] = []

    def after(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE"):
            seen.append((statement, cursor.rowcount))

    event.listen(store.engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(store.engine, "after_cursor_execute", after)


@pytest.fixture
def seen(rt: Runtime) -> Iterator[list[tuple[str, int]]]:
    yield from deletes(rt.store)  # type: ignore[arg-type]


def test_gc_deletes_in_bounded_batches_and_keeps_live_data(
    rt: Runtime, make_client, user: User, clock: FrozenClock, seen: list[tuple[str, int]]
) -> None:
    reg = make_client()
    t0 = clock.now()
    for _ in range(7):
        new_family(rt, reg.client_id, user.id, expires_at=t0 + 10, tokens=2)
    revoked = [new_family(rt, reg.client_id, user.id)[0] for _ in range(5)]
    for f in revoked:
        rt.store.revoke_families(now=t0, reason="x", family_id=f.id)
    live = [new_family(rt, reg.client_id, user.id)[0] for _ in range(4)]
    # Expired tokens of a live family (not indexed: walked in key windows).
    stale = new_family(rt, reg.client_id, user.id, tokens=5, token_expires_at=t0 + 10)[0]
    clock.advance(2 * DAY)

    out = rt.store.gc(now=clock.now(), retention=DAY, batch=2)
    assert out["families"] == 12 and out["refresh_tokens"] == 5
    assert {f.id for f in [*live, stale]} == {row[0] for row in _all(rt, token_families.c.id)}
    assert count(rt, refresh_tokens) == 4  # one per live family, none of stale's
    families = [n for sql, n in seen if "token_families" in sql.split("WHERE")[0]]
    tokens = [n for sql, n in seen if "refresh_tokens" in sql.split("WHERE")[0]]
    assert max(families + tokens) <= 2  # no statement deleted more than a batch
    assert sum(families) == 12 and len(families) >= 6  # 12 families took several batches
    assert sum(tokens) == 5 and len(tokens) >= 3
    # The same counts as one big batch would give (what `tokend gc` printed before).
    assert rt.store.gc(now=clock.now(), retention=DAY, batch=2) == dict.fromkeys(out, 0)


def _all(rt: Runtime, col: Any) -> list[Any]:
    with rt.store.engine.connect() as conn:
        return list(conn.execute(select(col)).all())


def test_gc_stops_when_told_to(rt: Runtime, make_client, user: User, clock: FrozenClock) -> None:
    reg = make_client()
    for _ in range(6):
        new_family(rt, reg.client_id, user.id, expires_at=clock.now() + 10)
    clock.advance(2 * DAY)
    calls: list[int] = []

    def keep_going() -> bool:
        calls.append(1)
        return len(calls) < 2

    out = rt.store.gc(now=clock.now(), retention=DAY, batch=2, keep_going=keep_going)
    assert out["families"] == 4 and count(rt, token_families) == 2


# -- the sweep: one process of many at a time -----------------------------------------------


@pytest.fixture
def rt2(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    """A second process's runtime on the same database (and clock)."""
    other = build_runtime(Settings(database_url=settings.database_url, secret_key=SECRET_KEY),
                          clock=clock)  # fmt: skip
    yield other
    other.close()


def test_one_sweep_at_a_time_and_a_dead_holder_is_replaced(
    rt: Runtime, rt2: Runtime, make_client, user: User, clock: FrozenClock, caplog
) -> None:
    reg = make_client()
    doomed = new_family(rt, reg.client_id, user.id, expires_at=clock.now() + 10)[0]
    clock.advance(2 * DAY)
    first, second = GcSweep(rt, 60, batch=2), GcSweep(rt2, 60, batch=2)
    assert first.holder != second.holder
    with caplog.at_level("INFO", logger="tokend.gc"):
        out = first.run_once()
    assert out is not None and out["families"] == 1
    assert rt.store.peek_family(doomed.id) is None
    assert any(r.getMessage().startswith("gc sweep: families=1 ") for r in caplog.records)
    assert second.run_once() is None  # first holds the lease (180 s)
    clock.advance(120)
    assert first.run_once() is not None  # renews it
    clock.advance(179)
    assert second.run_once() is None
    clock.advance(2)  # first stopped renewing 181 s ago: second takes over
    assert second.run_once() is not None
    assert first.run_once() is None
    second.release()  # on shutdown: first takes over at once
    assert first.run_once() is not None


def test_collect_garbage_is_what_tokend_gc_prints(rt: Runtime) -> None:
    assert set(collect_garbage(rt)) == {
        "families", "refresh_tokens", "authorization_codes", "device_authorizations",
        "browser_sessions", "security_events", "revoked_access_tokens", "dpop_proofs",
        "abuse_counters", "signing_keys",
    }  # fmt: skip


def test_sweep_runs_in_the_server_on_one_worker(db_url: str, clock: FrozenClock) -> None:
    """`tokend serve --workers 2` with TOKEND_GC_INTERVAL: the lifespan's sweep deletes
    old families and leaves the live ones; one holder at a time."""
    from tests.support.family import register_client, register_user
    from tests.support.server import running_server

    setup = build_runtime(Settings(database_url=db_url, secret_key=SECRET_KEY), prepare=True)
    try:
        reg = register_client(setup)
        user = register_user(setup)
        now = time.time()
        old = [new_family(setup, reg.client_id, user.id, expires_at=now - 2 * DAY)[0]
               for _ in range(3)]  # fmt: skip
        live = new_family(setup, reg.client_id, user.id)[0]
        env = {"TOKEND_SECRET_KEY": SECRET_KEY, "TOKEND_GC_INTERVAL": "0.2"}
        with running_server(db_url, workers=2, env=env):
            deadline = time.monotonic() + 20
            while any(setup.store.peek_family(f.id) for f in old):
                assert time.monotonic() < deadline, "the sweep never ran"
                time.sleep(0.1)
            assert setup.store.peek_family(live.id) is not None
            holder = holder_of(setup.store, LEASE)  # type: ignore[arg-type]
            assert holder is not None
        # Shut down: the holder gave the lease up.
        assert holder_of(setup.store, LEASE) is None  # type: ignore[arg-type]
    finally:
        setup.close()
