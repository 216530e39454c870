"""The device authorization grant (RFC 8628) through the client library, against the real
app in-process (tests/client/conftest.py: one SQLite database, a frozen server clock).

The person's side is the server's own service on the same runtime (``rt.device.pending``,
``approve``, ``deny``: what the /device pages call). Time passes only through the sleep
injected into ``poll_device_token``: each wait moves the server's clock and the client's by
as much, so the interval, ``slow_down`` and expiry are the server's real rules, tested
without waiting real seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.client.conftest import USERINFO
from tests.client.dpop_support import nonce_server, server_key
from tests.client.support import Recorder, SyncASGITransport, register_client
from tests.conftest import ISSUER, RegisteredClient
from tokend.client import (
    AccessDenied,
    AsyncOAuthClient,
    AuthorizationPending,
    DeviceAuthorization,
    EndpointNotSupported,
    ExpiredToken,
    InvalidGrant,
    MemoryTokenStore,
    OAuthClient,
    OAuthError,
    ServerMetadata,
    SlowDown,
    TokenResponse,
    UnauthorizedClient,
)
from tokend.core.clock import FrozenClock
from tokend.core.models import User
from tokend.runtime import Runtime

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_PATH = "/auth/v2/token"
pytestmark = pytest.mark.timeout(60)  # a busy loop (no wait between polls) fails, not hangs
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


class Sleeps:
    """The sleep (and clock) given to ``poll_device_token``: records each wait and moves the
    server's frozen clock and the client's clock by it, then runs the next scripted step
    (what the person, or anything else, does while the device waits)."""

    def __init__(self, server_clock: Any, steps: list[Callable[[], object]] | None = None):
        assert isinstance(server_clock, FrozenClock)
        self.server_clock = server_clock
        self.steps = list(steps or [])
        self.waits: list[float] = []
        self.now = time.time()

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.server_clock.advance(seconds)
        if self.steps:
            self.steps.pop(0)()

    async def asleep(self, seconds: float) -> None:
        self(seconds)

    def clock(self) -> float:
        return self.now


def nothing() -> None:
    return None


@pytest.fixture
def device_client(rt: Runtime) -> RegisteredClient:
    """A public client registered for the device grant (a TV app, a CLI)."""
    return register_client(
        rt, public=True, grant_types=(DEVICE_GRANT, "refresh_token"), scopes="openid offline"
    )


@pytest.fixture
def oauth(http: httpx.Client, device_client: RegisteredClient) -> Iterator[OAuthClient]:
    with OAuthClient.from_issuer(ISSUER, client_id=device_client.client_id, http_client=http) as c:
        yield c


def approve(rt: Runtime, authorization: DeviceAuthorization, user: User) -> None:
    """The person types the user code on /device, signs in and allows."""
    pending = rt.device.pending(authorization.user_code)
    assert pending is not None
    assert rt.device.approve(
        pending.id, user_id=user.id, auth_time=rt.clock.now(), address="192.0.2.7"
    )


def deny(rt: Runtime, authorization: DeviceAuthorization) -> None:
    pending = rt.device.pending(authorization.user_code)
    assert pending is not None
    assert rt.device.deny(pending.id, address="192.0.2.7")


def polls(recorder: Recorder) -> list[dict[str, str]]:
    return [s.form for s in recorder.to(TOKEN_PATH) if s.form.get("grant_type") == DEVICE_GRANT]


# -- the device authorization request (§3.1-3.2) ------------------------------------------


def test_device_authorization_answers_what_the_device_shows(
    oauth: OAuthClient, recorder: Recorder, device_client: RegisteredClient
) -> None:
    assert oauth.metadata.device_authorization_endpoint == f"{ISSUER}/auth/v2/device/authorize"
    before = time.time()
    authorization = oauth.device_authorization(scope="openid offline")
    assert USER_CODE.match(authorization.user_code), authorization.user_code
    assert authorization.verification_uri == f"{ISSUER}/device"
    complete = httpx.URL(authorization.verification_uri_complete or "")
    assert str(complete.copy_with(query=None)) == f"{ISSUER}/device"
    assert complete.params["user_code"] == authorization.user_code
    assert authorization.expires_in == 600 and authorization.interval == 5
    assert before + 600 <= authorization.expires_at <= time.time() + 600
    # A public client identifies itself by client_id (RFC 8628 §3.1), and never leaks codes.
    (sent,) = recorder.to("/auth/v2/device/authorize")
    assert sent.form == {"client_id": device_client.client_id, "scope": "openid offline"}
    assert sent.authorization is None
    shown = repr(authorization)
    assert authorization.device_code not in shown and authorization.user_code not in shown


def test_a_confidential_client_authenticates_as_at_the_token_endpoint(
    rt: Runtime, http: httpx.Client, recorder: Recorder
) -> None:
    reg = register_client(rt, grant_types=(DEVICE_GRANT,), scopes="openid")
    with OAuthClient.from_issuer(
        ISSUER, client_id=reg.client_id, client_secret=reg.secret, http_client=http
    ) as oauth:
        authorization = oauth.device_authorization(scope="openid")
    (sent,) = recorder.to("/auth/v2/device/authorize")
    assert sent.authorization is not None and sent.authorization.startswith("Basic ")
    assert "client_secret" not in sent.form
    assert rt.device.pending(authorization.user_code) is not None
    # A wrong secret is refused before any authorization is made.
    with (
        OAuthClient.from_issuer(
            ISSUER, client_id=reg.client_id, client_secret="wrong" * 8, http_client=http
        ) as oauth,
        pytest.raises(OAuthError) as info,
    ):
        oauth.device_authorization(scope="openid")
    assert info.value.error == "invalid_client"


def test_a_client_not_registered_for_the_grant_is_refused(rt: Runtime, http: httpx.Client) -> None:
    reg = register_client(rt, public=True)  # authorization_code and refresh_token only
    with (
        OAuthClient.from_issuer(ISSUER, client_id=reg.client_id, http_client=http) as oauth,
        pytest.raises(UnauthorizedClient),
    ):
        oauth.device_authorization(scope="openid")


def test_a_server_without_the_endpoint(http: httpx.Client) -> None:
    metadata = ServerMetadata(issuer=ISSUER, token_endpoint=f"{ISSUER}{TOKEN_PATH}")
    with pytest.raises(EndpointNotSupported):
        OAuthClient(metadata, client_id="x", http_client=http).device_authorization()


# -- polling (§3.4-3.5) ---------------------------------------------------------------------


def test_pending_then_approved_gives_tokens_that_refresh(
    rt: Runtime, oauth: OAuthClient, recorder: Recorder, user: User
) -> None:
    authorization = oauth.device_authorization(scope="openid offline")
    # The person takes two intervals to approve: the device hears authorization_pending.
    sleeps = Sleeps(rt.clock, [nothing, nothing, lambda: approve(rt, authorization, user)])

    tokens = oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)

    assert isinstance(tokens, TokenResponse) and tokens.token_type == "Bearer"
    assert tokens.scopes == ("openid", "offline") and tokens.id_token and tokens.refresh_token
    assert sleeps.waits == [5.0, 5.0, 5.0]  # waited the interval before every poll
    assert [p["device_code"] for p in polls(recorder)] == [authorization.device_code] * 3
    assert oauth.userinfo(tokens)["sub"]
    # The refresh token is a normal one, and the tokens plug into RefreshingAuth.
    store = MemoryTokenStore(dataclasses.replace(tokens, expires_at=time.time() - 1))
    with httpx.Client(transport=recorder, base_url=ISSUER, auth=oauth.auth(store)) as api:
        assert api.get(USERINFO).status_code == 200
    refreshed = store.load()
    assert refreshed is not None and refreshed.refresh_token not in (None, tokens.refresh_token)
    # The device code was redeemed once: presenting it again gives nothing.
    with pytest.raises(InvalidGrant):
        oauth.exchange_device_code(authorization.device_code)


def test_one_poll_raises_authorization_pending(rt: Runtime, oauth: OAuthClient) -> None:
    authorization = oauth.device_authorization()
    with pytest.raises(AuthorizationPending) as info:
        oauth.exchange_device_code(authorization.device_code)
    assert info.value.status_code == 400


def test_slow_down_makes_this_and_every_later_wait_5_seconds_longer(
    rt: Runtime, oauth: OAuthClient, recorder: Recorder, user: User
) -> None:
    """Another poll of the same device code slips in right before ours (a second copy of
    the app, a retry): the server answers ours slow_down, and from then on the device waits
    10 s, which the server accepts (no second slow_down)."""
    authorization = oauth.device_authorization(scope="openid")
    answers: list[OAuthError] = []

    def poll_in_between() -> None:
        with pytest.raises(AuthorizationPending) as info:
            oauth.exchange_device_code(authorization.device_code)
        answers.append(info.value)

    sleeps = Sleeps(
        rt.clock, [poll_in_between, nothing, nothing, lambda: approve(rt, authorization, user)]
    )
    tokens = oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)

    assert tokens.access_token and len(answers) == 1
    assert sleeps.waits == [5.0, 10.0, 10.0, 10.0]
    assert len(polls(recorder)) == 5  # the one in between, then slow_down, pending x2, tokens


def test_slow_down_is_a_typed_error_of_one_poll(rt: Runtime, oauth: OAuthClient) -> None:
    authorization = oauth.device_authorization()
    with pytest.raises(AuthorizationPending):
        oauth.exchange_device_code(authorization.device_code)
    with pytest.raises(SlowDown):  # again at once: faster than the interval
        oauth.exchange_device_code(authorization.device_code)


def test_denied(rt: Runtime, oauth: OAuthClient, recorder: Recorder) -> None:
    authorization = oauth.device_authorization(scope="openid")
    sleeps = Sleeps(rt.clock, [nothing, lambda: deny(rt, authorization)])
    with pytest.raises(AccessDenied) as info:
        oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)
    assert info.value.status_code == 400
    assert sleeps.waits == [5.0, 5.0] and len(polls(recorder)) == 2  # no poll after the answer


def test_expired_at_the_server(rt: Runtime, oauth: OAuthClient, recorder: Recorder) -> None:
    """The server's clock passes the device code's lifetime while the client's does not (a
    client clock behind): the server's expired_token ends the polling."""
    authorization = oauth.device_authorization(scope="openid")
    sleeps = Sleeps(rt.clock, [nothing, lambda: rt.clock.advance(600)])  # type: ignore[attr-defined]
    with pytest.raises(ExpiredToken) as info:
        oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)
    assert info.value.status_code == 400  # the server's answer
    assert len(polls(recorder)) == 2


def test_the_client_stops_polling_at_the_expiry(
    rt: Runtime, oauth: OAuthClient, recorder: Recorder
) -> None:
    """With nobody approving, the device polls every 5 s until its own clock reaches
    ``expires_at``, then stops without asking the server again."""
    authorization = oauth.device_authorization(scope="openid")
    sleeps = Sleeps(rt.clock)
    sleeps.now = authorization.expires_at - 12  # the device was asleep most of the time
    with pytest.raises(ExpiredToken) as info:
        oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)
    assert info.value.status_code is None  # the client's own decision
    assert sleeps.waits == [5.0, 5.0, 5.0]
    assert len(polls(recorder)) == 2  # at -7 and -2; after the third wait it is too late


def test_an_expired_authorization_is_not_polled(oauth: OAuthClient, recorder: Recorder) -> None:
    authorization = oauth.device_authorization(scope="openid")
    late = dataclasses.replace(authorization, expires_at=time.time() - 1)
    waits: list[float] = []
    with pytest.raises(ExpiredToken):
        oauth.poll_device_token(late, sleep=waits.append)
    assert waits == [] and polls(recorder) == []


def test_a_lost_connection_doubles_the_interval(
    rt: Runtime, app: Any, portal: Any, device_client: RegisteredClient, user: User
) -> None:
    """RFC 8628 §3.5: on a connection timeout the client polls less often (doubling)."""

    class TimesOutOnce(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = SyncASGITransport(app, portal)
            self.failed = False

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == TOKEN_PATH and not self.failed:
                self.failed = True
                raise httpx.ConnectTimeout("timed out", request=request)
            return self.inner.handle_request(request)

    with (
        httpx.Client(transport=TimesOutOnce(), base_url=ISSUER) as http,
        OAuthClient.from_issuer(ISSUER, client_id=device_client.client_id, http_client=http) as o,
    ):
        authorization = o.device_authorization(scope="openid")
        sleeps = Sleeps(rt.clock, [nothing, nothing, lambda: approve(rt, authorization, user)])
        assert o.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock).access_token
    assert sleeps.waits == [5.0, 10.0, 10.0]


class ProofsSeen(httpx.BaseTransport):
    """The real app in-process; keeps the DPoP header of every token request."""

    def __init__(self, app: Any, portal: Any) -> None:
        self.inner = SyncASGITransport(app, portal)
        self.proofs: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            self.proofs.append(request.headers.get("DPoP"))
        return self.inner.handle_request(request)


def test_dpop_binds_the_device_tokens(
    rt: Runtime, app: Any, portal: Any, http: httpx.Client, user: User
) -> None:
    """With a ``dpop_key`` every poll carries a fresh proof (its own ``jti``), the tokens
    are DPoP-bound, and so is the refresh token of this public client."""
    reg = register_client(
        rt, public=True, grant_types=(DEVICE_GRANT, "refresh_token"), scopes="openid offline"
    )
    seen = ProofsSeen(app, portal)
    with (
        httpx.Client(transport=seen, base_url=ISSUER) as traced,
        OAuthClient.from_issuer(
            ISSUER, client_id=reg.client_id, http_client=traced, dpop_key=server_key(rt)
        ) as oauth,
    ):
        authorization = oauth.device_authorization(scope="openid offline")
        sleeps = Sleeps(rt.clock, [nothing, lambda: approve(rt, authorization, user)])
        tokens = oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)
        assert tokens.token_type == "DPoP"
        assert oauth.userinfo(tokens)["sub"]  # the DPoP scheme, a proof with ath
        assert len(seen.proofs) == 2 and None not in seen.proofs
        assert seen.proofs[0] != seen.proofs[1]
        refreshed = oauth.refresh(tokens.refresh_token or "")
        assert refreshed.token_type == "DPoP"
    # The refresh token is bound to the key: presented without a proof, it is refused.
    with (
        OAuthClient.from_issuer(ISSUER, client_id=reg.client_id, http_client=http) as bare,
        pytest.raises(OAuthError),
    ):
        bare.refresh(refreshed.refresh_token or "")


def test_dpop_polls_with_the_server_nonce(rt: Runtime, user: User) -> None:
    """A server that requires DPoP nonces (TOKEND_DPOP_NONCE=on) answers the first poll
    use_dpop_nonce; the client retries that poll once with the nonce, and the retry counts
    as the poll (authorization_pending, then the tokens), not as a poll too fast."""
    reg = register_client(
        rt, public=True, grant_types=(DEVICE_GRANT, "refresh_token"), scopes="openid offline"
    )
    with (
        nonce_server(rt) as http,
        OAuthClient.from_issuer(
            ISSUER, client_id=reg.client_id, http_client=http, dpop_key=server_key(rt)
        ) as oauth,
    ):
        authorization = oauth.device_authorization(scope="openid offline")
        sleeps = Sleeps(rt.clock, [nothing, lambda: approve(rt, authorization, user)])
        tokens = oauth.poll_device_token(authorization, sleep=sleeps, clock=sleeps.clock)
    assert tokens.token_type == "DPoP" and sleeps.waits == [5.0, 5.0]


# -- the async twin -------------------------------------------------------------------------


def test_async_pending_slow_down_approved_and_refresh(
    rt: Runtime,
    async_http: Callable[..., httpx.AsyncClient],
    device_client: RegisteredClient,
    user: User,
) -> None:
    async def run() -> tuple[TokenResponse, TokenResponse, list[float]]:
        async with async_http() as http:
            oauth = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=device_client.client_id, http_client=http
            )
            async with oauth:
                authorization = await oauth.device_authorization(scope="openid offline")
                sleeps = Sleeps(rt.clock)
                steps: list[Callable[[], Any]] = []

                async def step_sleep(seconds: float) -> None:
                    sleeps(seconds)
                    if steps:
                        await steps.pop(0)()

                async def poll_in_between() -> None:
                    with pytest.raises(AuthorizationPending):
                        await oauth.exchange_device_code(authorization.device_code)

                async def approved() -> None:
                    approve(rt, authorization, user)

                steps.extend([poll_in_between, approved])
                tokens = await oauth.poll_device_token(
                    authorization, sleep=step_sleep, clock=sleeps.clock
                )
                refreshed = await oauth.refresh(tokens.refresh_token or "")
                return tokens, refreshed, sleeps.waits

    tokens, refreshed, waits = asyncio.run(run())
    assert waits == [5.0, 10.0]  # slow_down after the poll in between, then 10 s
    assert tokens.id_token and refreshed.refresh_token not in (None, tokens.refresh_token)


def test_async_denied_and_expired(
    rt: Runtime, async_http: Callable[..., httpx.AsyncClient], device_client: RegisteredClient
) -> None:
    async def run() -> tuple[BaseException, BaseException]:
        async with async_http() as http:
            oauth = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=device_client.client_id, http_client=http
            )
            first = await oauth.device_authorization(scope="openid")
            deny(rt, first)
            sleeps = Sleeps(rt.clock)
            with pytest.raises(AccessDenied) as denied:
                await oauth.poll_device_token(first, sleep=sleeps.asleep, clock=sleeps.clock)
            second = await oauth.device_authorization(scope="openid")
            sleeps = Sleeps(rt.clock)
            sleeps.now = second.expires_at - 1
            with pytest.raises(ExpiredToken) as expired:
                await oauth.poll_device_token(second, sleep=sleeps.asleep, clock=sleeps.clock)
            return denied.value, expired.value

    denied, expired = asyncio.run(run())
    assert isinstance(denied, AccessDenied) and isinstance(expired, ExpiredToken)


def test_async_polling_is_cancelled_cleanly(
    rt: Runtime, async_http: Callable[..., httpx.AsyncClient], device_client: RegisteredClient
) -> None:
    """Cancelling the task that polls (the user closed the prompt) stops it during its wait:
    CancelledError comes out, and no poll is sent afterwards."""
    recorder = Recorder(None)

    async def run() -> int:
        async with async_http(recorder) as http:
            oauth = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=device_client.client_id, http_client=http
            )
            authorization = await oauth.device_authorization(scope="openid")
            task = asyncio.create_task(oauth.poll_device_token(authorization))  # real sleep
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            return len(polls(recorder))

    assert asyncio.run(run()) == 0
