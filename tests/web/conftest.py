from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import BACKENDS, ISSUER, SECRET_KEY, new_postgres_database
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app


def _client(rt: Runtime) -> TestClient:
    app = create_app(rt.settings, runtime=rt)
    return TestClient(app, base_url=ISSUER, raise_server_exceptions=False)


@pytest.fixture
def http(rt: Runtime) -> Iterator[TestClient]:
    """The ASGI app in-process (real routing, parsing and storage; no socket)."""
    with _client(rt) as client:
        yield client


@pytest.fixture(scope="module", params=BACKENDS)
def shared_rt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """One runtime (database, keys, frozen clock) per backend for a whole module.

    For modules with large tables of independent cases: a fresh database and RSA key per
    case cost ~0.3 s on SQLite and ~1 s on PostgreSQL, the requests themselves milliseconds.
    A module opts in by overriding ``rt``/``http``/``clock``/``settings`` with these; its
    cases must then not depend on a pristine database (make their own clients and families).
    """
    runtime = module_runtime(request, tmp_path_factory)
    yield runtime
    runtime.close()


def module_runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, **overrides: Any
) -> Runtime:
    """A runtime on a fresh database of ``request.param``'s backend, for a module's cases,
    with the sign-in and client-auth abuse limits far out of reach (``overrides`` change
    any setting)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('web') / 'tokend.db'}"
    elif request.param == "postgres":
        url = new_postgres_database(request.getfixturevalue("postgres"))
    else:
        raise ValueError(f"unknown backend {request.param}")
    # A module's hundreds of deliberate failures from one test client, under a clock that
    # never moves, would fill the abuse limits meant for one window (tests/web/test_throttle.py
    # tests those): here they are far out of reach.
    far = 1_000_000
    settings = Settings(
        database_url=url,
        secret_key=SECRET_KEY,
        issuer=ISSUER,
        client_auth_failure_limit=far,
        client_auth_address_failure_limit=far,
        login_failure_limit=far,
        login_address_failure_limit=far,
        **overrides,
    )
    return build_runtime(settings, clock=FrozenClock(), prepare=True)


@pytest.fixture(scope="module")
def shared_http(shared_rt: Runtime) -> Iterator[TestClient]:
    with _client(shared_rt) as client:
        yield client


def shared_runtime_fixtures(*, reset_clock: bool = False) -> tuple[Any, Any, Any, Any]:
    """The ``rt``, ``http``, ``settings`` and ``clock`` fixtures of a module that opts in to
    ``shared_rt`` (one runtime per backend for all its cases)::

        rt, http, settings, clock = shared_runtime_fixtures()

    ``reset_clock``: ``clock`` is per case and puts the shared clock back after a case that
    moved it; otherwise it is the module's clock, as the other three are module fixtures."""

    @pytest.fixture(scope="module", name="rt")
    def rt(shared_rt: Runtime) -> Runtime:
        return shared_rt

    @pytest.fixture(scope="module", name="http")
    def http(shared_http: TestClient) -> TestClient:
        return shared_http

    @pytest.fixture(scope="module", name="settings")
    def settings(shared_rt: Runtime) -> Settings:
        return shared_rt.settings

    if reset_clock:

        @pytest.fixture(name="clock")
        def clock(shared_rt: Runtime) -> Iterator[FrozenClock]:
            clock = shared_rt.clock
            start = clock.t
            yield clock
            clock.t = start

    else:

        @pytest.fixture(scope="module", name="clock")
        def clock(shared_rt: Runtime) -> FrozenClock:
            return shared_rt.clock

    return rt, http, settings, clock


def shared_browser_fixtures() -> tuple[Any, Any, Any]:
    """The ``rt``, ``http`` and ``clock`` fixtures of a page module on ``shared_rt``::

        rt, http, clock = shared_browser_fixtures()

    ``http`` is the module's client as a browser: an empty cookie jar at the start and end
    of each case, redirects not followed. ``clock`` is the module's frozen clock."""

    @pytest.fixture(name="rt")
    def rt(shared_rt: Runtime) -> Runtime:
        return shared_rt

    @pytest.fixture(name="http")
    def http(shared_http: TestClient) -> Iterator[TestClient]:
        shared_http.cookies.clear()
        shared_http.follow_redirects = False
        yield shared_http
        shared_http.cookies.clear()

    @pytest.fixture(name="clock")
    def clock(shared_rt: Runtime) -> FrozenClock:
        assert isinstance(shared_rt.clock, FrozenClock)
        return shared_rt.clock

    return rt, http, clock
