"""``RefreshingAuth`` with sync and async httpx clients against the real app (in-process):
Bearer header, refresh before expiry (configurable skew), refresh-once-and-retry on 401,
the rotated token saved before it is used, the store left alone when a refresh fails, and
sync/async stores. Concurrency and lost answers on the real server: test_live.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.client.conftest import USERINFO
from tests.client.support import (
    TOKEN_PATH,
    USERINFO_PATH,
    EventLogStore,
    Recorder,
    SyncASGITransport,
    as_client_token,
    bearer_of,
)
from tests.conftest import ISSUER, SECRET_KEY
from tokend.client import (
    InvalidGrant,
    MemoryTokenStore,
    MissingToken,
    OAuthClient,
    RefreshingAuth,
    TokenResponse,
)
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.runtime import build_runtime
from tokend.web.app import create_app

FOREIGN_API = "https://api.test/auth/v2/users/retrieve"


class Hosts(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Sends each request to the transport of its host."""

    def __init__(self, by_host: dict[str, Any]) -> None:
        self.by_host = by_host

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.by_host[request.url.host].handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.by_host[request.url.host].handle_async_request(request)


@pytest.fixture(scope="module")
def foreign_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Another tokend (own issuer, own keys) as an API that accepts none of our tokens: its
    userinfo answers 401 invalid_token to every one of them."""
    url = f"sqlite:///{tmp_path_factory.mktemp('foreign') / 'tokend.db'}"
    settings = Settings(database_url=url, secret_key=SECRET_KEY, issuer="https://api.test")
    runtime = build_runtime(settings, clock=FrozenClock(), prepare=True)
    yield create_app(settings, runtime=runtime)
    runtime.close()


class Api:
    """Runs requests through an httpx client (sync or async) with the auth under test."""

    def __init__(self, mode: str, app: Any, foreign: Any, portal: Any) -> None:
        self.mode = mode
        self.log: list[str] = []
        if mode == "sync":
            hosts = {"issuer.test": SyncASGITransport(app, portal)}
            hosts["api.test"] = SyncASGITransport(foreign, portal)
        else:
            hosts = {"issuer.test": httpx.ASGITransport(app)}
            hosts["api.test"] = httpx.ASGITransport(foreign)
        self.recorder = Recorder(Hosts(hosts), self.log)

    def run(self, auth: httpx.Auth, *requests: tuple[str, str, dict[str, Any]]) -> list[Any]:
        if self.mode == "sync":
            with httpx.Client(transport=self.recorder, auth=auth) as client:
                return [client.request(m, u, **kw) for m, u, kw in requests]

        async def go() -> list[Any]:
            async with httpx.AsyncClient(transport=self.recorder, auth=auth) as client:
                return [await client.request(m, u, **kw) for m, u, kw in requests]

        return asyncio.run(go())

    def get(self, auth: httpx.Auth, url: str = USERINFO) -> httpx.Response:
        return self.run(auth, ("GET", url, {}))[0]

    @property
    def api_calls(self) -> list[Any]:
        return [s for s in self.recorder.sent if s.path == USERINFO_PATH]


@pytest.fixture(params=["sync", "async"])
def api(request, app, foreign_app, portal) -> Api:  # type: ignore[no-untyped-def]
    return Api(request.param, app, foreign_app, portal)


@pytest.fixture
def oauth(http, reg) -> OAuthClient:  # type: ignore[no-untyped-def]
    return OAuthClient.from_issuer(
        ISSUER, client_id=reg.client_id, client_secret=reg.secret, http_client=http
    )


def store_with(family: Any, api: Api, **changes: Any) -> EventLogStore:
    token = as_client_token(family, expires_at=changes.pop("expires_at", time.time() + 3600))
    return EventLogStore(MemoryTokenStore(dataclasses.replace(token, **changes)), api.log)


def test_fresh_token_is_sent_as_bearer_without_refreshing(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api)
    r = api.get(RefreshingAuth(oauth, store))
    assert r.status_code == 200, r.text
    assert api.recorder.refreshes == []
    assert bearer_of(api.api_calls[0]) == family.access_token
    assert store.load() == store.inner.load()  # untouched


def test_expired_token_is_refreshed_and_saved_before_use(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api, expires_at=time.time() - 1)
    r = api.get(RefreshingAuth(oauth, store))
    assert r.status_code == 200, r.text
    (refresh,) = api.recorder.refreshes
    assert refresh.form["refresh_token"] == family.refresh_token
    saved = store.load()
    assert saved is not None and saved.refresh_token not in (None, family.refresh_token)
    assert saved.expires_at is not None and saved.expires_at > time.time() + 3000
    assert bearer_of(api.api_calls[0]) == saved.access_token
    # Order: the token endpoint answered, the store saved, and only then the API was called.
    assert api.log == [f"POST {TOKEN_PATH}", f"save {saved.access_token}", f"GET {USERINFO_PATH}"]


@pytest.mark.parametrize(
    ("expires_in", "skew", "refreshes"),
    [(100, 30, 0), (100, 120, 1), (31, 30, 0), (30, 30, 1), (-5, 0, 1)],
    ids=["well before", "inside a long skew", "just outside", "at the skew", "expired"],
)
def test_refresh_happens_skew_seconds_before_expiry(  # type: ignore[no-untyped-def]
    api, oauth, family, expires_in, skew, refreshes
) -> None:
    now = 2_000_000_000.0
    store = store_with(family, api, expires_at=now + expires_in)
    auth = RefreshingAuth(oauth, store, skew=skew, clock=lambda: now)
    assert api.get(auth).status_code == 200
    assert len(api.recorder.refreshes) == refreshes


def test_401_refreshes_once_and_retries_with_the_same_body(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api, access_token="not-a-valid-token")
    (r,) = api.run(RefreshingAuth(oauth, store), ("POST", USERINFO, {"data": {"note": "x y"}}))
    assert r.status_code == 200, r.text
    assert len(api.recorder.refreshes) == 1
    first, retry = api.api_calls
    assert bearer_of(first) == "not-a-valid-token"
    assert bearer_of(retry) == store.load().access_token
    assert first.body == retry.body == b"note=x+y"


def test_401_after_a_refresh_is_returned_not_looped(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api)
    r = api.get(RefreshingAuth(oauth, store), FOREIGN_API)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
    assert len(api.recorder.refreshes) == 1
    assert len(api.api_calls) == 2


def test_401_without_a_refresh_token_is_returned(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api, refresh_token=None)
    assert api.get(RefreshingAuth(oauth, store), FOREIGN_API).status_code == 401
    assert api.recorder.refreshes == [] and len(api.api_calls) == 1


def test_expired_token_without_refresh_token_is_sent_as_is(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api, refresh_token=None, expires_at=time.time() - 1)
    assert api.get(RefreshingAuth(oauth, store)).status_code == 200  # the server's clock rules
    assert api.recorder.refreshes == []


def test_empty_store_is_missing_token(api, oauth) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MissingToken):
        api.get(RefreshingAuth(oauth, MemoryTokenStore()))
    assert api.recorder.sent == []


def test_revoked_family_raises_invalid_grant_and_keeps_the_store(
    api, oauth, rt, reg, family
) -> None:  # type: ignore[no-untyped-def]
    rt.store.revoke_families(now=rt.clock.now(), reason="test", client_id=reg.client_id)
    store = store_with(family, api, expires_at=time.time() - 1)
    before = store.load()
    with pytest.raises(InvalidGrant):
        api.get(RefreshingAuth(oauth, store))
    assert store.load() == before
    assert api.api_calls == []


def test_failed_save_means_the_new_token_is_never_used(api, oauth, family) -> None:  # type: ignore[no-untyped-def]
    store = store_with(family, api, expires_at=time.time() - 1)
    store.fail = OSError(28, "No space left on device")
    auth = RefreshingAuth(oauth, store)
    with pytest.raises(OSError, match="No space"):
        api.get(auth)
    assert api.api_calls == []  # the successor was never handed out
    assert store.load().refresh_token == family.refresh_token
    # Disk freed: the same (spent) refresh token is presented again, and the server's grace
    # window answers with its successor instead of treating it as reuse.
    store.fail = None
    assert api.get(auth).status_code == 200
    first, second = api.recorder.refreshes
    assert first.form["refresh_token"] == second.form["refresh_token"] == family.refresh_token
    assert oauth.refresh(store.load().refresh_token).refresh_token  # the family is alive


class AsyncStore:
    """An ``AsyncTokenStore`` (say, an async database driver)."""

    def __init__(self, token: TokenResponse) -> None:
        self.token = token
        self.saves = 0

    async def load(self) -> TokenResponse:
        await asyncio.sleep(0)
        return self.token

    async def save(self, token: TokenResponse) -> None:
        await asyncio.sleep(0)
        self.token = token
        self.saves += 1


def test_async_store_with_async_client(app, foreign_app, portal, oauth, family) -> None:  # type: ignore[no-untyped-def]
    api = Api("async", app, foreign_app, portal)
    store = AsyncStore(as_client_token(family, expires_at=time.time() - 1))
    assert api.get(RefreshingAuth(oauth, store)).status_code == 200
    assert store.saves == 1 and store.token.refresh_token != family.refresh_token
    with pytest.raises(TypeError, match="async store"):
        Api("sync", app, foreign_app, portal).get(RefreshingAuth(oauth, store))


def test_a_response_without_refresh_token_keeps_the_old_one() -> None:
    """RFC 6749 §6: the server MAY issue a new refresh token; when it does not (tokend always
    does, so this is the parser alone), the old one stays in use."""
    old = TokenResponse.from_response(
        {"access_token": "a1", "token_type": "Bearer", "refresh_token": "r1"}
    )
    response = httpx.Response(200, json={"access_token": "a2", "token_type": "Bearer"})
    new = RefreshingAuth._successor(old, response, sent_at=0.0)
    assert (new.access_token, new.refresh_token) == ("a2", "r1")


class SlowTokenEndpoint(httpx.AsyncBaseTransport):
    """Holds the first token-endpoint request for ``delay`` seconds (a slow network)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, delay: float) -> None:
        self.inner, self.delay, self.held = inner, delay, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH and not self.held:
            self.held += 1
            await asyncio.sleep(self.delay)
        return await self.inner.handle_async_request(request)


def test_cancelled_refresh_releases_the_locks(app, oauth, family) -> None:  # type: ignore[no-untyped-def]
    """A task cancelled while its refresh is in flight (a timeout) must not leave the locks
    held: the next request refreshes and succeeds instead of waiting forever."""
    store = MemoryTokenStore(as_client_token(family, expires_at=time.time() - 1))
    auth = RefreshingAuth(oauth, store)

    async def run() -> int:
        transport = SlowTokenEndpoint(httpx.ASGITransport(app), delay=5)
        async with httpx.AsyncClient(transport=transport, auth=auth) as api:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(api.get(USERINFO), timeout=0.1)
            r = await asyncio.wait_for(api.get(USERINFO), timeout=5)
            return r.status_code

    assert asyncio.run(run()) == 200
    assert store.load().refresh_token != family.refresh_token
