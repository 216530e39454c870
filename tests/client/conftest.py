"""The client library's tests run against the real ASGI app in-process: ``httpx.ASGITransport``
for async clients, ``SyncASGITransport`` (an anyio portal) for sync ones. One SQLite
database, signing key and frozen server clock per module; every test registers its own
clients, users and families. The client is storage-agnostic, so SQLite alone suffices.
test_live.py and test_docs.py use the real server on loopback instead (``live``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.applications import Starlette

from tests.client.support import (
    Recorder,
    SyncASGITransport,
    issue,
    register_client,
    register_user,
)
from tests.conftest import ISSUER, SECRET_KEY, RegisteredClient
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.models import User
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app

TOKEN_ENDPOINT = f"{ISSUER}/auth/v2/token"
USERINFO = f"{ISSUER}/auth/v2/users/retrieve"


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'tokend.db'}"
    settings = Settings(database_url=url, secret_key=SECRET_KEY, issuer=ISSUER)
    runtime = build_runtime(settings, clock=FrozenClock(), prepare=True)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def app(rt: Runtime) -> Starlette:
    return create_app(rt.settings, runtime=rt)


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:
        yield p


@pytest.fixture
def recorder(app: Starlette, portal: BlockingPortal) -> Recorder:
    """Every request the sync ``http`` client sends to the app."""
    return Recorder(SyncASGITransport(app, portal))


@pytest.fixture
def http(recorder: Recorder) -> Iterator[httpx.Client]:
    """A sync httpx client whose every request goes to the real app, in-process."""
    with httpx.Client(transport=recorder, base_url=ISSUER) as client:
        yield client


@pytest.fixture
def async_http(app: Starlette) -> Callable[..., httpx.AsyncClient]:
    """Makes async httpx clients on the real app (create them inside the running loop)."""

    def make(recorder: Recorder | None = None, **kwargs: Any) -> httpx.AsyncClient:
        transport: Any = httpx.ASGITransport(app, raise_app_exceptions=False)
        if recorder is not None:
            recorder.inner = transport
            transport = recorder
        return httpx.AsyncClient(transport=transport, base_url=ISSUER, **kwargs)

    return make


@pytest.fixture
def reg(rt: Runtime) -> RegisteredClient:
    return register_client(rt)


@pytest.fixture
def user(rt: Runtime) -> User:
    return register_user(rt, email="alice@example.com", email_verified=True)


@pytest.fixture
def family(rt: Runtime, reg: RegisteredClient, user: User) -> Any:
    """The first token response of a new family (openid offline), as the server minted it."""
    return issue(rt, reg, user)
