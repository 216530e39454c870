"""The browser side of sign-in from another device, over HTTP with two cookie jars: ``/device``
(RFC 8628 §3.3: type or confirm the user code, sign in, consent, done) and the login page's
cross-device QR (Didit's flow: the waiting browser reloads itself and goes on to the client
once a phone allowed it).

Attacks, each a test that fails without its defence: user code brute force (throttled per
address, 429 before the lookup), CSRF on every form, an approval replayed (completes once),
the waiting browser's cookie replayed with another authorization request, a login ``next``
pointing elsewhere, rows made without bound by reloading the login page.

One runtime per backend for the module, with small abuse limits; each case moves the frozen
clock past the throttle window first, so no case sees another's counters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import segno
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.conftest import BACKENDS, ISSUER
from tests.web.conftest import module_runtime
from tests.web.helpers import assert_tokens
from tests.web.test_pages import (
    LOGIN,
    VERIFIER,
    Browser,
    Page,
    Party,
    assert_page_headers,
    assert_self_contained,
    at_redirect_uri,
    authorize_url,
    cookie_attributes,
    exchange,
    id_claims,
    make_party,
    set_cookies,
)
from tokend.core import authorization as authz
from tokend.core.clock import FrozenClock
from tokend.core.device import USER_CODE_ALPHABET
from tokend.runtime import Runtime
from tokend.store.schema import device_authorizations
from tokend.web.app import create_app

DEVICE = "/device"
USER_CODE_LIMIT = 5
START_LIMIT = 6
WINDOW = 900
GENERIC = "That code is not valid, or it has expired."
CODE = re.compile(rf"[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}")


@pytest.fixture(scope="module", params=BACKENDS)
def rt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    runtime = module_runtime(
        request,
        tmp_path_factory,
        throttle_window=WINDOW,
        user_code_failure_limit=USER_CODE_LIMIT,
        cross_device_start_limit=START_LIMIT,
    )
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def app(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt.settings, runtime=rt), base_url=ISSUER) as client:
        yield client


@pytest.fixture
def clock(rt: Runtime) -> FrozenClock:
    assert isinstance(rt.clock, FrozenClock)
    rt.clock.advance(WINDOW + 1)  # fresh abuse windows for every case
    return rt.clock


def _browser(app: TestClient) -> Iterator[Browser]:
    client = TestClient(app.app, base_url=ISSUER, follow_redirects=False)
    yield Browser(client)
    client.close()


@pytest.fixture
def desktop(app: TestClient, clock: FrozenClock) -> Iterator[Browser]:
    yield from _browser(app)


@pytest.fixture
def phone(app: TestClient, clock: FrozenClock) -> Iterator[Browser]:
    yield from _browser(app)


@pytest.fixture
def party(rt: Runtime) -> Party:
    return make_party(rt, public=True, name="Acme TV")


def signed_in(phone: Browser, party: Party) -> None:
    """``phone`` signs in as ``party``'s user through /device (the login form's next)."""
    r = phone.get(DEVICE)
    assert r.status_code == 200
    form = Page(r.text).form(LOGIN)
    assert form.hidden["next"] == DEVICE
    r = phone.submit_login(form, party.user.username, party.password)
    assert r.status_code == 303 and r.headers["location"] == ISSUER + DEVICE, r.text


def start_device(rt: Runtime, party: Party) -> str:
    """A device (a TV) starts an authorization; the user code it shows."""
    return rt.device.start(party.client, ("openid", "offline"), address="203.0.113.7").user_code


def enter_code(phone: Browser, typed: str) -> httpx.Response:
    r = phone.get(DEVICE)
    assert r.status_code == 200, r.text
    form = Page(r.text).form(DEVICE)
    return phone.post(DEVICE, {**form.hidden, "user_code": typed})


def decide(phone: Browser, consent: httpx.Response, decision: str) -> httpx.Response:
    assert consent.status_code == 200, consent.text
    form = Page(consent.text).form(DEVICE)
    return phone.post(DEVICE, {**form.hidden, "decision": decision})


def rows(rt: Runtime) -> int:
    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(device_authorizations)).scalar())


# -- /device ------------------------------------------------------------------------------


def test_typed_code_lowercase_without_dash_then_allow(
    rt: Runtime, phone: Browser, party: Party
) -> None:
    user_code = start_device(rt, party)
    signed_in(phone, party)
    consent = enter_code(phone, user_code.replace("-", "").lower())
    assert consent.status_code == 200, consent.text
    assert_page_headers(consent)
    assert_self_contained(consent.text)
    text = Page(consent.text).text
    assert "Acme TV on another device wants to access your account" in text
    assert "Only allow this if you started it yourself" in text
    assert "it came from another device" in text
    assert user_code in text and "203.0.113.7" in text
    assert "Stay connected" in text and "Confirm it's you" in text
    assert party.user.username in text

    done = decide(phone, consent, "allow")
    assert done.status_code == 200, done.text
    assert "You can go back to your device" in Page(done.text).text
    assert rt.device.pending(user_code) is None  # decided: no longer pending

    # The same consent form posted again: the approval happened once, and it says so.
    again = decide(phone, consent, "allow")
    assert again.status_code == 409
    assert "no longer waiting" in Page(again.text).text


def test_always_asks_even_after_consent_to_the_client(
    rt: Runtime, phone: Browser, party: Party
) -> None:
    rt.accounts.save_consent(party.user.id, party.client_id, ("openid", "offline"))
    signed_in(phone, party)
    consent = enter_code(phone, start_device(rt, party))
    assert Page(consent.text).form(DEVICE).buttons[1].value == "allow"


def test_confirm_link_sign_in_then_deny(rt: Runtime, phone: Browser, party: Party) -> None:
    user_code = start_device(rt, party)
    # The link (verification_uri_complete) opened signed out: the login form goes on to it.
    r = phone.get(f"{DEVICE}?user_code={user_code.lower().replace('-', '')}")
    form = Page(r.text).form(LOGIN)
    assert form.hidden["next"] == f"{DEVICE}?user_code={user_code}"
    assert "to connect your other device" in Page(r.text).text
    r = phone.submit_login(form, party.user.username, party.password)
    confirm = phone.follow(r)
    assert confirm.status_code == 200
    page = Page(confirm.text)
    assert "Confirm the code" in page.text and user_code in page.text
    consent = phone.post(DEVICE, page.form(DEVICE).hidden)
    assert "wants to access your account" in Page(consent.text).text

    done = decide(phone, consent, "deny")
    assert done.status_code == 200
    assert "Request denied" in Page(done.text).text
    assert rt.device.pending(user_code) is None
    assert decide(phone, consent, "allow").status_code == 409  # denied stays denied


def test_unknown_and_expired_codes_get_the_same_answer(
    rt: Runtime, phone: Browser, clock: FrozenClock, party: Party
) -> None:
    user_code = start_device(rt, party)
    signed_in(phone, party)
    unknown = enter_code(phone, "BBBB-BBBB")
    clock.advance(rt.settings.device_code_ttl + 1)
    expired = enter_code(phone, user_code)
    malformed = enter_code(phone, "hello")
    for r in (unknown, expired, malformed):
        assert r.status_code == 400
        assert GENERIC in Page(r.text).text
    assert Page(unknown.text).text == Page(expired.text).text  # no oracle between them


def test_confirm_link_never_looks_the_code_up(rt: Runtime, phone: Browser, party: Party) -> None:
    signed_in(phone, party)
    for _ in range(USER_CODE_LIMIT + 2):  # GETs of wrong codes are neither lookups nor counted
        assert phone.get(f"{DEVICE}?user_code=BBBB-BBBB").status_code == 200
    assert enter_code(phone, "BBBB-BBBC").status_code == 400  # not throttled


def test_code_brute_force_is_throttled_before_the_lookup(
    rt: Runtime, phone: Browser, party: Party
) -> None:
    user_code = start_device(rt, party)
    signed_in(phone, party)
    guesses = iter(f"BBBB-{a}{b}{c}{d}" for a in "CD" for b in "FG" for c in "HJ" for d in "KL")
    for _ in range(USER_CODE_LIMIT - 1):
        assert enter_code(phone, next(guesses)).status_code == 400
    filled = enter_code(phone, next(guesses))  # the failure that fills the window
    assert filled.status_code == 400
    # Now even the right code is refused, with Retry-After, before it is looked at.
    r = enter_code(phone, user_code)
    assert r.status_code == 429, r.text
    assert 0 < int(r.headers["retry-after"]) <= WINDOW
    assert "Too many wrong codes" in Page(r.text).text
    assert rt.device.pending(user_code) is not None  # still pending: nothing was decided


def test_forms_refuse_csrf(rt: Runtime, app: TestClient, phone: Browser, party: Party) -> None:
    user_code = start_device(rt, party)
    signed_in(phone, party)
    consent = enter_code(phone, user_code)
    form = Page(consent.text).form(DEVICE).hidden
    # No token, a forged token, another origin: 403, nothing decided.
    for data, headers in (
        ({k: v for k, v in form.items() if k != "csrf_token"}, {}),
        ({**form, "csrf_token": "x" * 43}, {}),
        (form, {"origin": "https://evil.example"}),
    ):
        r = phone.post(DEVICE, {**data, "decision": "allow"}, **headers)
        assert r.status_code == 403, r.text
    # The form posted from another browser (its own session): refused too.
    attacker = Browser(TestClient(app.app, base_url=ISSUER, follow_redirects=False))
    signed_in(attacker, make_party(rt))
    r = attacker.post(DEVICE, {**form, "decision": "allow"})
    assert r.status_code == 403
    assert rt.device.pending(user_code) is not None
    assert decide(phone, consent, "allow").status_code == 200


def test_login_next_allows_only_device_paths(phone: Browser, party: Party) -> None:
    form = Page(phone.get(DEVICE).text).form(LOGIN)
    for bad in (
        "/device?user_code=BCDF-GHJK&x=1",
        "/device?user_code=bcdfghjk",  # not as the pages write it
        "/device?user_code=AAAA-AAAA",
        "/devices",
        "//evil.example/device",
        "https://evil.example/device",
    ):
        r = phone.post(LOGIN, {**form.hidden, "next": bad, "username": "x", "password": "y"})
        assert r.status_code == 403, bad
    r = phone.post(
        LOGIN,
        {**form.hidden, "next": "/device?user_code=BCDF-GHJK", "username": party.user.username,
         "password": party.password},
    )  # fmt: skip
    assert r.headers["location"] == f"{ISSUER}/device?user_code=BCDF-GHJK"


# -- the login page's cross-device QR -----------------------------------------------------


def qr_panel(r: httpx.Response) -> tuple[str, str]:
    """The login page's user code and the QR's link."""
    assert r.status_code == 200, r.text
    page = Page(r.text)
    assert "With your phone" in page.text
    (code,) = set(CODE.findall(page.text))
    assert '<svg viewBox="' in r.text  # the QR, inline
    links = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith(DEVICE)]
    assert links == [f"{DEVICE}?user_code={code}"]
    link = f"{ISSUER}{DEVICE}?user_code={code}"
    # The QR encodes exactly that link (segno's SVG of it, inline).
    qr = segno.make(link, error="m")
    assert qr.svg_inline(scale=4, dark="#000", light="#fff", omitsize=True, svgclass=None,
                         lineclass=None) in r.text  # fmt: skip
    return code, link


def refresh_meta(r: httpx.Response) -> str | None:
    metas = [a for t, a in Page(r.text).tags if t == "meta" and a.get("http-equiv") == "refresh"]
    return metas[0]["content"] if metas else None


def xd_cookie(r: httpx.Response) -> tuple[str, str, set[str]]:
    (name,) = [n for n in set_cookies(r) if "tokend_xd_" in n]
    value, attrs = cookie_attributes(set_cookies(r)[name])
    return name, value, attrs


def phone_allows(phone: Browser, party: Party, link: str, decision: str = "allow") -> None:
    signed_in(phone, party)
    r = phone.get(link.removeprefix(ISSUER))
    confirm = Page(r.text)
    consent = phone.post(DEVICE, confirm.form(DEVICE).hidden)
    text = Page(consent.text).text
    assert "it came from another browser" in text
    assert decide(phone, consent, decision).status_code == 200


def test_login_page_shows_a_qr_bound_to_the_request_and_reuses_it(
    rt: Runtime, desktop: Browser, party: Party
) -> None:
    url = authorize_url(party)
    before = rows(rt)
    r = desktop.get(url)
    code, link = qr_panel(r)
    assert_page_headers(r, "https://app.example")
    assert_self_contained(r.text)
    assert refresh_meta(r) == f"10; url={url}"
    name, value, attrs = xd_cookie(r)
    assert name.startswith("__Secure-tokend_xd_")  # https issuer
    assert value.startswith("tkd_dc_")
    assert {"httponly", "secure", "samesite=lax", "path=/auth/v2/authorize"} <= attrs, attrs
    assert f"max-age={rt.settings.device_code_ttl}" in attrs
    assert value not in r.text  # the device code is the browser's secret, never on the page
    # Reloads reuse the pending row: same code, no new cookie, no new row.
    for _ in range(3):
        again = desktop.get(url)
        assert qr_panel(again)[0] == code
        assert not [n for n in set_cookies(again) if "tokend_xd_" in n]
    assert rows(rt) == before + 1
    # "Stop checking": the password form alone, no QR, no reload.
    stop = desktop.get(f"{LOGIN}?{url.split('?', 1)[1]}")
    assert stop.status_code == 200 and refresh_meta(stop) is None
    assert "With your phone" not in Page(stop.text).text
    assert link.endswith(code)


def test_phone_approval_completes_the_waiting_browser_once(
    rt: Runtime, app: TestClient, desktop: Browser, phone: Browser, clock: FrozenClock, party: Party
) -> None:
    url = authorize_url(party, state="st-1", nonce="n-1")
    first = desktop.get(url)
    _, link = qr_panel(first)
    _, cookie_value, _ = xd_cookie(first)
    clock.advance(5)
    phone_signed_in_at = clock.now()
    phone_allows(phone, party, link)
    clock.advance(7)
    r = desktop.get(url)
    got = at_redirect_uri(r, 302)
    assert got["state"] == "st-1" and got["iss"] == ISSUER
    assert any("tokend_xd_" in n and "max-age=0" in h.lower() for n, h in set_cookies(r).items())
    # The code exchanges as after a password sign-in: PKCE, nonce, the phone's auth_time.
    tokens = assert_tokens(exchange(app, party, got["code"], verifier=VERIFIER))
    claims = id_claims(app, tokens["id_token"], party.client_id)
    assert claims["nonce"] == "n-1"
    assert claims["auth_time"] == int(phone_signed_in_at)  # the phone's sign-in
    assert tokens["refresh_token"]
    # The approval is spent: the same cookie again gets a fresh QR, never a second code.
    name = xd_name(rt, url)
    desktop.client.cookies.set(name, cookie_value, domain="issuer.test", path="/auth/v2/authorize")
    again = desktop.get(url)
    assert again.status_code == 200 and qr_panel(again)


def xd_name(rt: Runtime, url: str) -> str:
    """The name of the waiting browser's cookie for the authorization request ``url``."""
    req = authz.validate(parse_qsl(urlsplit(url).query), rt.store.get_client)
    return f"__Secure-tokend_xd_{authz.request_digest(req)[:8].hex()}"


def test_phone_denial_sends_access_denied(desktop: Browser, phone: Browser, party: Party) -> None:
    url = authorize_url(party, state="st-2")
    _, link = qr_panel(desktop.get(url))
    phone_allows(phone, party, link, decision="deny")
    got = at_redirect_uri(desktop.get(url), 302)
    assert got["error"] == "access_denied" and got["state"] == "st-2"
    assert "code" not in got


def test_expired_pending_gets_a_fresh_qr(
    rt: Runtime, desktop: Browser, clock: FrozenClock, party: Party
) -> None:
    url = authorize_url(party)
    first = desktop.get(url)
    code, _ = qr_panel(first)
    clock.advance(rt.settings.device_code_ttl + 1)
    r = desktop.get(url)
    fresh, _ = qr_panel(r)
    assert fresh != code and xd_cookie(r)[1] != xd_cookie(first)[1]


def test_cookie_replayed_with_another_request_completes_nothing(
    rt: Runtime, desktop: Browser, phone: Browser, party: Party
) -> None:
    url_a = authorize_url(party, state="a")
    first = desktop.get(url_a)
    _, link = qr_panel(first)
    _, value_a, _ = xd_cookie(first)
    phone_allows(phone, party, link)
    # The approved cookie, sent under request B's cookie name with
    # request B: B is not completed, and A's approval is not spent by it.
    url_b = authorize_url(party, state="b")
    name_b = xd_name(rt, url_b)
    desktop.client.cookies.set(name_b, value_a, domain="issuer.test", path="/auth/v2/authorize")
    r = desktop.get(url_b)
    assert r.status_code == 200 and qr_panel(r)
    got = at_redirect_uri(desktop.get(url_a), 302)
    assert got["state"] == "a" and got["code"]


def test_no_qr_when_the_client_asks_for_a_fresh_sign_in(
    rt: Runtime, desktop: Browser, party: Party
) -> None:
    before = rows(rt)
    for params in ({"prompt": "login"}, {"max_age": "60"}):
        r = desktop.get(authorize_url(party, **params))
        assert r.status_code == 200 and refresh_meta(r) is None
        assert "With your phone" not in Page(r.text).text
    assert rows(rt) == before


def test_rows_started_per_address_are_capped(
    rt: Runtime, app: TestClient, clock: FrozenClock, party: Party
) -> None:
    before = rows(rt)
    shown = 0
    for _ in range(START_LIMIT + 3):  # cookie-less page views, each would start a row
        r = TestClient(app.app, base_url=ISSUER).get(authorize_url(party))
        assert r.status_code == 200
        shown += "With your phone" in Page(r.text).text
    assert shown == START_LIMIT
    assert rows(rt) == before + START_LIMIT
