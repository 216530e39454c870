"""``tokend.store`` against the contract of ``tokend.core.ports`` and the admin queries,
on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select

from tests.conftest import RegisteredClient
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.errors import AlreadyExists, InvalidGrant, TemporarilyUnavailable
from tokend.core.models import (
    Client,
    ClientCredentials,
    Family,
    SecurityEvent,
    TokenRequest,
    TokenResponse,
    User,
)
from tokend.core.secrets import (
    hash_secret,
    new_client_id,
    new_client_secret,
    new_id,
    new_refresh_token,
)
from tokend.runtime import Runtime, build_runtime
from tokend.store import SqlStore
from tokend.store import engine as engine_mod
from tokend.store.engine import create_db_engine, migrate
from tokend.store.schema import (
    metadata,
    refresh_tokens,
    security_events,
    token_families,
    users,
)

FAR = 10**7


# -- helpers ---------------------------------------------------------------------------------


def new_user(rt: Runtime, name: str | None = None) -> User:
    u = User(id=new_id(), username=name or f"u{new_id()[:8]}", password_hash="$argon2id$x")
    rt.store.create_user(u, now=rt.clock.now())
    return u


def new_family(
    rt: Runtime,
    client_id: str,
    user_id: str,
    *,
    expires_at: float | None = None,
    tokens: int = 1,
    token_expires_at: float | None = None,
    scopes: tuple[str, ...] = ("openid", "offline"),
) -> tuple[Family, list[str]]:
    """A family with ``tokens`` unspent refresh tokens, written through the Transaction port."""
    now = rt.clock.now()
    family = Family(
        id=new_id(),
        client_id=client_id,
        user_id=user_id,
        subject=f"sub-{user_id}",
        scopes=scopes,
        created_at=now,
        expires_at=now + FAR if expires_at is None else expires_at,
        auth_time=now - 5,
    )
    plain = [new_refresh_token() for _ in range(tokens)]
    with rt.store.transaction() as tx:
        tx.create_family(family)
        for p in plain:
            tx.insert_refresh_token(
                hash_secret(p),
                family_id=family.id,
                created_at=now,
                expires_at=family.expires_at if token_expires_at is None else token_expires_at,
            )
    return family, plain


def count(rt: Runtime, table, *where) -> int:  # type: ignore[no-untyped-def]
    with rt.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def refresh(rt: Runtime, reg: RegisteredClient, token: str) -> TokenResponse:
    return rt.service.token(
        TokenRequest(
            params={"grant_type": "refresh_token", "refresh_token": token},
            credentials=ClientCredentials("client_secret_basic", reg.client_id, reg.secret),
        )
    )


# -- Transaction port ----------------------------------------------------------------------


def test_find_refresh_token_returns_joined_family(rt: Runtime, make_client, user: User) -> None:
    reg = make_client()
    family, [token] = new_family(rt, reg.client_id, user.id, token_expires_at=rt.clock.now() + 60)
    with rt.store.transaction() as tx:
        stored = tx.find_refresh_token(hash_secret(token))
        assert tx.find_refresh_token(hash_secret("tkd_rt_unknown")) is None
    assert stored is not None
    assert stored.token_hash == hash_secret(token)
    assert stored.family == family  # every field round-trips (scopes as a tuple, times exact)
    assert stored.created_at == rt.clock.now()
    assert stored.expires_at == rt.clock.now() + 60
    assert stored.spent_at is None and stored.successor_hash is None


def test_issue_fixture_stores_family(rt: Runtime, make_client, user: User, issue) -> None:
    reg = make_client()
    resp = issue(reg, "openid offline email")
    assert resp.refresh_token is not None
    with rt.store.transaction() as tx:
        stored = tx.find_refresh_token(hash_secret(resp.refresh_token))
    assert stored is not None
    fam = stored.family
    assert (fam.client_id, fam.user_id, fam.scopes) == (
        reg.client_id,
        user.id,
        ("openid", "offline", "email"),
    )
    assert rt.store.peek_family(fam.id) == fam


def test_spend_is_compare_and_set(rt: Runtime, make_client, user: User) -> None:
    reg = make_client()
    _, [token] = new_family(rt, reg.client_id, user.id)
    h = hash_secret(token)
    s1, s2 = hash_secret("succ-1"), hash_secret("succ-2")
    with rt.store.transaction() as tx:
        assert tx.is_refresh_token_live(h) is True
        assert tx.spend_refresh_token(h, at=100.0, successor_hash=s1) is True
        assert tx.spend_refresh_token(h, at=101.0, successor_hash=s2) is False
        assert tx.is_refresh_token_live(h) is False
    with rt.store.transaction() as tx:
        assert tx.spend_refresh_token(h, at=102.0, successor_hash=s2) is False
        stored = tx.find_refresh_token(h)
        assert tx.spend_refresh_token(hash_secret("nope"), at=1.0, successor_hash=s1) is False
        assert tx.is_refresh_token_live(hash_secret("nope")) is False
    assert stored is not None
    assert stored.spent_at == 100.0  # the first spend wins; the losers changed nothing
    assert stored.successor_hash == s1


def test_rotate_spends_and_inserts_the_successor_once(rt: Runtime, make_client, user: User) -> None:
    """One step (one statement on PostgreSQL): the successor exists iff the spend won."""
    reg = make_client()
    family, [plain] = new_family(rt, reg.client_id, user.id)
    h, s1, s2 = hash_secret(plain), hash_secret("s1"), hash_secret("s2")
    with rt.store.transaction() as tx:
        assert tx.rotate_refresh_token(
            h, at=100.0, successor_hash=s1, family_id=family.id, expires_at=200.0
        )
        assert not tx.rotate_refresh_token(
            h, at=101.0, successor_hash=s2, family_id=family.id, expires_at=201.0
        )
        assert not tx.rotate_refresh_token(
            hash_secret("nope"), at=1.0, successor_hash=s2, family_id=family.id, expires_at=2.0
        )
    old, new = rt.store.peek_refresh_token(h), rt.store.peek_refresh_token(s1)
    assert old is not None and (old.spent_at, old.successor_hash) == (100.0, s1)
    assert new is not None and (new.family.id, new.created_at, new.expires_at) == (
        family.id, 100.0, 200.0,
    )  # fmt: skip
    assert new.spent_at is None and rt.store.peek_refresh_token(s2) is None


def test_a_refresh_is_two_statements_on_postgres(
    rt: Runtime, make_client, issue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the locked read and the rotation (one CTE), and no ping at checkout;
    with BEGIN and COMMIT, four round trips (docs/benchmarks.md, issue 14)."""
    if rt.store.engine.dialect.name != "postgresql":
        pytest.skip("round trips: PostgreSQL")
    import psycopg

    rt.store.enable_client_cache()  # as the server runs: the client is read once
    reg = make_client()
    token = issue(reg).refresh_token
    token = refresh(rt, reg, token).refresh_token  # the pool and the client cache warm
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(str(query).split(None, 1)[0])
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    assert refresh(rt, reg, token).refresh_token is not None
    assert sent == ["SELECT", "WITH"]


def test_a_server_refresh_is_four_round_trips_of_prepared_statements(
    rt: Runtime, make_client, issue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through the server's engine (asyncpg in a greenlet, as the endpoints run
    it): BEGIN, the locked read, the rotation, COMMIT; the two statements as prepared ones
    (parsed and planned once per connection), nothing else sent."""
    if rt.store.engine.dialect.name != "postgresql":
        pytest.skip("round trips: PostgreSQL")
    import asyncio

    import asyncpg  # type: ignore[import-untyped]
    from asyncpg.prepared_stmt import PreparedStatement  # type: ignore[import-untyped]
    from sqlalchemy.util import greenlet_spawn

    rt.store.enable_client_cache()
    reg = make_client()
    token = issue(reg).refresh_token
    sent: list[tuple[str, str]] = []
    execute, fetch, prepare = (
        asyncpg.Connection.execute,
        PreparedStatement.fetch,
        asyncpg.Connection.prepare,
    )

    async def counted_execute(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(("simple", query.split(None, 1)[0]))
        return await execute(self, query, *args, **kwargs)

    async def counted_fetch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(("prepared", self.get_query().split(None, 1)[0]))
        return await fetch(self, *args, **kwargs)

    async def counted_prepare(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(("prepare", query.split(None, 1)[0]))
        return await prepare(self, query, *args, **kwargs)

    with asyncio.Runner() as runner:
        engine = runner.run(greenlet_spawn(lambda: rt.store.engine))
        assert engine.dialect.driver == "asyncpg"
        token = runner.run(greenlet_spawn(refresh, rt, reg, token)).refresh_token  # warm
        monkeypatch.setattr(asyncpg.Connection, "execute", counted_execute)
        monkeypatch.setattr(asyncpg.Connection, "prepare", counted_prepare)
        monkeypatch.setattr(PreparedStatement, "fetch", counted_fetch)
        assert runner.run(greenlet_spawn(refresh, rt, reg, token)).refresh_token is not None
        monkeypatch.undo()
        runner.run(rt.aclose())
    assert sent == [
        ("simple", "BEGIN;"),
        ("prepared", "SELECT"),
        ("prepared", "WITH"),
        ("simple", "COMMIT;"),
    ]


def test_exception_rolls_back_transaction(rt: Runtime, make_client, user: User) -> None:
    reg = make_client()
    _, [token] = new_family(rt, reg.client_id, user.id)
    h = hash_secret(token)
    fresh = Family(new_id(), reg.client_id, user.id, "s", ("openid",), 1.0, 2.0)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), rt.store.transaction() as tx:
        assert tx.spend_refresh_token(h, at=5.0, successor_hash=hash_secret("x")) is True
        tx.create_family(fresh)
        tx.insert_refresh_token(hash_secret("x"), family_id=fresh.id, created_at=1, expires_at=2)
        tx.record_event(SecurityEvent("probe", 1.0))
        assert tx.find_refresh_token(hash_secret("x")) is not None  # visible inside
        raise Boom
    with rt.store.transaction() as tx:
        assert tx.is_refresh_token_live(h) is True
        assert tx.find_refresh_token(hash_secret("x")) is None
    assert rt.store.peek_family(fresh.id) is None
    assert rt.store.list_events("probe") == []


def test_oauth_error_inside_transaction_propagates_and_rolls_back(
    rt: Runtime, make_client, user: User
) -> None:
    reg = make_client()
    family, _ = new_family(rt, reg.client_id, user.id)
    with pytest.raises(InvalidGrant), rt.store.transaction() as tx:
        assert tx.revoke_family(family.id, at=3.0, reason="test") is True
        raise InvalidGrant()
    assert rt.store.peek_family(family.id).revoked_at is None


def test_revoke_family_once(rt: Runtime, make_client, user: User) -> None:
    reg = make_client()
    family, [token] = new_family(rt, reg.client_id, user.id)
    with rt.store.transaction() as tx:
        assert tx.revoke_family(family.id, at=7.0, reason="r1") is True
        assert tx.revoke_family(family.id, at=8.0, reason="r2") is False
        assert tx.revoke_family("unknown", at=8.0, reason="r2") is False
        stored = tx.find_refresh_token(hash_secret(token))
    assert stored is not None and stored.family.revoked_at == 7.0


def test_record_event(rt: Runtime) -> None:
    with rt.store.transaction() as tx:
        tx.record_event(
            SecurityEvent("k1", 5.0, client_id="c", family_id="f", user_id="u", detail={"a": 1})
        )
        tx.record_event(SecurityEvent("k2", 6.0))
    [e1] = rt.store.list_events("k1")
    assert (e1["at"], e1["client_id"], e1["family_id"], e1["user_id"], e1["detail"]) == (
        5.0,
        "c",
        "f",
        "u",
        {"a": 1},
    )
    assert [e["kind"] for e in rt.store.list_events()] == ["k1", "k2"]


def test_insert_duplicate_token_fails(rt: Runtime, make_client, user: User) -> None:
    reg = make_client()
    family, [token] = new_family(rt, reg.client_id, user.id)
    with pytest.raises(rt.store.engine.dialect.dbapi.IntegrityError), rt.store.transaction() as tx:
        tx.insert_refresh_token(hash_secret(token), family_id=family.id, created_at=1, expires_at=2)


# -- admin queries ---------------------------------------------------------------------------


def test_revoke_families_is_set_based(rt: Runtime, make_client) -> None:
    c1, c2 = make_client(), make_client()
    u1, u2 = new_user(rt), new_user(rt)
    f_u1c1a, _ = new_family(rt, c1.client_id, u1.id)
    f_u1c1b, _ = new_family(rt, c1.client_id, u1.id)
    f_u1c2, _ = new_family(rt, c2.client_id, u1.id)
    f_u2c1, _ = new_family(rt, c1.client_id, u2.id)
    f_u2c2, _ = new_family(rt, c2.client_id, u2.id)
    f_u2c2b, _ = new_family(rt, c2.client_id, u2.id)

    def revoked() -> set[str]:
        return {
            f.id
            for f in (f_u1c1a, f_u1c1b, f_u1c2, f_u2c1, f_u2c2, f_u2c2b)
            if rt.store.peek_family(f.id).revoked_at is not None
        }

    store = rt.store
    with pytest.raises(ValueError):
        store.revoke_families(now=1.0, reason="x")
    assert store.revoke_families(now=10.0, reason="user", user_id=u1.id) == 3
    assert revoked() == {f_u1c1a.id, f_u1c1b.id, f_u1c2.id}
    assert store.revoke_families(now=11.0, reason="user", user_id=u1.id) == 0  # already revoked
    assert store.revoke_families(now=12.0, reason="client", client_id=c1.client_id) == 1
    assert revoked() == {f_u1c1a.id, f_u1c1b.id, f_u1c2.id, f_u2c1.id}
    assert store.revoke_families(now=13.0, reason="fam", family_id=f_u2c2.id) == 1
    assert store.revoke_families(now=14.0, reason="fam", family_id=f_u2c2.id) == 0
    assert store.revoke_families(now=14.0, reason="x", user_id="nobody") == 0
    assert store.revoke_families(now=14.0, reason="x", family_id="nothing") == 0
    assert revoked() == {f_u1c1a.id, f_u1c1b.id, f_u1c2.id, f_u2c1.id, f_u2c2.id}
    # The first revocation's time and reason are kept.
    assert store.peek_family(f_u1c1a.id).revoked_at == 10.0
    with store.engine.connect() as conn:
        reasons = dict(
            conn.execute(select(token_families.c.id, token_families.c.revoked_reason)).all()
        )
    assert reasons[f_u1c2.id] == "user"
    assert reasons[f_u2c1.id] == "client"
    assert reasons[f_u2c2.id] == "fam"
    assert reasons[f_u2c2b.id] is None


def test_revoke_families_one_statement(rt: Runtime, make_client) -> None:
    reg = make_client()
    u = new_user(rt)
    for _ in range(15):
        new_family(rt, reg.client_id, u.id, tokens=0)
    statements: list[str] = []

    def on_exec(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(rt.store.engine, "before_cursor_execute", on_exec)
    try:
        assert rt.store.revoke_families(now=5.0, reason="x", user_id=u.id) == 15
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", on_exec)
    assert len([s for s in statements if s.lstrip().upper().startswith("UPDATE")]) == 1


def test_revoke_families_combined_filters(rt: Runtime, make_client) -> None:
    c1, c2 = make_client(), make_client()
    u = new_user(rt)
    f1, _ = new_family(rt, c1.client_id, u.id)
    f2, _ = new_family(rt, c2.client_id, u.id)
    assert rt.store.revoke_families(now=1.0, reason="x", user_id=u.id, client_id=c2.client_id) == 1
    assert rt.store.peek_family(f1.id).revoked_at is None
    assert rt.store.peek_family(f2.id).revoked_at == 1.0


def test_delete_client_cascades(rt: Runtime, make_client, user: User) -> None:
    doomed, kept = make_client(), make_client()
    d1, d1_tokens = new_family(rt, doomed.client_id, user.id, tokens=3)
    d2, _ = new_family(rt, doomed.client_id, user.id, tokens=2)
    k1, [k_token] = new_family(rt, kept.client_id, user.id)
    assert count(rt, refresh_tokens) == 6

    assert rt.store.delete_client(doomed.client_id) is True
    assert rt.store.get_client(doomed.client_id) is None
    assert rt.store.peek_family(d1.id) is None and rt.store.peek_family(d2.id) is None
    assert count(rt, token_families, token_families.c.client_id == doomed.client_id) == 0
    assert count(rt, refresh_tokens, refresh_tokens.c.family_id.in_([d1.id, d2.id])) == 0
    with rt.store.transaction() as tx:
        assert tx.find_refresh_token(hash_secret(d1_tokens[0])) is None
        assert tx.find_refresh_token(hash_secret(k_token)) is not None
    assert rt.store.peek_family(k1.id) == k1
    assert count(rt, refresh_tokens) == 1
    assert rt.store.delete_client(doomed.client_id) is False


def test_create_client_duplicate(rt: Runtime, make_client) -> None:
    reg = make_client()
    with pytest.raises(AlreadyExists):
        rt.store.create_client(reg.client, now=1.0)


def test_client_round_trip(rt: Runtime, make_client) -> None:
    reg = make_client(refresh_grace=0, access_token_ttl=60, refresh_token_ttl=600)
    assert rt.store.get_client(reg.client_id) == reg.client
    assert rt.store.get_client("nope") is None
    assert reg.client in rt.store.list_clients()


def test_user_round_trip_and_unique_username(rt: Runtime) -> None:
    u = User(
        id=new_id(),
        username="bob",
        password_hash="$argon2id$h",
        email="bob@example.com",
        email_verified=True,
        given_name="Bob",
        family_name="B",
        phone_number="+1 555",
        phone_number_verified=True,
        picture="https://x/p.png",
    )
    rt.store.create_user(u, now=1.0)
    assert rt.store.get_user_by_username("bob") == u
    assert rt.store.get_user_by_username("nobody") is None
    with pytest.raises(AlreadyExists):
        rt.store.create_user(User(id=new_id(), username="bob", password_hash="h"), now=2.0)


def test_set_client_secret(rt: Runtime, make_client) -> None:
    conf, pub = make_client(), make_client(public=True)
    new = hash_secret("new")
    assert rt.store.set_client_secret(conf.client_id, new, now=5.0) is True
    assert rt.store.get_client(conf.client_id).secret_hash == new
    assert rt.store.set_client_secret(pub.client_id, new, now=5.0) is False
    assert rt.store.get_client(pub.client_id).secret_hash is None
    assert rt.store.set_client_secret("nope", new, now=5.0) is False


# -- only hashes at rest ----------------------------------------------------------------------


def _all_values(rt: Runtime) -> list[tuple[str, str, object]]:
    out = []
    with rt.store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                out.extend((table.name, col, val) for col, val in row.items())
    return out


def _contains(value: object, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return needle.encode() in raw or needle.encode("utf-16-le") in raw
    return False


def test_only_hashes_are_stored(rt: Runtime, make_client, issue) -> None:
    reg = make_client()
    first = issue(reg, "openid offline email")
    second = refresh(rt, reg, first.refresh_token)  # a rotation stores the successor's hash
    retry = refresh(rt, reg, first.refresh_token)  # grace retry: same successor, recomputed
    assert retry.refresh_token == second.refresh_token
    plaintexts = {
        "client secret": reg.secret,
        "first refresh token": first.refresh_token,
        "successor refresh token": second.refresh_token,
    }
    values = _all_values(rt)
    # The scan does read every column (not vacuous): ids and hashes are there.
    assert any(_contains(v, reg.client_id) for _, _, v in values)
    stored_bytes = {bytes(v) for _, _, v in values if isinstance(v, bytes | memoryview)}
    for plain in plaintexts.values():
        assert hash_secret(plain) in stored_bytes
    for what, plain in plaintexts.items():
        assert plain
        hits = [(t, c) for t, c, v in values if _contains(v, plain)]
        assert hits == [], f"{what} stored in plaintext in {hits}"
        # Nor the random body without the prefix/checksum.
        body = plain[7:50]
        hits = [(t, c) for t, c, v in values if _contains(v, body)]
        assert hits == [], f"{what} body stored in {hits}"


# -- gc --------------------------------------------------------------------------------------


def test_gc(rt: Runtime, make_client, user: User, clock: FrozenClock) -> None:
    reg = make_client()
    t0 = clock.now()
    retention = 1000.0
    live, [live_token, spent_old] = new_family(rt, reg.client_id, user.id, tokens=2)
    with rt.store.transaction() as tx:
        # A spent token of a live family whose own (idle) expiry is long past.
        tx.spend_refresh_token(hash_secret(spent_old), at=t0 + 1, successor_hash=b"s" * 32)
    with rt.store.engine.begin() as conn:
        conn.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.token_hash == hash_secret(spent_old))
            .values(expires_at=t0 + 10)
        )
    expired_old, [e_tok] = new_family(rt, reg.client_id, user.id, expires_at=t0 + 10)
    expired_recent, [er_tok] = new_family(rt, reg.client_id, user.id, expires_at=t0 + 1500)
    revoked_old, [ro_tok] = new_family(rt, reg.client_id, user.id)
    revoked_recent, [rr_tok] = new_family(rt, reg.client_id, user.id)
    rt.store.revoke_families(now=t0, reason="x", family_id=revoked_old.id)
    rt.store.revoke_families(now=t0 + 1900, reason="x", family_id=revoked_recent.id)
    with rt.store.transaction() as tx:
        tx.record_event(SecurityEvent("old", t0))
        tx.record_event(SecurityEvent("recent", t0 + 1900))

    # Nothing is old enough yet: gc at t0 keeps everything.
    assert rt.store.gc(now=t0, retention=retention) == {
        "families": 0,
        "refresh_tokens": 0,
        "authorization_codes": 0,
        "browser_sessions": 0,
        "security_events": 0,
        "revoked_access_tokens": 0,
        "dpop_proofs": 0,
        "abuse_counters": 0,
        "device_authorizations": 0,
    }
    assert count(rt, token_families) == 5 and count(rt, refresh_tokens) == 6

    clock.advance(2000)  # cutoff = t0 + 1000
    out = rt.store.gc(now=clock.now(), retention=retention)
    assert out["families"] == 2
    assert out["security_events"] == 1
    assert out["refresh_tokens"] >= 1

    families = (live, expired_old, expired_recent, revoked_old, revoked_recent)
    kept = {f.id for f in families if rt.store.peek_family(f.id) is not None}
    assert kept == {live.id, expired_recent.id, revoked_recent.id}
    with rt.store.transaction() as tx:
        present = {
            name
            for name, tok in {
                "live": live_token,
                "spent_old": spent_old,
                "expired_old": e_tok,
                "expired_recent": er_tok,
                "revoked_old": ro_tok,
                "revoked_recent": rr_tok,
            }.items()
            if tx.find_refresh_token(hash_secret(tok)) is not None
        }
    assert present == {"live", "expired_recent", "revoked_recent"}
    assert [e["kind"] for e in rt.store.list_events()] == ["recent"]
    assert count(rt, refresh_tokens) == 3
    assert count(rt, security_events) == 1

    # Idempotent.
    assert rt.store.gc(now=clock.now(), retention=retention) == {
        "families": 0,
        "refresh_tokens": 0,
        "authorization_codes": 0,
        "browser_sessions": 0,
        "security_events": 0,
        "revoked_access_tokens": 0,
        "dpop_proofs": 0,
        "abuse_counters": 0,
        "device_authorizations": 0,
    }


def test_gc_keeps_security_events_for_their_own_retention(rt: Runtime, clock: FrozenClock) -> None:
    t0 = clock.now()
    with rt.store.transaction() as tx:
        tx.record_event(SecurityEvent("audit", t0))
    clock.advance(5000)
    out = rt.store.gc(now=clock.now(), retention=1000, event_retention=10_000)
    assert out["security_events"] == 0 and count(rt, security_events) == 1
    out = rt.store.gc(now=clock.now(), retention=1000, event_retention=4000)
    assert out["security_events"] == 1 and count(rt, security_events) == 0


def test_gc_keeps_live_tokens_issued_normally(rt: Runtime, make_client, issue, clock) -> None:
    reg = make_client()
    resp = issue(reg)
    clock.advance(3600)
    rt.store.gc(now=clock.now(), retention=0)
    assert refresh(rt, reg, resp.refresh_token).refresh_token


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_spend_exactly_one_wins(rt: Runtime, make_client, user: User) -> None:
    reg = make_client()
    family, [token] = new_family(rt, reg.client_id, user.id)
    h = hash_secret(token)
    n = 8
    barrier = threading.Barrier(n)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def rotate(i: int) -> None:
        try:
            barrier.wait()
            succ = hash_secret(f"successor-{i}")
            with rt.store.transaction() as tx:
                stored = tx.find_refresh_token(h)
                assert stored is not None
                ok = tx.spend_refresh_token(h, at=float(i), successor_hash=succ)
                if ok:
                    tx.insert_refresh_token(
                        succ, family_id=family.id, created_at=1.0, expires_at=2.0
                    )
            results.append((i, ok))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    winners = [i for i, ok in results if ok]
    assert len(results) == n and len(winners) == 1
    with rt.store.transaction() as tx:
        stored = tx.find_refresh_token(h)
    assert stored.successor_hash == hash_secret(f"successor-{winners[0]}")
    assert count(rt, refresh_tokens, refresh_tokens.c.family_id == family.id) == 2


def test_find_waits_for_concurrent_rotation(rt: Runtime, make_client, user: User) -> None:
    """``find_refresh_token`` locks the row (PostgreSQL: FOR UPDATE; SQLite: the write lock
    of BEGIN IMMEDIATE): a second rotation started while the first holds the token sees it
    spent once it gets it, instead of reading the stale unspent row."""
    reg = make_client()
    _, [token] = new_family(rt, reg.client_id, user.id)
    h = hash_secret(token)
    found = threading.Event()
    seen: list[float | None] = []
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with rt.store.transaction() as tx:
                assert tx.find_refresh_token(h).spent_at is None
                found.set()
                time.sleep(0.4)
                assert tx.spend_refresh_token(h, at=42.0, successor_hash=b"s" * 32)
        except BaseException as exc:
            errors.append(exc)
            found.set()

    def second() -> None:
        try:
            found.wait(10)
            with rt.store.transaction() as tx:
                seen.append(tx.find_refresh_token(h).spent_at)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert seen == [42.0]


def test_loser_of_a_rotation_race_reads_the_family_as_the_winner_left_it(
    rt: Runtime, make_client, user: User
) -> None:
    """``find_refresh_token`` locks the family's row with the token's (issue 10 §5): a second
    rotation that waited for the first reads the family the first left (here bound to a DPoP
    key), never the stale family row beside the fresh token row. Before, PostgreSQL locked
    only the token (FOR UPDATE OF refresh_tokens) and re-read only that row after the wait."""
    reg = make_client(public=True)
    _, [token] = new_family(rt, reg.client_id, user.id)
    h = hash_secret(token)
    found = threading.Event()
    seen: list[tuple[float | None, str | None]] = []
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with rt.store.transaction() as tx:
                stored = tx.find_refresh_token(h)
                found.set()
                time.sleep(0.4)
                assert tx.spend_refresh_token(h, at=42.0, successor_hash=b"s" * 32)
                assert tx.bind_family_dpop(stored.family.id, "J" * 43)
        except BaseException as exc:
            errors.append(exc)
            found.set()

    def second() -> None:
        try:
            found.wait(10)
            with rt.store.transaction() as tx:
                stored = tx.find_refresh_token(h)
                seen.append((stored.spent_at, stored.family.dpop_jkt))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert seen == [(42.0, "J" * 43)]


def test_concurrent_refresh_through_service_one_successor(rt: Runtime, make_client, issue) -> None:
    """The whole grant over the real store: concurrent requests with one token converge on
    a single successor (grace retries), and exactly one token was spent."""
    reg = make_client()
    token = issue(reg).refresh_token
    n = 6
    barrier = threading.Barrier(n)
    got: list[str] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            got.append(refresh(rt, reg, token).refresh_token)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(got) == n and len(set(got)) == 1
    with rt.store.transaction() as tx:
        fam_id = tx.find_refresh_token(hash_secret(token)).family.id
    assert count(rt, refresh_tokens, refresh_tokens.c.family_id == fam_id) == 2
    assert count(rt, refresh_tokens, refresh_tokens.c.spent_at.is_not(None)) == 1


# -- failures surface as TemporarilyUnavailable ------------------------------------------------


class SqliteLock:
    """An exclusive write lock on a SQLite database, held from a separate connection."""

    def __init__(self, path) -> None:  # type: ignore[no-untyped-def]
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)

    def acquire(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


@pytest.fixture
def locked_sqlite(tmp_path, monkeypatch) -> Iterator[tuple[Settings, SqliteLock]]:
    """A migrated SQLite database with a short busy timeout (patched before any engine on it
    exists), and a lock to take on it."""
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    eng = create_db_engine(url)
    migrate(eng)
    eng.dispose()
    monkeypatch.setattr(engine_mod, "SQLITE_BUSY_TIMEOUT_MS", 100)
    lock = SqliteLock(path)
    yield Settings(database_url=url, secret_key="k" * 40, issuer="https://i.test"), lock
    lock.release()
    lock.conn.close()


def test_sqlite_locked_is_temporarily_unavailable(locked_sqlite) -> None:
    settings, lock = locked_sqlite
    rt = build_runtime(settings, clock=FrozenClock(), prepare=True)
    try:
        secret = new_client_secret()
        client = Client(
            new_client_id(),
            "c",
            False,
            hash_secret(secret),
            frozenset({"refresh_token"}),
            (),
            ("openid", "offline"),
        )
        rt.store.create_client(client, now=1.0)
        u = new_user(rt)
        token = rt.issuer.issue(
            client=client, user_id=u.id, subject=u.id, scopes=("offline",), now=rt.clock.now()
        ).refresh_token
        reg = RegisteredClient(client, secret)

        lock.acquire()
        started = time.monotonic()
        with pytest.raises(TemporarilyUnavailable) as info, rt.store.transaction() as tx:
            tx.find_refresh_token(hash_secret(token))
        assert time.monotonic() - started < 5  # the patched busy timeout, not 10 s
        assert "locked" in (info.value.debug or "")
        assert info.value.to_dict()["error"] == "temporarily_unavailable"
        assert "locked" not in info.value.description  # internals stay out of the response

        # Through the domain: the refresh grant and starting a family.
        with pytest.raises(TemporarilyUnavailable):
            refresh(rt, reg, token)
        with pytest.raises(TemporarilyUnavailable):
            rt.issuer.issue(client=client, user_id=u.id, subject=u.id, scopes=("offline",), now=2)

        # Once the lock is gone the same runtime works again (no poisoned pooled connection).
        lock.release()
        assert refresh(rt, reg, token).refresh_token
    finally:
        rt.close()


def test_sqlite_locked_reads_still_work_writes_are_temporarily_unavailable(locked_sqlite) -> None:
    settings, lock = locked_sqlite
    store = SqlStore(create_db_engine(settings.database_url))
    try:
        lock.acquire()
        # WAL: a writer holding the lock does not block readers (client lookups never queue).
        assert store.get_client("x") is None
        with pytest.raises(TemporarilyUnavailable), store.transaction() as tx:
            tx.record_event(SecurityEvent("x", 1.0))
        lock.release()
        assert store.get_client("x") is None
    finally:
        store.engine.dispose()


def test_sqlite_writer_waits_for_a_lock_held_briefly(locked_sqlite) -> None:
    """The hot path has no SQLite busy handler (it sleeps a millisecond or more per attempt,
    stalling a server's event loop): the store waits in short steps instead, and gets the
    lock as soon as the holder lets go, well inside the busy timeout."""
    settings, lock = locked_sqlite
    store = SqlStore(create_db_engine(settings.database_url))
    try:
        with store.transaction() as tx:  # opens this thread's connection
            tx.record_event(SecurityEvent("before", 1.0))
        assert store._sqlite_conn().execute("PRAGMA busy_timeout").fetchone()[0] == 0
        lock.acquire()
        timer = threading.Timer(0.03, lock.release)
        timer.start()
        started = time.monotonic()
        with store.transaction() as tx:
            tx.record_event(SecurityEvent("after", 2.0))
        waited = time.monotonic() - started
        timer.join()
        assert 0.025 <= waited < 0.1  # the patched busy timeout is 100 ms
        kinds = [e["kind"] for e in store.list_events()]
        assert kinds[-2:] == ["before", "after"]
    finally:
        store.close()


def test_sqlite_connection_is_replaced_after_a_failure(locked_sqlite) -> None:
    settings, _lock = locked_sqlite
    store = SqlStore(create_db_engine(settings.database_url))
    try:
        first = store._sqlite_conn()
        with pytest.raises(TemporarilyUnavailable), store.transaction() as tx:
            tx._cur.execute("SELECT * FROM no_such_table")  # not busy: a real error
        assert store._sqlite_conn() is not first
        with store.transaction() as tx:
            tx.record_event(SecurityEvent("ok", 1.0))
    finally:
        store.close()


def test_sqlite_store_close_closes_every_thread_connection(locked_sqlite) -> None:
    settings, _lock = locked_sqlite
    store = SqlStore(create_db_engine(settings.database_url))
    conns = []
    opened = threading.Barrier(4)
    closed = threading.Event()

    def use() -> None:  # the thread lives on until the store is closed
        store.get_client("x")
        conns.append(store._sqlite_conn())
        opened.wait()
        closed.wait()

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    opened.wait()
    assert len({id(c) for c in conns}) == 3
    store.close()
    closed.set()
    for t in threads:
        t.join()
    for conn in conns:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def test_sqlite_thread_connection_goes_with_its_thread(locked_sqlite) -> None:
    """A thread's own connection is not kept alive by the store once the thread is gone."""
    settings, _lock = locked_sqlite
    store = SqlStore(create_db_engine(settings.database_url))
    try:
        t = threading.Thread(target=lambda: store.get_client("x"))
        t.start()
        t.join()
        del t
        gc.collect()
        assert store._open_thread_conns() == []
        store.get_client("x")
        assert len(store._open_thread_conns()) == 1  # this thread's
    finally:
        store.close()


def test_unreachable_postgres_is_temporarily_unavailable() -> None:
    from tests.support.postgres import free_port

    store = SqlStore(create_db_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none"))
    try:
        with pytest.raises(TemporarilyUnavailable), store.transaction():
            pass
        with pytest.raises(TemporarilyUnavailable):
            store.get_client("x")
    finally:
        store.engine.dispose()


# -- users: profile reads and updates (the UserInfo endpoint, `tokend users update`) ----------


def test_get_user_and_update_user(rt: Runtime) -> None:
    u = new_user(rt, "carol")
    other = new_user(rt, "dave")
    assert rt.store.get_user(u.id) == u
    assert rt.store.get_user("nobody") is None

    updated = rt.store.update_user(
        "carol", {"email": "c@example.com", "email_verified": True}, now=rt.clock.now()
    )
    assert updated == User(
        id=u.id,
        username="carol",
        password_hash=u.password_hash,
        email="c@example.com",
        email_verified=True,
    )
    assert rt.store.get_user(u.id) == updated == rt.store.get_user_by_username("carol")
    assert rt.store.get_user(other.id) == other  # only that user

    cleared = rt.store.update_user("carol", {"email": None, "picture": "https://p/x"}, now=2.0)
    assert (cleared.email, cleared.email_verified, cleared.picture) == (None, True, "https://p/x")
    assert rt.store.update_user("nobody", {"email": "x@y.z"}, now=3.0) is None
    for field in ("id", "username", "created_at", "no_such_field"):
        with pytest.raises(ValueError):
            rt.store.update_user("carol", {field: "x"}, now=4.0)
    assert rt.store.get_user(u.id) == cleared


def test_get_family_and_user(rt: Runtime, make_client) -> None:
    reg = make_client()
    u = User(
        id=new_id(),
        username="erin",
        password_hash="$argon2id$h",
        email="e@example.com",
        email_verified=True,
        phone_number="+1555",
        phone_number_verified=False,
        picture="https://p/e.png",
    )
    rt.store.create_user(u, now=rt.clock.now())
    family, _ = new_family(rt, reg.client_id, u.id)

    found = rt.store.get_family_and_user(family.id)
    assert found == (family, u)
    assert found[0] == rt.store.peek_family(family.id)
    # Real booleans on both backends (the driver-level read converts SQLite's 0/1).
    assert found[1].email_verified is True and found[1].phone_number_verified is False
    assert rt.store.get_family_and_user("no-such-family") is None

    rt.store.revoke_families(now=rt.clock.now(), reason="test", family_id=family.id)
    revoked, user = rt.store.get_family_and_user(family.id)
    assert revoked.revoked_at == rt.clock.now() and user == u

    # A deleted user takes their families along (ON DELETE CASCADE).
    with rt.store.engine.begin() as conn:
        conn.execute(users.delete().where(users.c.id == u.id))
    assert rt.store.get_family_and_user(family.id) is None


def test_get_family_and_user_unreachable_is_temporarily_unavailable(rt: Runtime, tmp_path) -> None:
    from tests.web.helpers import unreachable_engines

    store = SqlStore(unreachable_engines(rt, tmp_path).sync)
    try:
        with pytest.raises(TemporarilyUnavailable):
            store.get_family_and_user("x")
    finally:
        store.engine.dispose()
