"""``RefreshingAuth``: an ``httpx.Auth`` that keeps a rotating refresh token alive.

What it guarantees, for ``httpx.Client`` and ``httpx.AsyncClient`` alike:

- every request carries ``Authorization: Bearer <access token>`` (RFC 6750 §2.1), or for a
  DPoP-bound token (the client has a ``dpop_key``) ``Authorization: DPoP <access token>``
  and a fresh DPoP proof with ``ath`` (RFC 9449 §7); a resource or token endpoint asking
  for a DPoP nonce gets the request once more with it;
- the token is refreshed ``skew`` seconds before it expires, and once (then the request is
  retried once) when the resource answers 401 to a token nobody has refreshed yet;
- one refresh at a time: across threads (a lock) and across asyncio tasks (a lock per
  event loop, then the same thread lock); whoever waited re-reads the store and uses the
  token the winner saved instead of refreshing again;
- the rotated token is saved in the store *before* any request uses it;
- a failed refresh leaves the store as it was, so the next attempt presents the same
  refresh token: if the server had rotated it and the answer was lost, its grace window
  (``TOKEND_REFRESH_REUSE_GRACE``) hands back the same successor.

The refresh request goes through the same ``httpx`` client as the request it serves, so a
failure to reach the token endpoint raises that client's own ``httpx.TransportError``; an
answer that is an error raises ``OAuthError`` (``InvalidGrant`` when the family is gone:
sign the user in again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Protocol

import httpx

from tokend.client import _wire
from tokend.client._dpop import DPoPKey, nonce_retry
from tokend.client._errors import MissingToken
from tokend.client._models import TokenResponse

if TYPE_CHECKING:
    from tokend.client._stores import AsyncTokenStore, TokenStore

__all__ = ["RefreshingAuth"]

_POLL = 0.002  # seconds between tries at the thread lock from a coroutine


class TokenClient(Protocol):
    """What ``RefreshingAuth`` needs of its client (``OAuthClient`` and ``AsyncOAuthClient``
    are ones): its token requests, with their DPoP proofs, and its DPoP key."""

    @property
    def dpop_key(self) -> DPoPKey | None: ...

    def token_request(self, grant_type: str, params: Mapping[str, str | None]) -> httpx.Request: ...


class RefreshingAuth(httpx.Auth):
    """Bearer auth from ``store``, refreshed through ``client``'s token endpoint.

    ``client`` is an ``OAuthClient`` or ``AsyncOAuthClient`` (only its metadata and
    credentials are used, so either works with either kind of httpx client). ``scope``
    narrows each refresh (RFC 6749 §6). ``clock`` returns seconds since the epoch.
    Use one ``RefreshingAuth`` per token (per user): it is what serialises refreshes.
    """

    def __init__(
        self,
        client: TokenClient,
        store: TokenStore | AsyncTokenStore,
        *,
        skew: float = 30.0,
        scope: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.skew = skew
        self.scope = scope
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_locks_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"RefreshingAuth({self.client!r}, {self.store!r}, skew={self.skew!r})"

    # -- shared, without I/O ------------------------------------------------------------------

    def _due(self, token: TokenResponse) -> bool:
        return token.refresh_token is not None and token.is_expired(
            skew=self.skew, now=self._clock()
        )

    def _refresh_request(self, token: TokenResponse) -> httpx.Request:
        assert token.refresh_token is not None
        return self.client.token_request(
            "refresh_token", {"refresh_token": token.refresh_token, "scope": self.scope}
        )

    @staticmethod
    def _successor(old: TokenResponse, response: httpx.Response, sent_at: float) -> TokenResponse:
        new = _wire.parse_token_response(response, sent_at=sent_at)
        if new.refresh_token is None:  # not rotated (RFC 6749 §6 "MAY issue a new one")
            new = dataclasses.replace(new, refresh_token=old.refresh_token)
        return new

    def _authorize(self, request: httpx.Request, token: TokenResponse) -> httpx.Request:
        key = self.client.dpop_key
        if key is not None and token.token_type.lower() == "dpop":
            return key.sign_request(request, access_token=token.access_token)
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        return request

    def _nonce_retry(self, request: httpx.Request, response: httpx.Response) -> bool:
        """The client's DPoP nonce handling (RFC 9449 §8, §9): True when ``request`` now
        carries a fresh proof with the nonce the server asked for. Token endpoint answers
        must have been read."""
        return nonce_retry(self.client.dpop_key, request, response)

    @staticmethod
    def _needs_retry(response: httpx.Response, token: TokenResponse) -> bool:
        return response.status_code == 401 and token.refresh_token is not None

    def _must_refresh(
        self, current: TokenResponse, sent: TokenResponse, *, after_401: bool
    ) -> bool:
        """Under the lock, ``current`` freshly loaded: before the request, whether it is due;
        after a 401 to ``sent``, whether nobody has refreshed it since (and it can be)."""
        if after_401:
            return current.access_token == sent.access_token and bool(current.refresh_token)
        return self._due(current)

    # -- sync -------------------------------------------------------------------------------

    def _load(self) -> TokenResponse:
        token = self.store.load()
        if inspect.isawaitable(token):
            if inspect.iscoroutine(token):
                token.close()
            raise TypeError(f"{self.store!r} is an async store: use it with httpx.AsyncClient")
        if token is None:
            raise MissingToken(f"{self.store!r} holds no token: sign in and save one first")
        return token

    def _refresh(
        self, token: TokenResponse
    ) -> Generator[httpx.Request, httpx.Response, TokenResponse]:
        sent_at = self._clock()
        request = self._refresh_request(token)
        response = yield request
        response.read()
        if self._nonce_retry(request, response):
            sent_at = self._clock()
            response = yield request
            response.read()
        new = self._successor(token, response, sent_at)
        self.store.save(new)  # saved before anyone uses it
        return new

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()  # so that it can be sent again after a 401
        token = self._load()
        if self._due(token):
            with self._thread_lock:
                current = self._load()  # another thread may have refreshed while we waited
                if self._must_refresh(current, token, after_401=False):
                    current = yield from self._refresh(current)
                token = current
        response = yield self._authorize(request, token)
        if self._nonce_retry(request, response):
            response = yield request
        if not self._needs_retry(response, token):
            return
        with self._thread_lock:
            current = self._load()
            if self._must_refresh(current, token, after_401=True):
                current = yield from self._refresh(current)
        response = yield self._authorize(request, current)
        if self._nonce_retry(request, response):
            yield request

    # -- async ------------------------------------------------------------------------------

    async def _aload(self) -> TokenResponse:
        loaded = self.store.load()
        token: TokenResponse | None = await loaded if inspect.isawaitable(loaded) else loaded
        if token is None:
            raise MissingToken(f"{self.store!r} holds no token: sign in and save one first")
        return token

    async def _asave(self, token: TokenResponse) -> None:
        result = self.store.save(token)
        if inspect.isawaitable(result):
            await result

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._loop_locks_guard:
            lock = self._loop_locks.get(loop)
            if lock is None:
                lock = self._loop_locks[loop] = asyncio.Lock()
            return lock

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """The loop's lock (tasks queue without spinning), then the thread lock, polled so
        that the event loop never blocks on another thread's refresh."""
        async with self._loop_lock():
            while not self._thread_lock.acquire(blocking=False):
                await asyncio.sleep(_POLL)
            try:
                yield
            finally:
                self._thread_lock.release()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """As ``sync_auth_flow``, in two passes of one loop: the token as loaded, then once
        more after a 401 (an async generator cannot ``yield from`` a ``_refresh``, so the
        refresh exchange is written once, here)."""
        await request.aread()  # so that it can be sent again after a 401
        token = await self._aload()
        after_401 = False
        while True:
            if after_401 or self._due(token):
                async with self._exclusive():
                    # Another task may have refreshed meanwhile: then its token is used.
                    current = await self._aload()
                    if self._must_refresh(current, token, after_401=after_401):
                        sent_at = self._clock()
                        refresh = self._refresh_request(current)
                        response = yield refresh
                        await response.aread()
                        if self._nonce_retry(refresh, response):
                            sent_at = self._clock()
                            response = yield refresh
                            await response.aread()
                        current = self._successor(current, response, sent_at)
                        await self._asave(current)  # saved before anyone uses it
                    token = current
            response = yield self._authorize(request, token)
            if self._nonce_retry(request, response):
                response = yield request
            if after_401 or not self._needs_retry(response, token):
                return
            after_401 = True
