"""Shared fixtures. Every storage-touching test runs on SQLite and on a real PostgreSQL that
this test run starts itself (TOKEND_TEST_BACKENDS=sqlite limits a local run to SQLite)."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.family import RegisteredClient, register_client, register_user, start_family
from tests.support.postgres import PostgresServer
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.models import TokenResponse, User
from tokend.core.secrets import new_id
from tokend.runtime import Runtime, build_runtime
from tokend.store.engine import create_db_engine, migrate

BACKENDS = [b.strip() for b in os.environ.get("TOKEND_TEST_BACKENDS", "sqlite,postgres").split(",")]
SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"
ISSUER = "https://issuer.test"
TEMPLATE_DB = "tokend_template"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        engine = create_db_engine(server.url("postgres"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"CREATE DATABASE {TEMPLATE_DB}"))
        engine.dispose()
        template = create_db_engine(server.url(TEMPLATE_DB))
        migrate(template)
        template.dispose()
        yield server
    finally:
        server.stop()


def new_postgres_database(server: PostgresServer) -> str:
    name = f"t{os.getpid()}_{next(_db_counter)}"
    engine = create_db_engine(server.url("postgres"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    engine.dispose()
    return server.url(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, made once; ``db_url`` copies it as PostgreSQL clones
    TEMPLATE_DB (migrating a new file costs ~0.4 s, copying it ~1 ms)."""
    path = tmp_path_factory.mktemp("template") / "tokend.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    # Closed cleanly: everything is in the main file (WAL mode stays set in its header).
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A new migrated database for the test (no keys, clients or users yet); see
    ``blank_db_url`` (tests/store) for one without tables."""
    if request.param == "sqlite":
        path = tmp_path / "tokend.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    if request.param == "postgres":
        return new_postgres_database(request.getfixturevalue("postgres"))
    raise ValueError(f"unknown backend {request.param}")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, secret_key=SECRET_KEY, issuer=ISSUER)


@pytest.fixture
def rt(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    runtime = build_runtime(settings, clock=clock, prepare=True)
    yield runtime
    runtime.close()


@pytest.fixture
def make_client(rt: Runtime) -> Callable[..., RegisteredClient]:
    """Registers a client on ``rt`` (confidential unless ``public``; see register_client)."""

    def make(**kwargs: Any) -> RegisteredClient:
        return register_client(rt, **kwargs)

    return make


@pytest.fixture
def user(rt: Runtime) -> User:
    return register_user(rt, username=f"alice{new_id()[:6]}")


@pytest.fixture
def issue(rt: Runtime, user: User) -> Callable[..., TokenResponse]:
    """Start a family for ``user`` as if they had completed the authorize step."""

    def do(reg: RegisteredClient, scopes: str = "openid offline") -> TokenResponse:
        return start_family(rt, reg, user, scopes)

    return do


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, str]]:
    """The real ``tokend serve`` on loopback (SQLite), started once for the run (the client
    library's live tests and the interop tests share it; each makes its own clients and
    users), and a runtime on its database and issuer for setting up clients, users and
    families."""
    from tests.client.support import live_tokend  # it imports this module

    with live_tokend(tmp_path_factory.mktemp("live")) as (runtime, base):
        yield runtime, base
