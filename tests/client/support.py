"""Test support for the client library and the interop tests: registering clients and users
on a real tokend, a browser that signs in and consents through the real pages, a sync
in-process transport for the ASGI app, and transport wrappers that count or lose answers.

Nothing here stands in for the server: every request reaches the real app or process.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal

from tests.conftest import SECRET_KEY, RegisteredClient
from tests.support import family
from tests.support.family import REDIRECT_URI as REDIRECT_URI  # the client tests import it here
from tests.support.server import running_server
from tokend.client import TokenResponse
from tokend.config import Settings
from tokend.core.clock import SystemClock
from tokend.core.models import User
from tokend.runtime import Runtime, build_runtime

TOKEN_PATH = "/auth/v2/token"
USERINFO_PATH = "/auth/v2/users/retrieve"
PASSWORD = "correct horse battery staple"
_PASSWORD_HASH = family.cheap_password_hash(PASSWORD)


# -- registering things on a real server ------------------------------------------------------


def register_client(rt: Runtime, **kwargs: Any) -> RegisteredClient:
    return family.register_client(rt, **{"name": "client library tests", **kwargs})


def register_user(rt: Runtime, **profile: Any) -> User:
    """A user who can sign in on the real login page with ``PASSWORD``."""
    return family.register_user(rt, password_hash=_PASSWORD_HASH, **profile)


def issue(rt: Runtime, reg: RegisteredClient, user: User, scopes: str = "openid offline") -> Any:
    """Start a token family as if ``user`` had signed in (the server's own issuer)."""
    return family.start_family(rt, reg, user, scopes)


def as_client_token(core_token: Any, *, expires_at: float | None = None) -> TokenResponse:
    """The server's token response as the client library holds it (expiring by the wall
    clock); ``expires_at`` lets a test say when the client believes it expires."""
    token = TokenResponse.from_response(core_token.to_dict())
    if expires_at is None:
        return token
    return TokenResponse.from_dict({**token.to_dict(), "expires_at": expires_at})


@contextmanager
def live_tokend(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Runtime, str]]:
    """The real ``tokend serve`` on loopback (SQLite), and a runtime on the same database and
    issuer for setting up clients, users and families."""
    db_url = f"sqlite:///{tmp_path / 'tokend.db'}"
    with running_server(db_url, env={"TOKEND_SECRET_KEY": SECRET_KEY, **(env or {})}) as base:
        settings = Settings(database_url=db_url, secret_key=SECRET_KEY, issuer=base)
        rt = build_runtime(settings, clock=SystemClock())
        try:
            yield rt, base
        finally:
            rt.close()


# -- a browser for the sign-in and consent pages ----------------------------------------------


@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, list[str]] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: html.unescape(v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", "")))
        elif self.forms and tag == "input" and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif self.forms and tag == "button" and a.get("name"):
            self.forms[-1].buttons.setdefault(a["name"], []).append(a.get("value", ""))


def forms(page: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(page)
    return parser.forms


def sign_in_and_consent(
    browser: httpx.Client, authorize_url: str, username: str, *, decision: str = "allow"
) -> str:
    """Follow ``authorize_url`` like a person: the login form (CSRF token from the page,
    cookies kept by ``browser``), then the consent form; a browser already signed in and
    consented goes straight through. Returns the URL the server finally redirects to (the
    client's redirect URI with ``code`` or ``error``)."""
    r = browser.get(authorize_url, follow_redirects=False)
    if r.status_code == 302:  # signed in already, consent given already
        return r.headers["location"]
    assert r.status_code == 200, r.text
    (login,) = forms(r.text)
    assert {"csrf_token", "next", "username", "password"} <= set(login.fields), login
    r = browser.post(
        r.url.join(login.action),
        data={**login.fields, "username": username, "password": PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    r = browser.get(r.url.join(r.headers["location"]), follow_redirects=False)
    if r.status_code == 200:  # consent asked (not yet granted to this client)
        (consent,) = forms(r.text)
        assert decision in consent.buttons["decision"], consent
        r = browser.post(
            r.url.join(consent.action),
            data={**consent.fields, "decision": decision},
            follow_redirects=False,
        )
    assert r.status_code in (302, 303), r.text
    return r.headers["location"]


# -- transports ------------------------------------------------------------------------------


class SyncASGITransport(httpx.BaseTransport):
    """``httpx.ASGITransport`` for a sync ``httpx.Client``: the real app runs on the event
    loop of an anyio portal thread, callable from any thread. (Starlette's TestClient does
    the same, but its transport cannot be wrapped or mounted.)"""

    def __init__(self, app: Any, portal: BlockingPortal) -> None:
        self._inner = httpx.ASGITransport(app, raise_app_exceptions=False)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def run() -> httpx.Response:
            async_request = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._inner.handle_async_request(async_request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self._portal.call(run)


@dataclass
class Sent:
    method: str
    path: str
    authorization: str | None
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(httpx.QueryParams(self.body.decode()))


class Recorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Records every request that reaches the inner transport (thread-safe); an optional
    ``log`` list receives ``"METHOD path"`` entries, to check order against other events."""

    def __init__(self, inner: Any, log: list[str] | None = None) -> None:
        self.inner = inner
        self.sent: list[Sent] = []
        self.log = log if log is not None else []
        self._lock = threading.Lock()

    def _record(self, request: httpx.Request, body: bytes) -> None:
        with self._lock:
            self.sent.append(
                Sent(request.method, request.url.path, request.headers.get("authorization"), body)
            )
            self.log.append(f"{request.method} {request.url.path}")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._record(request, request.read())
        return self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._record(request, await request.aread())
        return await self.inner.handle_async_request(request)

    def to(self, path: str) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.path == path]

    @property
    def refreshes(self) -> list[Sent]:
        return [s for s in self.to(TOKEN_PATH) if s.form.get("grant_type") == "refresh_token"]


class LosesAnswers(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Lets the first ``count`` requests to ``path`` reach the server and be answered, then
    raises as if the connection dropped before the answer arrived (a crash between the
    server's response and the client's save). The lost answers are kept for the test."""

    def __init__(self, inner: Any, *, path: str = TOKEN_PATH, count: int = 1) -> None:
        self.inner = inner
        self.path = path
        self.count = count
        self.lost: list[dict[str, Any]] = []

    def _lose(self, request: httpx.Request, response: httpx.Response) -> bool:
        if request.url.path != self.path or len(self.lost) >= self.count:
            return False
        self.lost.append({"status": response.status_code, **json.loads(response.content)})
        return True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        response.close()
        if self._lose(request, response):
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        await response.aclose()
        if self._lose(request, response):
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


class EventLogStore:
    """A ``TokenStore`` wrapper that writes ``"save <access token prefix>"`` into a shared
    log, to check that the save happens before the token is used; ``fail`` makes the next
    saves raise (a full disk)."""

    def __init__(self, inner: Any, log: list[str]) -> None:
        self.inner = inner
        self.log = log
        self.fail: Exception | None = None

    def load(self) -> TokenResponse | None:
        return self.inner.load()

    def save(self, token: TokenResponse) -> None:
        if self.fail is not None:
            raise self.fail
        self.inner.save(token)
        self.log.append(f"save {token.access_token}")


def bearer_of(sent: Sent) -> str:
    assert sent.authorization is not None and sent.authorization.startswith("Bearer ")
    return sent.authorization.removeprefix("Bearer ")
