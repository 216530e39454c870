"""The sign-in pages over HTTP (tokend.web.pages): the authorize endpoint (RFC 6749 §4.1, OIDC
Core §3.1.2), login, consent, the code exchange at the token endpoint, and ``/account``.

One runtime per backend for the module (``shared_rt``): every test makes its own clients and
users, and starts from an empty cookie jar. Users get real Argon2id hashes with small cost
parameters; the server verifies any valid Argon2 hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY
from tests.support.family import register_client, register_user
from tests.web.conftest import shared_browser_fixtures
from tests.web.helpers import (
    JSON,
    TOKEN,
    assert_oauth_error,
    assert_tokens,
    basic,
    refresh,
    storage_snapshot,
)
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.core.models import Client, User
from tokend.core.secrets import new_id
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app

AUTHORIZE = "/auth/v2/authorize"
LOGIN = "/auth/v2/authorize/login"
CONSENT = "/auth/v2/authorize/consent"
ACCOUNT = "/account"
REVOKE = "/account/revoke"
LOGOUT = "/account/logout"
REDIRECT = "https://app.example/cb"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
GENERIC_ERROR = "Incorrect username or password."


# -- fixtures: one runtime per backend, a fresh cookie jar per test ----------------------------


rt, http, clock = shared_browser_fixtures()


@dataclass
class Party:
    """A registered client and a user with their plaintext secrets."""

    client: Client
    secret: str | None
    user: User
    password: str

    @property
    def client_id(self) -> str:
        return self.client.client_id


def make_client(
    rt: Runtime,
    *,
    public: bool = False,
    name: str = "Acme Notes",
    redirect_uris: tuple[str, ...] = (REDIRECT,),
    scopes: str = "openid offline email profile",
) -> tuple[Client, str | None]:
    reg = register_client(
        rt,
        name=name,
        public=public,
        scopes=scopes,
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=redirect_uris,
    )
    return reg.client, reg.secret


def make_user(rt: Runtime, password: str | None = None) -> tuple[User, str]:
    password = password or "pw-" + secrets.token_urlsafe(12)
    user = register_user(rt, username=f"alice-{new_id()[:8]}", password_hash=FAST.hash(password))
    return user, password


def make_party(rt: Runtime, **client_options: Any) -> Party:
    client, secret = make_client(rt, **client_options)
    user, password = make_user(rt)
    return Party(client, secret, user, password)


@pytest.fixture
def party(rt: Runtime) -> Party:
    return make_party(rt)


@pytest.fixture
def public_party(rt: Runtime) -> Party:
    return make_party(rt, public=True, name="Acme Mobile")


def authorize_url(
    party: Party, *extra: tuple[str, str], pkce: bool | None = None, **params: str | None
) -> str:
    """An authorize URL of ``party``'s client; ``params`` override (None drops one),
    ``extra`` pairs are appended as they are (to repeat a parameter)."""
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": party.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid offline email",
        "state": "st-" + secrets.token_urlsafe(6),
        "nonce": "n-" + secrets.token_urlsafe(6),
    }
    if pkce if pkce is not None else party.client.public:
        query |= {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}
    query |= params
    pairs = [(k, v) for k, v in query.items() if v is not None] + list(extra)
    return f"{AUTHORIZE}?{urlencode(pairs)}"


def params_of(url: str) -> dict[str, str]:
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


# -- reading HTML ---------------------------------------------------------------------------------


@dataclass
class Button:
    name: str | None
    value: str | None
    text: str


@dataclass
class Form:
    action: str
    method: str
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    buttons: list[Button] = field(default_factory=list)

    @property
    def hidden(self) -> dict[str, str]:
        return {n: a.get("value", "") for n, a in self.inputs.items() if a.get("type") == "hidden"}


class Page(HTMLParser):
    """The forms, labels, tags and visible text of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.labels: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._text: list[str] = []
        self._label: tuple[str, list[str]] | None = None
        self._button: tuple[dict[str, str], list[str]] | None = None
        self._skip = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag == "input" and self.forms and "name" in a:
            self.forms[-1].inputs[a["name"]] = a
        elif tag == "label":
            self._label = (a.get("for", ""), [])
        elif tag == "button":
            self._button = (a, [])
        elif tag in ("title", "svg"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label is not None:
            self.labels[self._label[0]] = " ".join("".join(self._label[1]).split())
            self._label = None
        elif tag == "button" and self._button is not None:
            a, parts = self._button
            text = " ".join("".join(parts).split())
            self.forms[-1].buttons.append(Button(a.get("name"), a.get("value"), text))
            self._button = None
        elif tag in ("title", "svg"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._text.append(data)
        if self._label is not None:
            self._label[1].append(data)
        if self._button is not None:
            self._button[1].append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())

    def form(self, action: str) -> Form:
        (form,) = [f for f in self.forms if f.action == action]
        assert form.method == "post"
        return form


# -- a browser: TestClient plus everything HTML it saw --------------------------------------------


class Browser:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.html: list[str] = []

    def _seen(self, r: httpx.Response) -> httpx.Response:
        if r.headers.get("content-type", "").startswith("text/html"):
            self.html.append(r.text)
        return r

    def get(self, url: str) -> httpx.Response:
        return self._seen(self.client.get(url))

    def post(self, url: str, data: dict[str, str], **headers: str) -> httpx.Response:
        return self._seen(self.client.post(url, data=data, headers=headers))

    def follow(self, r: httpx.Response) -> httpx.Response:
        assert r.status_code in (302, 303), (r.status_code, r.text)
        assert r.headers["cache-control"] == "no-store"
        location = r.headers["location"]
        # Our own pages are named by the issuer, never relative to the request's Host.
        issuer = str(self.client.base_url).rstrip("/")
        assert location.startswith(issuer + "/"), location
        return self.get(location)

    def cookie(self, name: str) -> str | None:
        return self.client.cookies.get(name)

    # the steps of a sign-in

    def login_page(self, url: str) -> Form:
        r = self.get(url)
        assert r.status_code == 200, r.text
        return Page(r.text).form(LOGIN)

    def submit_login(
        self, form: Form, username: str, password: str, **headers: str
    ) -> httpx.Response:
        return self.post(LOGIN, {**form.hidden, "username": username, "password": password},
                         **headers)  # fmt: skip

    def sign_in(self, url: str, party: Party) -> httpx.Response:
        """Open ``url``, sign in as ``party.user``; the page (or redirect) that follows."""
        r = self.submit_login(self.login_page(url), party.user.username, party.password)
        assert r.status_code == 303, r.text
        return self.follow(r)

    def decide(self, consent_page: httpx.Response, decision: str, **headers: str) -> httpx.Response:
        assert consent_page.status_code == 200, consent_page.text
        form = Page(consent_page.text).form(CONSENT)
        return self.post(CONSENT, {**form.hidden, "decision": decision}, **headers)

    def grant(self, party: Party, url: str | None = None) -> dict[str, str]:
        """Sign in and allow; the parameters the client receives at its redirect URI."""
        r = self.decide(self.sign_in(url or authorize_url(party), party), "allow")
        return at_redirect_uri(r)

    def account(self) -> tuple[httpx.Response, Page]:
        r = self.get(ACCOUNT)
        assert r.status_code == 200
        return r, Page(r.text)


def at_redirect_uri(r: httpx.Response, status: int = 303, uri: str = REDIRECT) -> dict[str, str]:
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "no-store"
    location = r.headers["location"]
    assert location.startswith(uri + ("&" if "?" in uri else "?")), location
    return params_of(location)


@pytest.fixture
def browser(http: TestClient) -> Browser:
    return Browser(http)


@pytest.fixture
def second_browser(http: TestClient) -> Iterator[Browser]:
    """Another person's browser on the same server: its own cookie jar."""
    client = TestClient(http.app, base_url=ISSUER, follow_redirects=False)
    yield Browser(client)
    client.close()


def set_cookies(r: httpx.Response) -> dict[str, str]:
    """The Set-Cookie headers of a response by cookie name (the whole header, lowercased
    attributes are checked by the callers)."""
    out = {}
    for header in r.headers.get_list("set-cookie"):
        out[header.split("=", 1)[0]] = header
    return out


def cookie_attributes(header: str) -> tuple[str, set[str]]:
    value = header.split(";")[0].split("=", 1)[1]
    return value, {a.strip().lower() for a in header.split(";")[1:]}


def assert_page_headers(r: httpx.Response, *form_targets: str) -> dict[str, list[str]]:
    """Strict CSP and the other protective headers of every page; returns the CSP."""
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp: dict[str, list[str]] = {}
    for directive in r.headers["content-security-policy"].split(";"):
        name, *values = directive.split()
        csp[name] = values
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert "unsafe-eval" not in r.headers["content-security-policy"]
    assert csp["default-src"] == ["'none'"]
    assert "script-src" not in csp  # so: default-src 'none', no script at all
    assert csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["form-action"] == ["'self'", *form_targets]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "same-origin"
    return csp


def assert_self_contained(html: str) -> None:
    """No script, no inline style, no external asset."""
    page = Page(html)
    for tag, attrs in page.tags:
        assert tag not in ("script", "style", "iframe", "object", "embed"), tag
        assert "style" not in attrs, (tag, attrs)
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        for attr in ("src", "href", "action"):
            if tag == "link" and attrs.get("rel") == "icon":
                assert attrs["href"].startswith("data:image/svg+xml,"), attrs  # CSP img-src data:
            elif attr in attrs:
                assert attrs[attr].startswith("/") and not attrs[attr].startswith("//"), attrs


def exchange(
    http: TestClient, party: Party, code: str, *, verifier: str | None = None
) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    if party.secret is None:
        return http.post(TOKEN, data={**data, "client_id": party.client_id})
    return http.post(TOKEN, data=data, headers=basic(party.client_id, party.secret))


def do_refresh(http: TestClient, party: Party, token: str) -> httpx.Response:
    if party.secret is None:
        return http.post(TOKEN, data=refresh(token, client_id=party.client_id))
    return http.post(TOKEN, data=refresh(token), headers=basic(party.client_id, party.secret))


def id_claims(http: TestClient, id_token: str, audience: str) -> dict[str, Any]:
    kid = jwt.get_unverified_header(id_token)["kid"]
    (jwk,) = [k for k in http.get("/auth/jwks").json()["keys"] if k["kid"] == kid]
    return jwt.decode(
        id_token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


# -- the authorize endpoint: what cannot be trusted is never redirected to ---------------------


@pytest.mark.parametrize(
    ("override", "extra"),
    [
        ({"client_id": "no-such-client"}, ()),
        ({"client_id": None}, ()),
        ({"redirect_uri": None}, ()),
        ({"redirect_uri": "https://evil.example/cb"}, ()),
        ({"redirect_uri": REDIRECT + "/"}, ()),
        ({"redirect_uri": "https://APP.example/cb"}, ()),
        ({"redirect_uri": REDIRECT + "?next=https://evil.example/cb"}, ()),
        ({}, (("redirect_uri", "https://evil.example/cb"),)),
        ({"redirect_uri": "https://evil.example/cb", "response_type": "token"}, ()),
    ],
    ids=[
        "unknown-client",
        "no-client",
        "no-redirect-uri",
        "unregistered",
        "trailing-slash",
        "host-case",
        "extra-query",
        "repeated-redirect-uri",
        "unregistered-and-bad-response-type",
    ],
)
def test_untrusted_request_gets_an_error_page_never_a_redirect(
    browser: Browser, party: Party, override: dict, extra: tuple
) -> None:
    r = browser.get(authorize_url(party, *extra, **override))
    assert r.status_code == 400
    assert "location" not in r.headers
    assert_page_headers(r)
    page = Page(r.text)
    assert "can't be completed" in page.text
    assert "evil.example" not in r.text and "app.example" not in r.text
    assert not page.forms


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "email offline"}, "invalid_scope"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"code_challenge": CHALLENGE, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"prompt": "bogus"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ],
    ids=[
        "response-type-token",
        "no-response-type",
        "no-openid",
        "scope-not-the-clients",
        "pkce-plain",
        "pkce-malformed",
        "bad-prompt",
        "bad-max-age",
        "request-object",
    ],
)
def test_other_errors_go_back_to_the_client(
    browser: Browser, party: Party, override: dict, error: str
) -> None:
    url = authorize_url(party, **override)
    got = at_redirect_uri(browser.get(url), 302)
    assert got.keys() == {"error", "error_description", "state", "iss"}
    assert got["error"] == error
    assert got["state"] == params_of(url)["state"]
    assert got["iss"] == ISSUER  # RFC 9207


def test_public_client_without_pkce_goes_back_with_invalid_request(
    browser: Browser, public_party: Party
) -> None:
    url = authorize_url(public_party, pkce=False, state="abc")
    got = at_redirect_uri(browser.get(url), 302)
    assert (got["error"], got["state"], got["iss"]) == ("invalid_request", "abc", ISSUER)


def test_repeated_state_is_not_echoed(browser: Browser, party: Party) -> None:
    got = at_redirect_uri(browser.get(authorize_url(party, ("state", "two"), state="one")), 302)
    assert got["error"] == "invalid_request"
    assert "state" not in got


def test_a_registered_query_is_kept_on_redirect(browser: Browser, rt: Runtime) -> None:
    uri = "https://app.example/cb?tenant=7"
    p = make_party(rt, redirect_uris=(uri,))
    got = at_redirect_uri(browser.get(authorize_url(p, redirect_uri=uri, prompt="bogus")), 302, uri)
    assert got["tenant"] == "7" and got["error"] == "invalid_request"
    got = at_redirect_uri(
        browser.decide(browser.sign_in(authorize_url(p, redirect_uri=uri), p), "allow"), uri=uri
    )
    assert got["tenant"] == "7" and got["code"].startswith("tkd_ac_")


# -- the login page -------------------------------------------------------------------------------


def test_login_page(browser: Browser, party: Party) -> None:
    url = authorize_url(party)
    r = browser.get(url)
    assert r.status_code == 200
    assert_page_headers(r, "https://app.example")  # the redirect ends the form submission
    assert_self_contained(r.text)
    page = Page(r.text)
    assert "Sign in" in page.text and "Acme Notes" in page.text
    form = page.form(LOGIN)
    assert page.labels == {"username": "Username", "password": "Password"}
    assert form.inputs["username"]["id"] == "username"
    assert form.inputs["username"]["type"] == "text"
    assert form.inputs["username"]["autocomplete"] == "username"
    assert form.inputs["password"]["id"] == "password"
    assert form.inputs["password"]["type"] == "password"
    assert form.inputs["password"]["autocomplete"] == "current-password"
    assert form.inputs["password"].get("value", "") == ""
    assert [b.text for b in form.buttons] == ["Sign in"]
    assert len(form.hidden["csrf_token"]) >= 40
    assert form.hidden["next"] == url
    # The CSRF cookie the token is bound to.
    csrf, attrs = cookie_attributes(set_cookies(r)["__Host-tokend_csrf"])
    assert len(csrf) >= 40 and csrf != form.hidden["csrf_token"]
    assert {"httponly", "samesite=lax", "secure", "path=/"} <= attrs


def test_the_stylesheet_is_served_from_here(browser: Browser, party: Party) -> None:
    r = browser.get(authorize_url(party))
    (href,) = [a["href"] for t, a in Page(r.text).tags if t == "link" and a["rel"] == "stylesheet"]
    css = browser.client.get(href)
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert "http" not in css.text  # no external font or image
    assert "@media" in css.text


def test_wrong_password_and_unknown_user_look_the_same(browser: Browser, party: Party) -> None:
    form = browser.login_page(authorize_url(party))
    before = storage_snapshot(browser.client.app.state.runtime.store.engine)
    wrong_password = browser.submit_login(form, party.user.username, "not-the-password")
    unknown_user = browser.submit_login(form, "nobody-" + new_id()[:8], "not-the-password")
    empty = browser.submit_login(form, "", "")
    for r, username in (
        (wrong_password, party.user.username),
        (unknown_user, None),
        (empty, None),
    ):
        assert r.status_code == 400
        assert "location" not in r.headers
        assert "__Host-tokend_session" not in set_cookies(r)
        page = Page(r.text)
        assert GENERIC_ERROR in page.text
        assert "not-the-password" not in r.text
        retry = page.form(LOGIN)
        assert retry.hidden == form.hidden  # the same request, the same CSRF token
        if username:
            assert retry.inputs["username"]["value"] == username  # kept for the retry
    normalise = lambda r: re.sub(r'name="username" value="[^"]*"', "", r.text)  # noqa: E731
    assert normalise(wrong_password) == normalise(unknown_user)
    assert storage_snapshot(browser.client.app.state.runtime.store.engine) == before
    # And the retry with the right password works.
    ok = browser.submit_login(form, party.user.username, party.password)
    assert ok.status_code == 303


def test_sign_in_sets_a_fresh_secure_session_cookie(browser: Browser, party: Party) -> None:
    # An attacker planted a session id of their choosing (session fixation).
    planted = secrets.token_urlsafe(32)
    browser.client.cookies.set("__Host-tokend_session", planted, domain="issuer.test", path="/")
    url = authorize_url(party)
    r = browser.submit_login(browser.login_page(url), party.user.username, party.password)
    assert r.status_code == 303
    assert r.headers["location"] == ISSUER + url
    sid, attrs = cookie_attributes(set_cookies(r)["__Host-tokend_session"])
    assert sid != planted and len(sid) >= 43
    assert {"httponly", "samesite=lax", "secure", "path=/"} <= attrs
    assert any(a.startswith("max-age=") for a in attrs)
    assert browser.cookie("__Host-tokend_session") == sid


def test_session_id_changes_at_every_sign_in(
    browser: Browser, second_browser: Browser, party: Party
) -> None:
    browser.sign_in(authorize_url(party), party)
    first = browser.cookie("__Host-tokend_session")
    assert first
    # prompt=login: sign in again in the same browser.
    r = browser.submit_login(
        browser.login_page(authorize_url(party, prompt="login")), party.user.username,
        party.password,
    )  # fmt: skip
    second = cookie_attributes(set_cookies(r)["__Host-tokend_session"])[0]
    assert second != first
    # The old id no longer opens a session.
    second_browser.client.cookies.set(
        "__Host-tokend_session", first, domain="issuer.test", path="/"
    )
    r = second_browser.get(ACCOUNT)
    assert Page(r.text).form(LOGIN)
    assert party.user.username not in r.text


def test_session_cookie_is_not_secure_on_a_plain_http_issuer(rt: Runtime, party: Party) -> None:
    issuer = "http://localhost:8000"
    settings = Settings(database_url=rt.settings.database_url, secret_key=SECRET_KEY, issuer=issuer)
    plain = build_runtime(settings, clock=rt.clock)
    try:
        client = TestClient(create_app(settings, runtime=plain), base_url=issuer,
                            follow_redirects=False)  # fmt: skip
        b = Browser(client)
        r = b.get(authorize_url(party))
        assert {"httponly", "samesite=lax"} <= cookie_attributes(set_cookies(r)["tokend_csrf"])[1]
        assert "secure" not in cookie_attributes(set_cookies(r)["tokend_csrf"])[1]
        form = Page(r.text).form(LOGIN)
        r = b.submit_login(form, party.user.username, party.password, Origin=issuer)
        assert r.status_code == 303
        attrs = cookie_attributes(set_cookies(r)["tokend_session"])[1]
        assert {"httponly", "samesite=lax"} <= attrs and "secure" not in attrs
    finally:
        plain.close()


@pytest.mark.parametrize(
    "next_", ["https://evil.example/", "//evil.example/x", "/elsewhere", "", "/account/../x"]
)
def test_login_only_continues_to_authorize_or_account(
    browser: Browser, party: Party, next_: str
) -> None:
    form = browser.login_page(authorize_url(party))
    r = browser.post(
        LOGIN, {**form.hidden, "next": next_, "username": party.user.username,
                "password": party.password},
    )  # fmt: skip
    assert r.status_code == 403
    assert "location" not in r.headers and "__Host-tokend_session" not in set_cookies(r)


def test_login_with_a_forged_authorize_next_is_still_validated(
    browser: Browser, party: Party
) -> None:
    form = browser.login_page(authorize_url(party))
    forged = authorize_url(party, redirect_uri="https://evil.example/cb")
    r = browser.post(
        LOGIN, {**form.hidden, "next": forged, "username": party.user.username,
                "password": party.password},
    )  # fmt: skip
    assert r.status_code == 400 and "location" not in r.headers
    assert "__Host-tokend_session" not in set_cookies(r)


# -- CSRF -----------------------------------------------------------------------------------------


def _login_data(form: Form, party: Party) -> dict[str, str]:
    return {**form.hidden, "username": party.user.username, "password": party.password}


@pytest.mark.parametrize(
    "attack",
    [
        "no-token",
        "wrong-token",
        "other-browsers-token",
        "no-cookie",
        "cross-origin",
        "lookalike-origin",
        "null-origin",
    ],
)
def test_csrf_on_login(
    browser: Browser, second_browser: Browser, party: Party, attack: str
) -> None:
    form = browser.login_page(authorize_url(party))
    data = _login_data(form, party)
    headers: dict[str, str] = {}
    if attack == "no-token":
        del data["csrf_token"]
    elif attack == "wrong-token":
        data["csrf_token"] = secrets.token_urlsafe(32)
    elif attack == "other-browsers-token":
        data["csrf_token"] = second_browser.login_page(authorize_url(party)).hidden["csrf_token"]
    elif attack == "no-cookie":
        browser.client.cookies.delete("__Host-tokend_csrf")
    elif attack == "cross-origin":
        headers["Origin"] = "https://evil.example"
    elif attack == "lookalike-origin":
        headers["Origin"] = "https://issuer.test.evil.example"
    elif attack == "null-origin":  # a sandboxed frame, a data: URL
        headers["Origin"] = "null"
    engine = browser.client.app.state.runtime.store.engine
    before = storage_snapshot(engine)
    r = browser.post(LOGIN, data, **headers)
    assert r.status_code == 403
    assert "location" not in r.headers
    assert "__Host-tokend_session" not in set_cookies(r)
    assert storage_snapshot(engine) == before
    assert_page_headers(r)
    # With everything right it works: the refusal was the attack, not the setup.
    if attack != "no-cookie":
        assert browser.post(LOGIN, _login_data(form, party), Origin=ISSUER).status_code == 303


@pytest.mark.parametrize("attack", ["no-token", "wrong-token", "cross-origin"])
def test_csrf_on_consent(browser: Browser, party: Party, attack: str) -> None:
    consent_page = browser.sign_in(authorize_url(party), party)
    form = Page(consent_page.text).form(CONSENT)
    data = {**form.hidden, "decision": "allow"}
    headers = {}
    if attack == "no-token":
        del data["csrf_token"]
    elif attack == "wrong-token":
        data["csrf_token"] = data["csrf_token"][::-1]
    else:
        headers["Origin"] = "https://app.example"
    engine = browser.client.app.state.runtime.store.engine
    before = storage_snapshot(engine)
    r = browser.post(CONSENT, data, **headers)
    assert r.status_code == 403 and "location" not in r.headers
    assert storage_snapshot(engine) == before  # no code, no remembered consent
    assert browser.post(CONSENT, {**form.hidden, "decision": "allow"}).status_code == 303


def test_csrf_on_revoke_and_logout(browser: Browser, http: TestClient, party: Party) -> None:
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    _, page = browser.account()
    form = page.form(REVOKE)
    engine = browser.client.app.state.runtime.store.engine
    before = storage_snapshot(engine)
    for data, headers in (
        ({"family_id": form.hidden["family_id"]}, {}),
        ({**form.hidden, "csrf_token": "x" * 43}, {}),
        (form.hidden, {"Origin": "https://evil.example"}),
    ):
        assert browser.post(REVOKE, data, **headers).status_code == 403
        assert browser.post(LOGOUT, {}, **headers).status_code == 403
    assert storage_snapshot(engine) == before
    assert assert_tokens(do_refresh(http, party, tokens["refresh_token"]))
    assert party.user.username in browser.get(ACCOUNT).text  # still signed in


# -- consent --------------------------------------------------------------------------------------


def test_consent_page_lists_scopes_in_plain_words(browser: Browser, party: Party) -> None:
    r = browser.sign_in(authorize_url(party, scope="openid offline email profile"), party)
    assert r.status_code == 200
    assert_page_headers(r, "https://app.example")
    assert_self_contained(r.text)
    page = Page(r.text)
    text = page.text
    assert "Acme Notes wants to access your account" in text
    assert party.user.username in text
    for words in (
        "Confirm it's you",
        "Stay connected",
        "See your email address",
        "See your profile",
    ):
        assert words in text
    for raw in ("openid", "offline", "email profile"):
        assert raw not in text  # scope tokens are not words
    form = page.form(CONSENT)
    assert {(b.name, b.value, b.text) for b in form.buttons} == {
        ("decision", "allow", "Allow"),
        ("decision", "deny", "Deny"),
    }
    assert form.hidden["csrf_token"]


def test_allow_sends_code_state_and_iss(browser: Browser, party: Party) -> None:
    url = authorize_url(party, state="xyz-123")
    got = browser.grant(party, url)
    assert got.keys() == {"code", "state", "iss"}
    assert got["state"] == "xyz-123" and got["iss"] == ISSUER
    assert re.fullmatch(r"tkd_ac_[A-Za-z0-9_-]{43}", got["code"])


def test_deny_sends_access_denied_and_remembers_nothing(browser: Browser, party: Party) -> None:
    url = authorize_url(party, state="s-deny")
    got = at_redirect_uri(browser.decide(browser.sign_in(url, party), "deny"))
    assert got == {
        "error": "access_denied",
        "error_description": got["error_description"],
        "state": "s-deny",
        "iss": ISSUER,
    }
    r = browser.get(authorize_url(party))
    assert r.status_code == 200 and Page(r.text).form(CONSENT)  # asked again


def test_remembered_consent_skips_the_page(browser: Browser, party: Party) -> None:
    browser.grant(party)
    url = authorize_url(party, state="again")
    got = at_redirect_uri(browser.get(url), 302)
    assert got["state"] == "again" and got["code"].startswith("tkd_ac_")
    # A subset of what was granted: no page either.
    at_redirect_uri(browser.get(authorize_url(party, scope="openid")), 302)


def test_more_scope_asks_again(browser: Browser, party: Party) -> None:
    browser.grant(party, authorize_url(party, scope="openid email"))
    r = browser.get(authorize_url(party, scope="openid email profile"))
    assert r.status_code == 200
    assert "See your profile" in Page(r.text).text


def test_prompt_consent_forces_the_page(browser: Browser, party: Party) -> None:
    browser.grant(party)
    r = browser.get(authorize_url(party, prompt="consent"))
    assert r.status_code == 200 and Page(r.text).form(CONSENT)


def test_consent_is_per_client(browser: Browser, rt: Runtime, party: Party) -> None:
    browser.grant(party)
    other, _ = make_client(rt, name="Other App")
    r = browser.get(authorize_url(Party(other, None, party.user, party.password)))
    assert r.status_code == 200 and "Other App" in Page(r.text).text


def test_consent_is_per_user(
    browser: Browser, second_browser: Browser, rt: Runtime, party: Party
) -> None:
    browser.grant(party)
    bob, password = make_user(rt)
    r = second_browser.sign_in(authorize_url(party), Party(party.client, None, bob, password))
    assert r.status_code == 200 and Page(r.text).form(CONSENT)


def test_prompt_none_without_session_is_login_required(browser: Browser, party: Party) -> None:
    got = at_redirect_uri(browser.get(authorize_url(party, prompt="none", state="q")), 302)
    assert (got["error"], got["state"], got["iss"]) == ("login_required", "q", ISSUER)


def test_prompt_none_without_consent_is_consent_required(browser: Browser, party: Party) -> None:
    browser.sign_in(authorize_url(party), party)  # signed in, consent page left unanswered
    got = at_redirect_uri(browser.get(authorize_url(party, prompt="none", state="q")), 302)
    assert (got["error"], got["state"], got["iss"]) == ("consent_required", "q", ISSUER)


def test_prompt_none_with_session_and_consent_gives_a_code(browser: Browser, party: Party) -> None:
    browser.grant(party)
    got = at_redirect_uri(browser.get(authorize_url(party, prompt="none", state="q")), 302)
    assert got["code"].startswith("tkd_ac_") and got["state"] == "q"


def test_prompt_login_forces_reauthentication(
    browser: Browser, http: TestClient, clock: FrozenClock, party: Party
) -> None:
    browser.grant(party)
    clock.advance(30)
    url = authorize_url(party, prompt="login")
    form = browser.login_page(url)  # a login page although signed in
    assert "prompt" not in params_of(form.hidden["next"])  # no loop after signing in
    r = browser.submit_login(form, party.user.username, party.password)
    signed_in_at = clock.now()
    got = at_redirect_uri(browser.follow(r), 302)  # consent remembered
    tokens = assert_tokens(exchange(http, party, got["code"]))
    assert id_claims(http, tokens["id_token"], party.client_id)["auth_time"] == int(signed_in_at)


def test_prompt_login_without_session_needs_one_sign_in(browser: Browser, party: Party) -> None:
    r = browser.sign_in(authorize_url(party, prompt="login"), party)
    assert r.status_code == 200
    assert Page(r.text).form(CONSENT)  # not a second login page


def test_prompt_login_keeps_prompt_consent(browser: Browser, party: Party) -> None:
    browser.grant(party)
    r = browser.sign_in(authorize_url(party, prompt="login consent"), party)
    assert r.status_code == 200
    assert Page(r.text).form(CONSENT)  # consent asked although remembered


def test_max_age(browser: Browser, clock: FrozenClock, party: Party) -> None:
    browser.grant(party)
    clock.advance(120)
    r = browser.get(authorize_url(party, max_age="60"))
    assert r.status_code == 200 and Page(r.text).form(LOGIN)
    at_redirect_uri(browser.get(authorize_url(party, max_age="600")), 302)


@pytest.mark.parametrize("max_age", ["0", "1"])
def test_max_age_is_satisfied_by_the_sign_in_it_asks_for(
    browser: Browser, http: TestClient, clock: FrozenClock, party: Party, max_age: str
) -> None:
    # The browser takes a few seconds to follow the redirect after signing in: that must
    # not send the user back to the login page (max_age=0 would loop forever).
    browser.grant(party)
    clock.advance(30)
    form = browser.login_page(authorize_url(party, max_age=max_age))
    r = browser.submit_login(form, party.user.username, party.password)
    signed_in_at = clock.now()
    clock.advance(3)
    got = at_redirect_uri(browser.follow(r), 302)
    tokens = assert_tokens(exchange(http, party, got["code"]))
    assert id_claims(http, tokens["id_token"], party.client_id)["auth_time"] == int(signed_in_at)


def test_consent_post_is_validated_again(browser: Browser, party: Party) -> None:
    consent_page = browser.sign_in(authorize_url(party), party)
    form = Page(consent_page.text).form(CONSENT)
    request = params_of("?" + form.hidden["request"])
    wider = urlencode({**request, "scope": "openid admin"})
    got = at_redirect_uri(
        browser.post(CONSENT, {**form.hidden, "request": wider, "decision": "allow"})
    )
    assert got["error"] == "invalid_scope" and "code" not in got
    elsewhere = urlencode({**request, "redirect_uri": "https://evil.example/cb"})
    r = browser.post(CONSENT, {**form.hidden, "request": elsewhere, "decision": "allow"})
    assert r.status_code == 400 and "location" not in r.headers


def test_consent_post_without_session_shows_the_login_page(
    browser: Browser, clock: FrozenClock, rt: Runtime, party: Party
) -> None:
    consent_page = browser.sign_in(authorize_url(party), party)
    form = Page(consent_page.text).form(CONSENT)
    # The session ended on the server while the page was open (the browser still sends the
    # cookie, so the form's token, bound to it, is still good).
    clock.advance(rt.settings.session_ttl + 1)
    r = browser.post(CONSENT, {**form.hidden, "decision": "allow"})
    assert r.status_code == 200 and Page(r.text).form(LOGIN)
    assert "location" not in r.headers


# -- the code at the token endpoint ----------------------------------------------------------------


def test_full_exchange_with_basic_auth(
    browser: Browser, http: TestClient, clock: FrozenClock, party: Party
) -> None:
    url = authorize_url(party, scope="openid offline email", nonce="n-0S6_WzA2Mj")
    consent_page = browser.sign_in(url, party)
    signed_in_at = clock.now()
    clock.advance(7)
    got = at_redirect_uri(browser.decide(consent_page, "allow"))
    clock.advance(2)
    r = exchange(http, party, got["code"])
    tokens = assert_tokens(r)
    assert tokens["scope"] == "openid offline email"
    assert tokens["refresh_token"].startswith("tkd_rt_")
    claims = id_claims(http, tokens["id_token"], party.client_id)
    assert claims["aud"] == party.client_id
    assert claims["sub"] == party.user.id
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["auth_time"] == int(signed_in_at)
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert claims["at_hash"] == jwt.utils.base64url_encode(digest[:16]).decode()
    # The refresh token works, then the replayed code revokes everything it started.
    rotated = assert_tokens(do_refresh(http, party, tokens["refresh_token"]))
    assert_oauth_error(exchange(http, party, got["code"]), "invalid_grant",
                       leaks=(got["code"], party.secret or ""))  # fmt: skip
    assert_oauth_error(do_refresh(http, party, rotated["refresh_token"]), "invalid_grant")


def test_no_refresh_token_without_offline(browser: Browser, http: TestClient, party: Party) -> None:
    got = browser.grant(party, authorize_url(party, scope="openid email"))
    tokens = assert_tokens(exchange(http, party, got["code"]))
    assert "refresh_token" not in tokens and tokens["id_token"]


def test_public_client_with_pkce(browser: Browser, http: TestClient, public_party: Party) -> None:
    got = browser.grant(public_party)
    assert_oauth_error(exchange(http, public_party, got["code"]), "invalid_grant")
    assert_oauth_error(
        exchange(http, public_party, got["code"], verifier="x" * 43), "invalid_grant"
    )
    tokens = assert_tokens(exchange(http, public_party, got["code"], verifier=VERIFIER))
    assert id_claims(http, tokens["id_token"], public_party.client_id)["aud"] == (
        public_party.client_id
    )
    assert assert_tokens(do_refresh(http, public_party, tokens["refresh_token"]))


def test_code_is_bound_to_the_client_over_http(
    browser: Browser, http: TestClient, rt: Runtime, party: Party
) -> None:
    got = browser.grant(party)
    other, secret = make_client(rt)
    assert secret is not None
    r = http.post(
        TOKEN,
        data={"grant_type": "authorization_code", "code": got["code"], "redirect_uri": REDIRECT},
        headers=basic(other.client_id, secret),
    )
    assert_oauth_error(r, "invalid_grant", leaks=(got["code"],))


def test_didit_demo_client_json_body(browser: Browser, http: TestClient, party: Party) -> None:
    got = browser.grant(party)
    assert party.secret is not None
    body = {"code": got["code"], "grant_type": "authorization_code", "redirect_uri": REDIRECT}
    r = http.post(
        TOKEN,
        content=json.dumps(body),
        headers={**basic(party.client_id, party.secret), "Content-Type": JSON},
    )
    tokens = assert_tokens(r)
    assert tokens["refresh_token"] and tokens["id_token"]


# -- /account -------------------------------------------------------------------------------------


def test_account_lists_the_family_and_revoking_kills_it(
    browser: Browser, http: TestClient, clock: FrozenClock, party: Party
) -> None:
    granted_at = clock.now()
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    clock.advance(3600)
    tokens = assert_tokens(do_refresh(http, party, tokens["refresh_token"]))
    used_at = clock.now()
    r, page = browser.account()
    assert_page_headers(r)
    assert_self_contained(r.text)
    assert party.user.username in page.text
    assert "Acme Notes" in page.text
    times = [a["datetime"] for t, a in page.tags if t == "time"]
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
    # The family's row (granted, last used), then the remembered consent (allowed).
    assert times == [iso(granted_at), iso(used_at), iso(granted_at)]
    form = page.form(REVOKE)
    assert [b.text for b in form.buttons] == ["Revoke"]
    assert tokens["refresh_token"] not in r.text
    r = browser.post(REVOKE, form.hidden)
    assert r.status_code == 303 and r.headers["location"] == ISSUER + ACCOUNT
    # At once: the next refresh fails.
    assert_oauth_error(do_refresh(http, party, tokens["refresh_token"]), "invalid_grant")
    _, page = browser.account()
    assert "Acme Notes" not in page.text
    assert "No application has access" in page.text


def test_account_lists_one_row_per_family(
    browser: Browser, http: TestClient, rt: Runtime, party: Party
) -> None:
    assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    other, secret = make_client(rt, name="Acme Calendar")
    calendar = Party(other, secret, party.user, party.password)
    code = at_redirect_uri(browser.decide(browser.get(authorize_url(calendar)), "allow"))["code"]
    cal_tokens = assert_tokens(exchange(http, calendar, code))
    _, page = browser.account()
    revoke_forms = [f for f in page.forms if f.action == REVOKE]
    assert len(revoke_forms) == 2
    assert "Acme Notes" in page.text and "Acme Calendar" in page.text
    # Revoke Notes, on its own row; Calendar keeps working.
    rows = re.findall(r"<tr>.*?</tr>", browser.get(ACCOUNT).text, re.S)
    (notes_row,) = [row for row in rows if "Acme Notes" in row]
    (notes_form,) = Page(notes_row).forms
    assert browser.post(REVOKE, notes_form.hidden).status_code == 303
    assert assert_tokens(do_refresh(http, calendar, cal_tokens["refresh_token"]))
    _, page = browser.account()
    assert "Acme Notes" not in page.text and "Acme Calendar" in page.text


def test_a_user_cannot_revoke_another_users_family(
    browser: Browser, second_browser: Browser, http: TestClient, rt: Runtime, party: Party
) -> None:
    alice_tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    alice_family = browser.account()[1].form(REVOKE).hidden["family_id"]
    bob, password = make_user(rt)
    bob_party = Party(party.client, party.secret, bob, password)
    bob_tokens = assert_tokens(exchange(http, party, second_browser.grant(bob_party)["code"]))
    _, bob_page = second_browser.account()
    bob_form = bob_page.form(REVOKE)
    assert bob_form.hidden["family_id"] != alice_family
    assert alice_family not in second_browser.get(ACCOUNT).text
    r = second_browser.post(REVOKE, {**bob_form.hidden, "family_id": alice_family})
    assert r.status_code == 303
    assert assert_tokens(do_refresh(http, party, alice_tokens["refresh_token"]))
    assert browser.account()[1].form(REVOKE).hidden["family_id"] == alice_family
    assert assert_tokens(do_refresh(http, party, bob_tokens["refresh_token"]))


def test_account_needs_sign_in(browser: Browser, party: Party) -> None:
    form = browser.login_page(ACCOUNT)
    assert form.hidden["next"] == ACCOUNT
    r = browser.submit_login(form, party.user.username, party.password)
    assert r.status_code == 303 and r.headers["location"] == ISSUER + ACCOUNT
    r, page = browser.account()
    assert party.user.username in page.text
    assert "No application has access" in page.text


def test_logout_ends_the_session(browser: Browser, second_browser: Browser, party: Party) -> None:
    browser.grant(party)
    sid = browser.cookie("__Host-tokend_session")
    assert sid
    _, page = browser.account()
    r = browser.post(LOGOUT, page.form(LOGOUT).hidden)
    assert r.status_code == 303 and r.headers["location"] == ISSUER + ACCOUNT
    value, attrs = cookie_attributes(set_cookies(r)["__Host-tokend_session"])
    assert value in ("", '""') and ("max-age=0" in attrs or any("expires=" in a for a in attrs))
    assert Page(browser.get(ACCOUNT).text).form(LOGIN)
    # The session is gone on the server too, not only from this browser.
    second_browser.client.cookies.set("__Host-tokend_session", sid, domain="issuer.test", path="/")
    assert Page(second_browser.get(ACCOUNT).text).form(LOGIN)
    r = second_browser.get(authorize_url(party, prompt="none"))
    assert at_redirect_uri(r, 302)["error"] == "login_required"


def test_session_expires(browser: Browser, clock: FrozenClock, rt: Runtime, party: Party) -> None:
    browser.grant(party)
    clock.advance(rt.settings.session_ttl + 1)
    r = browser.get(authorize_url(party))
    assert r.status_code == 200 and Page(r.text).form(LOGIN)


# -- nothing leaks ------------------------------------------------------------------------------


def test_no_password_code_or_token_in_any_page(
    browser: Browser, http: TestClient, party: Party
) -> None:
    url = authorize_url(party)
    form = browser.login_page(url)
    browser.submit_login(form, party.user.username, party.password + "x")  # a failed try
    codes = [browser.grant(party, url)["code"]]
    tokens = assert_tokens(exchange(http, party, codes[0]))
    codes.append(at_redirect_uri(browser.get(authorize_url(party)), 302)["code"])
    browser.account()
    browser.get(authorize_url(party, prompt="consent"))
    assert len(browser.html) >= 6
    secrets_ = [
        party.password,
        party.password + "x",
        party.user.password_hash,
        *codes,
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
        "tkd_ac_",
        "tkd_rt_",
    ]
    for html in browser.html:
        for s in secrets_:
            assert s not in html
