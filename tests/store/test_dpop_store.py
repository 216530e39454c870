"""The DPoP parts of ``tokend.store`` (RFC 9449), on SQLite and PostgreSQL: the replay
cache shared by every process (``dpop_proofs``), a family's key binding (``dpop_jkt``) and its
compare-and-set, and their garbage collection."""

from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import func, select

from tokend.core.clock import FrozenClock
from tokend.core.models import Family, User
from tokend.core.secrets import hash_secret, new_id, new_refresh_token
from tokend.runtime import Runtime
from tokend.store.schema import dpop_proofs

JKT_A = "A" * 43
JKT_B = "B" * 43


def count_proofs(rt: Runtime) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(dpop_proofs)).scalar_one()


def family(rt: Runtime, client_id: str, user_id: str, jkt: str | None = None) -> tuple[Family, str]:
    now = rt.clock.now()
    fam = Family(new_id(), client_id, user_id, "s", ("offline",), now, now + 1000, dpop_jkt=jkt)
    token = new_refresh_token()
    with rt.store.transaction() as tx:
        tx.create_family(fam)
        tx.insert_refresh_token(
            hash_secret(token), family_id=fam.id, created_at=now, expires_at=now + 100
        )
    return fam, token


def test_a_proof_is_recorded_once(rt: Runtime) -> None:
    h = os.urandom(32)
    with rt.store.transaction() as tx:
        assert tx.record_dpop_proof(h, expires_at=rt.clock.now() + 120) is True
    with rt.store.transaction() as tx:
        assert tx.record_dpop_proof(h, expires_at=rt.clock.now() + 120) is False
    assert rt.store.record_dpop_proof(h, expires_at=rt.clock.now() + 120) is False
    assert rt.store.record_dpop_proof(os.urandom(32), expires_at=rt.clock.now() + 120) is True
    assert count_proofs(rt) == 2


def test_a_rolled_back_record_is_forgotten(rt: Runtime) -> None:
    h = os.urandom(32)
    with pytest.raises(RuntimeError), rt.store.transaction() as tx:
        assert tx.record_dpop_proof(h, expires_at=rt.clock.now() + 120)
        raise RuntimeError("the grant failed")
    assert rt.store.record_dpop_proof(h, expires_at=rt.clock.now() + 120) is True


def test_a_duplicate_leaves_the_transaction_usable(rt: Runtime, make_client, user: User) -> None:
    """ON CONFLICT DO NOTHING, not an error: PostgreSQL would abort the transaction."""
    h = os.urandom(32)
    assert rt.store.record_dpop_proof(h, expires_at=rt.clock.now() + 120)
    reg = make_client()
    _, token = family(rt, reg.client_id, user.id)
    with rt.store.transaction() as tx:
        assert tx.record_dpop_proof(h, expires_at=rt.clock.now() + 120) is False
        assert tx.find_refresh_token(hash_secret(token)) is not None


def test_concurrent_records_of_one_proof_exactly_one_wins(rt: Runtime) -> None:
    h = os.urandom(32)
    n = 8
    barrier = threading.Barrier(n)
    results: list[bool] = []
    lock = threading.Lock()

    def record() -> None:
        barrier.wait()
        ok = rt.store.record_dpop_proof(h, expires_at=rt.clock.now() + 120)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=record) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * (n - 1) + [True]


def test_family_binding_is_read_back_and_compare_and_set(
    rt: Runtime, make_client, user: User
) -> None:
    reg = make_client()
    bound, bound_token = family(rt, reg.client_id, user.id, JKT_A)
    free, free_token = family(rt, reg.client_id, user.id)
    with rt.store.transaction() as tx:
        found = tx.find_refresh_token(hash_secret(bound_token))
        assert found is not None and found.family.dpop_jkt == JKT_A
        found = tx.find_refresh_token(hash_secret(free_token))
        assert found is not None and found.family.dpop_jkt is None
    with rt.store.transaction() as tx:
        assert tx.bind_family_dpop(bound.id, JKT_B) is False  # bound to another key
        assert tx.bind_family_dpop(bound.id, JKT_A) is True  # already bound to this one
        assert tx.bind_family_dpop(free.id, JKT_B) is True
        assert tx.bind_family_dpop(free.id, JKT_A) is False
        assert tx.bind_family_dpop("no-such-family", JKT_A) is False
    with rt.store.transaction() as tx:
        found = tx.find_refresh_token(hash_secret(free_token))
        assert found is not None and found.family.dpop_jkt == JKT_B


def test_gc_deletes_proofs_past_their_window(rt: Runtime, clock: FrozenClock) -> None:
    now = clock.now()
    rt.store.record_dpop_proof(b"o" * 32, expires_at=now + 10)
    rt.store.record_dpop_proof(b"n" * 32, expires_at=now + 1000)
    assert rt.store.gc(now=now, retention=0)["dpop_proofs"] == 0
    assert rt.store.gc(now=now + 11, retention=0)["dpop_proofs"] == 1
    assert count_proofs(rt) == 1
    # The deleted proof would be refused by its iat anyway; the live one is still a replay.
    assert rt.store.record_dpop_proof(b"n" * 32, expires_at=now + 1000) is False
