"""The store's side of revocation and introspection (``tokend.store``), on SQLite and
PostgreSQL: read-only lookups that match what the refresh grant's locking read sees, and the
access-token deny list (idempotent, safe under concurrent revocations of one token)."""

from __future__ import annotations

import threading

from sqlalchemy import update

from tokend.core.secrets import hash_secret, new_refresh_token
from tokend.runtime import Runtime
from tokend.store.schema import token_families


def test_peek_refresh_token_sees_what_the_locking_read_sees(rt: Runtime, make_client, issue):
    reg = make_client()
    tokens = issue(reg)
    h = hash_secret(tokens.refresh_token)
    with rt.store.transaction() as tx:
        locked = tx.find_refresh_token(h)
    peeked = rt.store.peek_refresh_token(h)
    assert peeked is not None and locked is not None
    assert peeked.family.dpop_jkt is None
    assert peeked == locked
    assert rt.store.peek_refresh_token(hash_secret(new_refresh_token())) is None
    # The family's DPoP binding comes along, from both lookups.
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(token_families)
            .where(token_families.c.id == peeked.family.id)
            .values(dpop_jkt="thumbprint")
        )
    again = rt.store.peek_refresh_token(h)
    assert again is not None and again.family.dpop_jkt == "thumbprint"
    family = rt.store.peek_family(peeked.family.id)
    assert family == again.family
    assert rt.store.peek_family("no-such-family") is None


def test_deny_list(rt: Runtime, make_client) -> None:
    reg = make_client()
    assert not rt.store.is_access_token_revoked("jti-1")
    assert rt.store.revoke_access_token("jti-1", client_id=reg.client_id, at=1.0, expires_at=9.0)
    assert rt.store.is_access_token_revoked("jti-1")
    assert not rt.store.is_access_token_revoked("jti-2")
    # Again: no error, nothing new.
    assert not rt.store.revoke_access_token(
        "jti-1", client_id=reg.client_id, at=2.0, expires_at=9.0
    )
    assert rt.store.gc(now=9.0, retention=0)["revoked_access_tokens"] == 0  # exp not yet past
    assert rt.store.is_access_token_revoked("jti-1")
    assert rt.store.gc(now=9.5, retention=0)["revoked_access_tokens"] == 1
    assert not rt.store.is_access_token_revoked("jti-1")


def test_concurrent_revocations_of_one_token(rt: Runtime, make_client) -> None:
    reg = make_client()
    n = 8
    barrier = threading.Barrier(n)
    results: list[bool] = []
    errors: list[BaseException] = []

    def revoke() -> None:
        try:
            barrier.wait()
            results.append(
                rt.store.revoke_access_token(
                    "same-jti", client_id=reg.client_id, at=1.0, expires_at=10.0
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=revoke) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [False] * (n - 1) + [True]
