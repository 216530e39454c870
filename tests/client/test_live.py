"""``RefreshingAuth`` against the real ``tokend serve`` on loopback (SQLite): N threads and N
asyncio tasks with an expired token make exactly one refresh (counted at the transport,
i.e. requests that reached the server), and a refresh whose answer is lost is recovered
through the server's grace window (TOKEND_REFRESH_REUSE_GRACE, default 10 s) with the very
successor the server had issued; with no grace window the same loss logs the user out."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.client.support import (
    USERINFO_PATH,
    LosesAnswers,
    Recorder,
    as_client_token,
    bearer_of,
    issue,
    register_client,
    register_user,
)
from tokend.client import (
    AsyncOAuthClient,
    FileTokenStore,
    InvalidGrant,
    MemoryTokenStore,
    OAuthClient,
    RefreshingAuth,
)

pytestmark = pytest.mark.timeout(60)
N = 16


@pytest.fixture
def world(live):  # type: ignore[no-untyped-def]
    rt, base = live
    reg = register_client(rt)
    user = register_user(rt)
    return rt, base, reg, user


def oauth_for(base: str, reg: Any) -> OAuthClient:
    return OAuthClient.from_issuer(base, client_id=reg.client_id, client_secret=reg.secret)


def expired_store(rt: Any, reg: Any, user: Any) -> tuple[Any, MemoryTokenStore]:
    family = issue(rt, reg, user)
    return family, MemoryTokenStore(as_client_token(family, expires_at=time.time() - 1))


def test_threads_share_one_refresh(world) -> None:  # type: ignore[no-untyped-def]
    rt, base, reg, user = world
    family, store = expired_store(rt, reg, user)
    recorder = Recorder(httpx.HTTPTransport())
    barrier = threading.Barrier(N)
    with (
        oauth_for(base, reg) as oauth,
        httpx.Client(
            transport=recorder, auth=RefreshingAuth(oauth, store), base_url=base, timeout=30
        ) as api,
    ):

        def call(_: int) -> int:
            barrier.wait()
            return api.get(USERINFO_PATH).status_code

        with ThreadPoolExecutor(N) as pool:
            statuses = list(pool.map(call, range(N)))
    assert statuses == [200] * N
    assert len(recorder.refreshes) == 1, [s.form for s in recorder.refreshes]
    saved = store.load()
    assert saved is not None and saved.refresh_token != family.refresh_token
    assert {bearer_of(s) for s in recorder.to(USERINFO_PATH)} == {saved.access_token}


def test_tasks_share_one_refresh(world) -> None:  # type: ignore[no-untyped-def]
    rt, base, reg, user = world
    family, store = expired_store(rt, reg, user)
    recorder = Recorder(httpx.AsyncHTTPTransport())

    async def run() -> list[int]:
        oauth = await AsyncOAuthClient.from_issuer(
            base, client_id=reg.client_id, client_secret=reg.secret
        )
        async with (
            oauth,
            httpx.AsyncClient(
                transport=recorder, auth=RefreshingAuth(oauth, store), base_url=base, timeout=30
            ) as api,
        ):
            responses = await asyncio.gather(*(api.get(USERINFO_PATH) for _ in range(N)))
        return [r.status_code for r in responses]

    assert asyncio.run(run()) == [200] * N
    assert len(recorder.refreshes) == 1, [s.form for s in recorder.refreshes]
    saved = store.load()
    assert saved is not None and saved.refresh_token != family.refresh_token
    assert {bearer_of(s) for s in recorder.to(USERINFO_PATH)} == {saved.access_token}


@dataclass
class Outcome:
    lost: list[dict[str, Any]]  # the token endpoint answers that never reached the client
    recorder: Recorder
    error: InvalidGrant | None  # what the second call raised, if anything


def lose_then_retry(mode: str, base: str, reg: Any, store: Any) -> Outcome:
    """An API call whose refresh answer is lost on the way back (the call fails with the
    transport error and nothing is saved), then the same call again."""
    outcome = Outcome([], Recorder(None), None)

    def check_nothing_saved() -> None:
        presented = outcome.recorder.refreshes[0].form["refresh_token"]
        assert store.load().refresh_token == presented

    if mode == "sync":
        lossy = LosesAnswers(httpx.HTTPTransport())
        outcome.recorder.inner, outcome.lost = lossy, lossy.lost
        with (
            oauth_for(base, reg) as oauth,
            httpx.Client(
                transport=outcome.recorder, auth=RefreshingAuth(oauth, store), base_url=base
            ) as api,
        ):
            with pytest.raises(httpx.ReadError):
                api.get(USERINFO_PATH)
            check_nothing_saved()
            try:
                assert api.get(USERINFO_PATH).status_code == 200
            except InvalidGrant as exc:
                outcome.error = exc
        return outcome

    async def run() -> None:
        lossy = LosesAnswers(httpx.AsyncHTTPTransport())
        outcome.recorder.inner, outcome.lost = lossy, lossy.lost
        oauth = await AsyncOAuthClient.from_issuer(
            base, client_id=reg.client_id, client_secret=reg.secret
        )
        async with (
            oauth,
            httpx.AsyncClient(
                transport=outcome.recorder, auth=RefreshingAuth(oauth, store), base_url=base
            ) as api,
        ):
            with pytest.raises(httpx.ReadError):
                await api.get(USERINFO_PATH)
            check_nothing_saved()
            try:
                assert (await api.get(USERINFO_PATH)).status_code == 200
            except InvalidGrant as exc:
                outcome.error = exc

    asyncio.run(run())
    return outcome


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_lost_refresh_answer_recovers_the_same_successor(world, tmp_path, mode) -> None:  # type: ignore[no-untyped-def]
    rt, base, reg, user = world
    family = issue(rt, reg, user)
    store = FileTokenStore(tmp_path / "token.json")
    store.save(as_client_token(family, expires_at=time.time() - 1))

    outcome = lose_then_retry(mode, base, reg, store)

    assert outcome.error is None
    (lost,) = outcome.lost
    assert lost["status"] == 200  # the server did rotate: the answer was lost on the way back
    first, second = outcome.recorder.refreshes
    # The retry presented the same (now spent) refresh token ...
    assert first.form["refresh_token"] == second.form["refresh_token"] == family.refresh_token
    # ... and got the very successor whose answer was lost, which is what was saved.
    saved = store.load()
    assert saved.refresh_token == lost["refresh_token"]
    assert bearer_of(outcome.recorder.to(USERINFO_PATH)[-1]) == saved.access_token
    # The family is healthy: the successor refreshes normally.
    with oauth_for(base, reg) as oauth:
        assert oauth.refresh(saved.refresh_token).refresh_token


def test_without_grace_window_a_lost_answer_logs_the_user_out(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The control experiment: the same loss with this client's grace set to 0. The retry is
    reuse of a spent token; the server revokes the family. Recovery above is the grace
    window's doing, not luck."""
    rt, base, _, user = world
    reg = register_client(rt, refresh_grace=0)
    family = issue(rt, reg, user)
    store = FileTokenStore(tmp_path / "token.json")
    store.save(as_client_token(family, expires_at=time.time() - 1))

    outcome = lose_then_retry("sync", base, reg, store)

    assert isinstance(outcome.error, InvalidGrant)
    (lost,) = outcome.lost
    with oauth_for(base, reg) as oauth, pytest.raises(InvalidGrant):
        oauth.refresh(lost["refresh_token"])  # the whole family is revoked
