"""Shared fixtures. Every storage-touching test runs on SQLite and on a real PostgreSQL that
this test run starts itself (TOKEND_TEST_BACKENDS=sqlite limits a local run to SQLite)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from tests.support.postgres import PostgresServer
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.models import Client, TokenResponse, User
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret, new_id
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


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tokend.db'}"
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


@dataclass
class RegisteredClient:
    client: Client
    secret: str | None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def basic(self) -> tuple[str, str]:
        assert self.secret is not None
        return (self.client_id, self.secret)


@pytest.fixture
def make_client(rt: Runtime) -> Callable[..., RegisteredClient]:
    def make(
        *,
        public: bool = False,
        scopes: str = "openid offline email profile",
        grant_types: tuple[str, ...] = (
            "authorization_code",
            "refresh_token",
            "client_credentials",
        ),
        **overrides: object,
    ) -> RegisteredClient:
        secret = None if public else new_client_secret()
        client = Client(
            client_id=new_client_id(),
            name="test client",
            public=public,
            secret_hash=None if secret is None else hash_secret(secret),
            grant_types=frozenset(
                g for g in grant_types if not (public and g == "client_credentials")
            ),
            redirect_uris=("https://app.example/cb",),
            scopes=tuple(scopes.split()),
            **overrides,  # type: ignore[arg-type]
        )
        rt.store.create_client(client, now=rt.clock.now())
        return RegisteredClient(client, secret)

    return make


@pytest.fixture
def user(rt: Runtime) -> User:
    u = User(id=new_id(), username=f"alice{new_id()[:6]}", password_hash="$argon2id$unused")
    rt.store.create_user(u, now=rt.clock.now())
    return u


@pytest.fixture
def issue(rt: Runtime, user: User) -> Callable[..., TokenResponse]:
    """Start a family for ``user`` as if they had completed the authorize step."""

    def do(reg: RegisteredClient, scopes: str = "openid offline") -> TokenResponse:
        return rt.issuer.issue(
            client=reg.client,
            user_id=user.id,
            subject=rt.subjects.subject(reg.client, user.id),
            scopes=tuple(scopes.split()),
            now=rt.clock.now(),
        )

    return do
