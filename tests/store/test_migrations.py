"""Migrations: idempotent, in sync with ``tokend.store.schema``, and the engine's per-backend
setup (SQLite PRAGMAs on every connection, psycopg for a plain ``postgresql://`` URL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from tokend.dburl import is_sqlite, normalize_url
from tokend.store import engine as engine_mod
from tokend.store.engine import create_db_engine, migrate
from tokend.store.schema import metadata

TABLES = {
    "clients",
    "users",
    "authorization_codes",
    "consents",
    "browser_sessions",
    "revoked_access_tokens",
    "dpop_proofs",
    "token_families",
    "refresh_tokens",
    "security_events",
    "signing_keys",
    "abuse_counters",
}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_db_engine(db_url)
    yield eng
    eng.dispose()


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(ctx, metadata)


def _head() -> str:
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import tokend.store.engine as engine_module

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(engine_module.__file__).parent / "migrations"))
    return ScriptDirectory.from_config(cfg).get_current_head()


def _revision(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_migrate_is_idempotent(engine: Engine) -> None:
    migrate(engine)
    first = _revision(engine)
    tables = set(inspect(engine).get_table_names())
    migrate(engine)
    migrate(engine)
    assert _revision(engine) == first == [_head()]
    assert set(inspect(engine).get_table_names()) == tables
    assert tables >= TABLES


def test_migrate_keeps_data(engine: Engine) -> None:
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO security_events (at, kind, detail) VALUES (1.5, 'probe', '{}')")
        )
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT kind FROM security_events")).scalars().all() == ["probe"]


def test_fresh_database_migrates_from_nothing(blank_db_url: str) -> None:
    eng = create_db_engine(blank_db_url)
    try:
        assert inspect(eng).get_table_names() == []
        migrate(eng)
        assert set(inspect(eng).get_table_names()) >= TABLES | {"alembic_version"}
        assert _revision(eng) == [_head()]
        assert _diff(eng) == []
        migrate(eng)
        assert _revision(eng) == [_head()]
    finally:
        eng.dispose()


def test_migration_matches_schema_metadata(engine: Engine) -> None:
    migrate(engine)
    assert _diff(engine) == []


def test_schema_comparison_detects_drift(engine: Engine) -> None:
    """The comparison above is not vacuous: a dropped index is reported."""
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_token_families_expires_at"))
    diff = _diff(engine)
    assert any(d[0] == "add_index" and d[1].name == "ix_token_families_expires_at" for d in diff)


def _migrate_concurrently(url: str, n: int) -> list[BaseException]:
    engines = [create_db_engine(url) for _ in range(n)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(eng: Engine) -> None:
        try:
            barrier.wait()
            migrate(eng)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in engines:
        e.dispose()
    return errors


def test_concurrent_migrate(blank_db_url: str) -> None:
    """Several processes starting at once on a new database (`tokend serve` on many
    machines, or several CLI commands) all succeed, and the schema is made once."""
    assert _migrate_concurrently(blank_db_url, 4) == []
    eng = create_db_engine(blank_db_url)
    try:
        assert _revision(eng) == [_head()]
        assert _diff(eng) == []
    finally:
        eng.dispose()


def test_concurrent_first_connections_sqlite(tmp_path) -> None:
    """Switching a new SQLite file to WAL races between connections: the loser gets
    "database is locked" at once, without waiting on the busy handler. Connections opened
    together on a new file must all succeed (the race hits a few rounds in a hundred)."""
    failures: list[BaseException] = []
    for i in range(80):
        engines = [create_db_engine(f"sqlite:///{tmp_path / f'race{i}.db'}") for _ in range(8)]
        barrier = threading.Barrier(len(engines))

        def connect(eng: Engine, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                with eng.connect() as conn:
                    assert _pragmas(conn)["journal_mode"] == "wal"
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=connect, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for e in engines:
            e.dispose()
    assert failures == []


# -- SQLite connection setup -------------------------------------------------------------


def _pragmas(conn) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Read on the raw DBAPI connection: SQLAlchemy's autobegin would otherwise open a
    ``BEGIN IMMEDIATE`` transaction on each of the connections held open at once."""
    raw = conn.connection.dbapi_connection
    return {
        name: raw.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
    }


def _assert_pragmas(p: dict[str, object]) -> None:
    assert p["journal_mode"] == "wal"
    assert p["foreign_keys"] == 1
    assert isinstance(p["busy_timeout"], int) and p["busy_timeout"] > 0
    assert p["synchronous"] == 1  # NORMAL


def test_sqlite_pragmas_on_every_connection(tmp_path) -> None:
    eng = create_db_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        migrate(eng)
        # Several connections open at once: each is a distinct DBAPI connection.
        conns = [eng.connect() for _ in range(3)]
        try:
            raw = {id(c.connection.dbapi_connection) for c in conns}
            assert len(raw) == 3
            for c in conns:
                _assert_pragmas(_pragmas(c))
        finally:
            for c in conns:
                c.close()
        # And connections made after the pool was thrown away.
        eng.dispose()
        with eng.connect() as c:
            _assert_pragmas(_pragmas(c))
        # Inside a transaction too (engine.begin issues BEGIN IMMEDIATE).
        with eng.begin() as c:
            _assert_pragmas(_pragmas(c))
            assert c.connection.dbapi_connection.in_transaction
    finally:
        eng.dispose()


def test_sqlite_busy_timeout_follows_module_setting(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(engine_mod, "SQLITE_BUSY_TIMEOUT_MS", 123)
    eng = create_db_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 123
    finally:
        eng.dispose()


def test_sqlite_foreign_keys_enforced(tmp_path) -> None:
    eng = create_db_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        migrate(eng)
        with pytest.raises(Exception, match="FOREIGN KEY"), eng.begin() as c:
            c.execute(
                text(
                    "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)"
                    " VALUES (x'00', 'nope', 0, 1)"
                )
            )
    finally:
        eng.dispose()


def test_sqlite_creates_parent_directory(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "t.db"
    eng = create_db_engine(f"sqlite:///{path}")
    try:
        migrate(eng)
        assert path.exists()
    finally:
        eng.dispose()


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db.example:5433/tokend",
        "postgres://u:p@db.example:5433/tokend",
    ],
)
def test_plain_postgresql_url_gets_psycopg(url: str) -> None:
    out = make_url(normalize_url(url))
    assert out.drivername == "postgresql+psycopg"
    assert (out.username, out.password, out.host, out.port, out.database) == (
        "u",
        "p",
        "db.example",
        5433,
        "tokend",
    )


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://u@h/d", "sqlite:///x.db", "sqlite://"],
)
def test_other_urls_unchanged(url: str) -> None:
    assert normalize_url(url) == url


def test_engine_dialect(engine: Engine, db_url: str) -> None:
    if is_sqlite(db_url):
        assert engine.dialect.name == "sqlite"
    else:
        assert db_url.startswith("postgresql://")  # the fixture gives a plain URL
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as c:
            assert c.execute(text("SELECT 1")).scalar() == 1


# -- data migrations -------------------------------------------------------------------------


def _alembic(engine: Engine, command_name: str, revision: str) -> None:
    """``alembic upgrade|downgrade REVISION`` (``migrate`` always goes to head)."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(engine_mod.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, command_name)(cfg, revision)


def test_0004_adds_dpop_nonce_required_false_for_existing_clients(blank_db_url: str) -> None:
    eng = create_db_engine(blank_db_url)
    try:
        _alembic(eng, "upgrade", "0003")
        assert "dpop_nonce_required" not in {c["name"] for c in inspect(eng).get_columns("clients")}
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO clients (client_id, name, public, grant_types, redirect_uris,"
                    " scope, subject_type, created_at, updated_at) VALUES ('old', 'Old', false,"
                    " 'refresh_token', '[]', 'openid', 'public', 1.0, 1.0)"
                )
            )
        migrate(eng)
        assert _revision(eng) == [_head()]
        with eng.connect() as conn:
            value = conn.execute(
                text("SELECT dpop_nonce_required FROM clients WHERE client_id = 'old'")
            ).scalar_one()
        assert value is False or value == 0
        from tokend.store import SqlStore

        client = SqlStore(eng).get_client("old")
        assert client is not None and client.dpop_nonce_required is False
        # And back: the downgrade drops the column, keeping the client.
        _alembic(eng, "downgrade", "0003")
        assert "dpop_nonce_required" not in {c["name"] for c in inspect(eng).get_columns("clients")}
        with eng.connect() as conn:
            assert conn.execute(text("SELECT client_id FROM clients")).scalars().all() == ["old"]
    finally:
        eng.dispose()


def test_0005_adds_grace_uses_zero_for_existing_refresh_tokens(blank_db_url: str) -> None:
    """Tokens stored before 0005 start with no grace retry counted, and still rotate."""
    eng = create_db_engine(blank_db_url)
    try:
        _alembic(eng, "upgrade", "0004")
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO clients (client_id, name, public, grant_types, redirect_uris,"
                    " scope, subject_type, created_at, updated_at) VALUES ('c', 'C', false,"
                    " 'refresh_token', '[]', 'openid', 'public', 1.0, 1.0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, email_verified,"
                    " phone_number_verified, created_at, updated_at)"
                    " VALUES ('u', 'alice', 'x', false, false, 1.0, 1.0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO token_families (id, client_id, user_id, subject, scope,"
                    " created_at, expires_at) VALUES ('f', 'c', 'u', 'alice', 'openid', 1.0, 9e9)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at,"
                    " spent_at, successor_hash) VALUES (:h, 'f', 1.0, 9e9, 2.0, :s)"
                ),
                {"h": b"h" * 32, "s": b"s" * 32},
            )
        migrate(eng)
        assert _revision(eng) == [_head()]
        from tokend.store import SqlStore

        store = SqlStore(eng)
        with store.transaction() as tx:
            assert tx.count_grace_retry(b"h" * 32, limit=1) is True
            assert tx.count_grace_retry(b"h" * 32, limit=1) is False
        _alembic(eng, "downgrade", "0004")
        columns = {c["name"] for c in inspect(eng).get_columns("refresh_tokens")}
        assert "grace_uses" not in columns
        with eng.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM refresh_tokens")).scalar_one() == 1
    finally:
        eng.dispose()


def test_0006_adds_abuse_counters_and_counts_existing_events_once(blank_db_url: str) -> None:
    eng = create_db_engine(blank_db_url)
    try:
        _alembic(eng, "upgrade", "0005")
        assert "abuse_counters" not in inspect(eng).get_table_names()
        with eng.begin() as conn:
            conn.execute(
                text("INSERT INTO security_events (at, kind, detail) VALUES (1.5, 'old', '{}')")
            )
        migrate(eng)
        assert _revision(eng) == [_head()] and _diff(eng) == []
        with eng.connect() as conn:
            assert conn.execute(text("SELECT count FROM security_events")).scalar_one() == 1
        # And back: the downgrade drops the table and the column, keeping the event.
        _alembic(eng, "downgrade", "0005")
        assert "abuse_counters" not in inspect(eng).get_table_names()
        assert "count" not in {c["name"] for c in inspect(eng).get_columns("security_events")}
        with eng.connect() as conn:
            assert conn.execute(text("SELECT kind FROM security_events")).scalars().all() == ["old"]
    finally:
        eng.dispose()
