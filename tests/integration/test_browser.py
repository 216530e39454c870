"""A person in a real browser: Debian's headless Chromium driven by Playwright against the real
`tokend serve` on loopback (SQLite). Sign in, consent, land on the client's redirect URI with
a code, exchange and refresh it, then see and revoke the session on /account; the same by
keyboard only; and the layout on a phone-sized screen.

Chromium is Debian's (/usr/bin/chromium, installed by ./dev test); Playwright's own browser
download is never used. Screenshots of the three pages are taken on every run; with
TOKEND_SCREENSHOTS=1 they are written to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from argon2 import PasswordHasher

from tokend.core.models import Client, User
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret, new_id
from tokend.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
# RECIPES.md: without the background-networking flags Chromium keeps calling hosts that this
# machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1000, "height": 760}
PHONE = {"width": 390, "height": 844}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
TOKEN = "/auth/v2/token"


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine without the browser; in CI it must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it: ./dev test does)")
    pytest.skip(reason)


# -- the server, the browser, the client's redirect URI -------------------------------------


@dataclass
class Live:
    base: str
    rt: Runtime


@pytest.fixture(scope="module")
def live(live: tuple[Runtime, str]) -> Live:
    """The run's `tokend serve` on SQLite (tests/conftest.py ``live``), and a wall-clock
    runtime on the same database, secret and issuer to register clients and users."""
    rt, base = live
    return Live(base, rt)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _unavailable(f"Debian's Chromium is not installed ({CHROMIUM}): apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Callback:
    """The client's redirect URI: a tiny HTTP server recording the queries it receives."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/cb":
                    received.append({k: v[0] for k, v in parse_qs(parts.query).items()})
                body = (
                    b'<!doctype html><title>Acme Notes</title><link rel="icon" href="data:,">'
                    b"<p>Signed in.</p>"
                )
                self.send_response(200 if parts.path == "/cb" else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def callback() -> Iterator[Callback]:
    cb = Callback()
    yield cb
    cb.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("TOKEND_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path


# -- setup and helpers ----------------------------------------------------------------------


@dataclass
class Party:
    """A registered client and a user, with their plaintext secrets."""

    client: Client
    secret: str
    username: str
    password: str
    user_id: str


def register_client(live: Live, callback: Callback, name: str) -> tuple[Client, str]:
    secret = new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name=name,
        public=False,
        secret_hash=hash_secret(secret),
        grant_types=frozenset({"authorization_code", "refresh_token"}),
        redirect_uris=(callback.uri,),
        scopes=("openid", "offline", "email", "profile"),
    )
    live.rt.store.create_client(client, now=live.rt.clock.now())
    return client, secret


def register(live: Live, callback: Callback, name: str, username: str | None = None) -> Party:
    client, secret = register_client(live, callback, name)
    username = username or f"user-{new_id()[:8]}"
    password = "pw-" + secrets.token_urlsafe(12)
    user = User(id=new_id(), username=username, password_hash=FAST.hash(password))
    live.rt.store.create_user(user, now=live.rt.clock.now())
    return Party(client, secret, username, password, user.id)


@dataclass
class Authorization:
    url: str
    state: str
    nonce: str
    verifier: str


def authorization(live: Live, party: Party, callback: Callback, scope: str) -> Authorization:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": party.client.client_id,
            "redirect_uri": callback.uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return Authorization(f"{live.base}/auth/v2/authorize?{query}", state, nonce, verifier)


def new_page(chromium: Any, viewport: dict[str, int], **options: Any) -> tuple[Any, Any, list]:
    """A fresh browser context (its own cookies) and page; the list collects console errors
    and failed requests (a CSP violation is a console error)."""
    context = chromium.new_context(viewport=viewport, **options)
    page = context.new_page()
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.on(
        "response",
        lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None,
    )
    return context, page, problems


def active(page: Any) -> dict[str, str]:
    return page.evaluate(
        """() => { const e = document.activeElement;
                   const s = getComputedStyle(e);
                   return {tag: e.tagName, id: e.id, name: e.name || '', text: e.innerText || '',
                           outline: s.outlineStyle + ' ' + s.outlineWidth}; }"""
    )


def submit(page: Any, act: Callable[[], Any]) -> None:
    """``act`` submits a form (a click, a key press): wait for the page it leads to."""
    with page.expect_navigation():
        act()


def no_horizontal_scroll(page: Any) -> None:
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"horizontal scroll on {page.url}: {widths}"


def landed(page: Any, callback: Callback, auth: Authorization, base: str) -> str:
    """The browser is on the redirect URI with a code, state and iss; the code."""
    page.wait_for_url(re.compile("^" + re.escape(callback.uri) + r"\?"))
    got = callback.received[-1]
    assert got.keys() == {"code", "state", "iss"}, got
    assert got["state"] == auth.state
    assert got["iss"] == base
    assert got["code"].startswith("tkd_ac_")
    assert page.url.startswith(f"{callback.uri}?")
    return got["code"]


def token(live: Live, party: Party, data: dict[str, str]) -> httpx.Response:
    """A token request of ``party``'s client (Basic auth)."""
    return httpx.post(
        live.base + TOKEN, data=data, auth=(party.client.client_id, party.secret), timeout=10
    )


def exchange(live: Live, party: Party, code: str, auth: Authorization) -> httpx.Response:
    """The code at the token endpoint, with the request's redirect URI and PKCE verifier."""
    redirect_uri = parse_qs(urlsplit(auth.url).query)["redirect_uri"][0]
    return token(
        live,
        party,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": auth.verifier,
        },
    )


def refresh(live: Live, party: Party, refresh_token: str) -> httpx.Response:
    return token(live, party, {"grant_type": "refresh_token", "refresh_token": refresh_token})


# -- the scenarios --------------------------------------------------------------------------


def test_sign_in_consent_exchange_refresh_and_revoke(
    chromium: Any, live: Live, callback: Callback, shots: Path
) -> None:
    party = register(live, callback, "Acme Notes", username="alice")
    # Alice already uses another application, so the account page has two rows.
    calendar, _ = register_client(live, callback, "Acme Calendar")
    live.rt.issuer.issue(
        client=calendar,
        user_id=party.user_id,
        subject=party.user_id,
        scopes=("openid", "offline"),
        now=live.rt.clock.now() - 86400 * 3,
    )
    auth = authorization(live, party, callback, "openid offline email profile")
    context, page, problems = new_page(chromium, DESKTOP)
    try:
        page.goto(auth.url)
        assert page.title() == "Sign in · tokend"
        assert "Acme Notes" in page.inner_text("main")
        page.get_by_label("Username").fill(party.username)
        page.screenshot(path=str(shots / "login.png"), full_page=True)
        page.get_by_label("Password").fill(party.password)
        submit(page, page.get_by_role("button", name="Sign in").click)
        heading = page.get_by_role("heading", level=1)
        assert heading.inner_text() == "Acme Notes wants to access your account"
        scopes = page.locator("ul.scopes li").all_inner_texts()
        assert any("Stay connected" in s for s in scopes), scopes
        assert any("See your email address" in s for s in scopes), scopes
        page.screenshot(path=str(shots / "consent.png"), full_page=True)
        submit(page, page.get_by_role("button", name="Allow").click)
        code = landed(page, callback, auth, live.base)

        # The session cookie as the browser keeps it (the issuer is http://127.0.0.1).
        (session,) = [c for c in context.cookies() if c["name"] == "tokend_session"]
        assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]

        # The client exchanges the code (Basic + PKCE) and refreshes.
        r = exchange(live, party, code, auth)
        assert r.status_code == 200, r.text
        tokens = r.json()
        assert tokens["scope"] == "openid offline email profile"
        assert tokens["id_token"] and tokens["refresh_token"].startswith("tkd_rt_")
        r = refresh(live, party, tokens["refresh_token"])
        assert r.status_code == 200, r.text
        refreshed = r.json()["refresh_token"]

        # Alice sees both sessions on /account and revokes Acme Notes.
        page.goto(f"{live.base}/account")
        rows = page.locator("tbody tr")
        assert rows.count() == 2
        notes = rows.filter(has_text="Acme Notes")
        assert notes.count() == 1
        assert "openid offline email profile" in notes.inner_text()
        assert rows.filter(has_text="Acme Calendar").count() == 1
        # The consent Alice gave Acme Notes is remembered, in plain words.
        remembered = page.get_by_role("list", name="Remembered permissions")
        assert "Acme Notes" in remembered.inner_text()
        assert "See your email address" in remembered.inner_text()
        page.screenshot(path=str(shots / "account.png"), full_page=True)
        submit(page, notes.get_by_role("button", name=re.compile("^Revoke")).click)
        assert page.locator("tbody tr").count() == 1
        assert "Acme Notes" not in page.inner_text("main")
        assert "Acme Calendar" in page.inner_text("main")

        # At once: the refresh token of the revoked session is dead.
        r = refresh(live, party, refreshed)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

        # Signing out ends the session: /account asks to sign in again.
        submit(page, page.get_by_role("button", name="Sign out", exact=True).click)
        assert page.get_by_label("Password").is_visible()
        assert problems == [], problems
    finally:
        context.close()


def test_keyboard_only(chromium: Any, live: Live, callback: Callback) -> None:
    party = register(live, callback, "Acme Notes")
    auth = authorization(live, party, callback, "openid email")
    context, page, problems = new_page(chromium, DESKTOP)
    try:
        page.goto(auth.url)
        assert active(page)["id"] == "username"  # autofocus
        page.keyboard.type(party.username)
        page.keyboard.press("Tab")
        assert active(page)["id"] == "password"
        page.keyboard.type("wrong password")
        submit(page, lambda: page.keyboard.press("Enter"))  # submits the form

        alert = page.get_by_role("alert")
        assert alert.inner_text() == "Incorrect username or password."
        assert page.get_by_label("Username").input_value() == party.username
        assert page.get_by_label("Password").input_value() == ""
        assert page.get_by_label("Password").get_attribute("aria-describedby") == "login-error"
        assert all("/auth/v2/authorize/login" in p and "400" in p for p in problems), problems
        problems.clear()  # the 400 of the failed sign-in was expected
        assert active(page)["id"] == "password"  # the username was kept: on to the password
        page.keyboard.type(party.password)
        page.keyboard.press("Tab")
        focused = active(page)
        assert (focused["tag"], focused["text"]) == ("BUTTON", "Sign in")
        assert focused["outline"].startswith("solid"), focused  # a visible focus ring
        submit(page, lambda: page.keyboard.press("Enter"))

        assert page.get_by_role("button", name="Allow").is_visible()
        order = []
        for _ in range(2):
            page.keyboard.press("Tab")
            order.append(active(page)["text"])
        assert order == ["Deny", "Allow"]
        submit(page, lambda: page.keyboard.press("Enter"))
        code = landed(page, callback, auth, live.base)
        r = exchange(live, party, code, auth)
        assert r.status_code == 200 and "refresh_token" not in r.json(), r.text
        assert problems == [], problems
    finally:
        context.close()


def test_phone_layout_has_no_horizontal_scroll(
    chromium: Any, live: Live, callback: Callback, tmp_path: Path
) -> None:
    party = register(live, callback, "Acme Notes with a rather long application name")
    auth = authorization(live, party, callback, "openid offline email profile")
    context, page, problems = new_page(chromium, PHONE, is_mobile=True, has_touch=True)
    try:
        page.goto(auth.url)
        no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / "login-phone.png"), full_page=True)
        page.get_by_label("Username").fill(party.username)
        page.get_by_label("Password").fill(party.password)
        submit(page, page.get_by_role("button", name="Sign in").click)
        assert page.get_by_role("button", name="Allow").is_visible()
        no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / "consent-phone.png"), full_page=True)
        submit(page, page.get_by_role("button", name="Allow").click)
        code = landed(page, callback, auth, live.base)
        r = exchange(live, party, code, auth)
        assert r.status_code == 200, r.text
        page.goto(f"{live.base}/account")
        assert page.locator("tbody tr").count() == 1
        no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / "account-phone.png"), full_page=True)
        assert problems == [], problems
    finally:
        context.close()


def test_cross_device_sign_in_with_a_phone(
    chromium: Any, live: Live, callback: Callback, shots: Path
) -> None:
    """Didit's flow: the desktop's login page shows a QR code; a phone already signed in
    opens its link, confirms the code and allows; the desktop page, reloading itself without
    script, goes on to the client's redirect URI with a code that exchanges for tokens."""
    party = register(live, callback, "Acme Notes")
    auth = authorization(live, party, callback, "openid offline email")
    desktop, page, problems = new_page(chromium, DESKTOP)
    phone, mobile, phone_problems = new_page(chromium, PHONE, is_mobile=True, has_touch=True)
    try:
        # The phone is signed in already (here through /device's own sign-in).
        mobile.goto(f"{live.base}/device")
        mobile.get_by_label("Username").fill(party.username)
        mobile.get_by_label("Password").fill(party.password)
        submit(mobile, mobile.get_by_role("button", name="Sign in").click)
        assert mobile.get_by_role("heading", level=1).inner_text() == "Connect a device"

        page.goto(auth.url)
        qr = page.get_by_role("img", name="QR code of the link below")
        assert qr.locator("svg").is_visible()
        assert page.get_by_label("Password").is_visible()  # beside the password form
        link = page.locator('a[href^="/device?user_code="]')
        user_code = link.get_attribute("href").split("=", 1)[1]
        assert user_code in page.inner_text("main")
        page.screenshot(path=str(shots / "device-login-qr.png"))
        (waiting,) = [c for c in desktop.cookies() if c["name"].startswith("tokend_xd_")]
        assert waiting["httpOnly"] and waiting["sameSite"] == "Lax"
        assert waiting["path"] == "/auth/v2/authorize"

        # The phone follows the QR's link: confirm the code, then the consent that warns.
        mobile.goto(f"{live.base}/device?user_code={user_code}")
        assert mobile.get_by_role("heading", level=1).inner_text() == "Confirm the code"
        assert user_code in mobile.inner_text("main")
        no_horizontal_scroll(mobile)
        mobile.screenshot(path=str(shots / "device-code.png"))
        submit(mobile, mobile.get_by_role("button", name="Continue").click)
        heading = mobile.get_by_role("heading", level=1).inner_text()
        assert heading == "Acme Notes on another device wants to access your account"
        assert "Only allow this if you started it yourself" in mobile.inner_text("main")
        no_horizontal_scroll(mobile)
        mobile.screenshot(path=str(shots / "device-consent.png"), full_page=True)
        submit(mobile, mobile.get_by_role("button", name="Allow").click)
        heading = mobile.get_by_role("heading", level=1).inner_text()
        assert heading == "You can go back to your device"
        mobile.screenshot(path=str(shots / "device-done.png"))

        # The desktop page, untouched, reloads itself and lands on the redirect URI.
        page.wait_for_url(re.compile("^" + re.escape(callback.uri) + r"\?"), timeout=30_000)
        code = landed(page, callback, auth, live.base)
        r = exchange(live, party, code, auth)
        assert r.status_code == 200, r.text
        tokens = r.json()
        assert tokens["id_token"] and tokens["refresh_token"].startswith("tkd_rt_")
        assert not [c for c in desktop.cookies() if c["name"].startswith("tokend_xd_")]
        assert problems == [], problems
        assert phone_problems == [], phone_problems
    finally:
        desktop.close()
        phone.close()
