"""The in-memory reference store keeps the Transaction contract of tokend.core.ports, so the
domain tests built on it mean something."""

from __future__ import annotations

import inspect

import pytest

from tests.core.memory_store import MemoryStore, MemoryTransaction
from tokend.core import ports
from tokend.core.models import Family, SecurityEvent

FAMILY = Family("f1", "web", "u1", "alice", ("openid",), 0.0, 100.0)


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [(ports.Transaction, MemoryTransaction), (ports.Store, MemoryStore)],
    ids=["Transaction", "Store"],
)
def test_implements_the_protocol(protocol: type, implementation: type) -> None:
    for name, member in vars(protocol).items():
        if name.startswith("_") or not callable(member):
            continue
        ours = getattr(implementation, name)
        expected = list(inspect.signature(member).parameters.values())
        actual = list(inspect.signature(ours).parameters.values())
        assert [(p.name, p.kind) for p in actual] == [(p.name, p.kind) for p in expected], name


def test_commit_keeps_and_exception_rolls_back() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        tx.create_family(FAMILY)
        tx.insert_refresh_token(b"h1", family_id="f1", created_at=0.0, expires_at=10.0)
    committed = store.snapshot()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as tx:
        assert tx.spend_refresh_token(b"h1", at=1.0, successor_hash=b"h2")
        tx.insert_refresh_token(b"h2", family_id="f1", created_at=1.0, expires_at=11.0)
        tx.revoke_family("f1", at=1.0, reason="x")
        tx.record_event(SecurityEvent("x", 1.0))
        raise Boom
    assert store.snapshot() == committed
    assert store.rollbacks == 1
    assert store.transactions_begun == 2


def test_spend_is_compare_and_set() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        tx.create_family(FAMILY)
        tx.insert_refresh_token(b"h1", family_id="f1", created_at=0.0, expires_at=10.0)
        assert tx.is_refresh_token_live(b"h1") is True
        assert tx.spend_refresh_token(b"h1", at=1.0, successor_hash=b"h2")
        assert not tx.spend_refresh_token(b"h1", at=2.0, successor_hash=b"h3")
        assert not tx.spend_refresh_token(b"unknown", at=2.0, successor_hash=b"h3")
        assert tx.is_refresh_token_live(b"h1") is False
        assert tx.is_refresh_token_live(b"unknown") is False
        stored = tx.find_refresh_token(b"h1")
        assert stored is not None
        assert (stored.spent_at, stored.successor_hash) == (1.0, b"h2")


def test_find_joins_the_current_family_and_revoke_is_once() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        tx.create_family(FAMILY)
        tx.insert_refresh_token(b"h1", family_id="f1", created_at=0.0, expires_at=10.0)
        assert tx.revoke_family("f1", at=5.0, reason="r")
        assert not tx.revoke_family("f1", at=6.0, reason="r")
        assert not tx.revoke_family("nope", at=6.0, reason="r")
        stored = tx.find_refresh_token(b"h1")
        assert stored is not None and stored.family.revoked_at == 5.0
        assert tx.find_refresh_token(b"h2") is None


def test_constraints_and_closed_transaction() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        tx.create_family(FAMILY)
        with pytest.raises(ValueError):
            tx.create_family(FAMILY)
        tx.insert_refresh_token(b"h1", family_id="f1", created_at=0.0, expires_at=10.0)
        with pytest.raises(ValueError):
            tx.insert_refresh_token(b"h1", family_id="f1", created_at=0.0, expires_at=10.0)
        with pytest.raises(ValueError):
            tx.insert_refresh_token(b"h9", family_id="nope", created_at=0.0, expires_at=10.0)
    with pytest.raises(RuntimeError):
        tx.find_refresh_token(b"h1")
