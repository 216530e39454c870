"""Browser sessions, their cookies and their end, over HTTP (issue 10, §5 and §7).

- On an https issuer the cookies are ``__Host-`` cookies (Secure, Path=/, no Domain) and
  every response carries ``Strict-Transport-Security``; a cookie planted under the plain
  name (a sibling subdomain, a plain-http response) is ignored.
- The CSRF token is tied to the session: one from before sign-in, or from another session,
  is refused (login CSRF, token fixation).
- Revoking an application on /account withdraws its consent; /account lists remembered
  consents and withdraws each.
- A password change, ``tokend tokens revoke --user`` and "Sign out everywhere" end every
  browser session of the user: a thief holding an old session cookie gets no new code.

Each attack is run as an attacker would run it: with a real second browser (its own cookie
jar), a stolen or planted cookie, and the real CLI in-process. One runtime per backend.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY
from tests.web.conftest import shared_browser_fixtures
from tests.web.helpers import TOKEN, assert_oauth_error, assert_tokens, storage_snapshot
from tests.web.test_pages import (
    ACCOUNT,
    CONSENT,
    LOGIN,
    LOGOUT,
    REVOKE,
    Browser,
    Page,
    Party,
    assert_page_headers,
    assert_self_contained,
    at_redirect_uri,
    authorize_url,
    cookie_attributes,
    do_refresh,
    exchange,
    make_client,
    make_party,
    set_cookies,
)
from tokend.cli import main
from tokend.config import Settings
from tokend.core.clock import FrozenClock
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app

WITHDRAW = "/account/consents/withdraw"
EVERYWHERE = "/account/logout/everywhere"
SESSION = "__Host-tokend_session"
CSRF = "__Host-tokend_csrf"
HSTS = "max-age=63072000; includeSubDomains"
PLAIN_ISSUER = "http://localhost:8000"


rt, http, clock = shared_browser_fixtures()


@pytest.fixture
def party(rt: Runtime) -> Party:
    return make_party(rt)


@pytest.fixture
def browser(http: TestClient) -> Browser:
    return Browser(http)


@pytest.fixture
def new_browser(http: TestClient) -> Iterator[type[Browser]]:
    """Makes more browsers on the same server, each with its own cookie jar."""
    clients: list[TestClient] = []

    def make() -> Browser:
        client = TestClient(http.app, base_url=ISSUER, follow_redirects=False)
        clients.append(client)
        return Browser(client)

    yield make  # type: ignore[misc]
    for client in clients:
        client.close()


@pytest.fixture
def plain(rt: Runtime) -> Iterator[TestClient]:
    """The same database behind an http issuer (a development set-up, or TLS cut off at a
    proxy that the issuer does not name)."""
    settings = Settings(
        database_url=rt.settings.database_url, secret_key=SECRET_KEY, issuer=PLAIN_ISSUER
    )
    runtime = build_runtime(settings, clock=rt.clock)
    client = TestClient(create_app(settings, runtime=runtime), base_url=PLAIN_ISSUER,
                        follow_redirects=False)  # fmt: skip
    yield client
    client.close()
    runtime.close()


def session_of(b: Browser) -> str:
    """The browser's session id, whatever its cookie is called (so that these tests also run,
    and fail, against the code from before the __Host- prefix)."""
    sid = b.cookie(SESSION) or b.cookie("tokend_session")
    assert sid
    return sid


def holding(make: type[Browser], sid: str) -> Browser:
    """A thief's browser holding a copy of a session cookie."""
    thief = make()
    for name in (SESSION, "tokend_session"):
        thief.client.cookies.set(name, sid, domain="issuer.test", path="/")
    return thief


def gets_no_code(b: Browser, party: Party) -> None:
    """prompt=none from this browser: login_required, no code."""
    got = at_redirect_uri(b.get(authorize_url(party, prompt="none")), 302)
    assert got.get("error") == "login_required" and "code" not in got, got


def gets_a_code(b: Browser, party: Party) -> str:
    got = at_redirect_uri(b.get(authorize_url(party, prompt="none")), 302)
    assert "code" in got, got
    return got["code"]


def cli(rt: Runtime, *args: str, input: str | None = None) -> str:
    r = CliRunner().invoke(
        main,
        [*args, "--database-url", rt.settings.database_url],
        input=input,
        env={"TOKEND_SECRET_KEY": SECRET_KEY},
    )
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r.stderr


# -- Strict-Transport-Security and __Host- cookies on an https issuer -------------------------


def test_hsts_on_every_response_of_an_https_issuer(http: TestClient, party: Party) -> None:
    responses = [
        http.get(authorize_url(party)),  # a page
        http.get(authorize_url(party, client_id="nobody")),  # an error page
        http.get(ACCOUNT),
        http.post(LOGIN, data={}),  # 403
        http.post(TOKEN, data={"grant_type": "refresh_token"}),  # the token fast path, 4xx
        http.get("/auth/jwks"),
        http.get("/.well-known/openid-configuration"),
        http.get("/healthz"),
        http.get("/no/such/path"),  # 404
        http.get(TOKEN),  # 405
    ]
    for r in responses:
        assert r.headers.get_list("strict-transport-security") == [HSTS], (r.url, r.headers)


def test_no_hsts_on_a_plain_http_issuer(plain: TestClient, party: Party) -> None:
    for r in (plain.get(authorize_url(party)), plain.get("/auth/jwks"), plain.get("/nowhere")):
        assert "strict-transport-security" not in r.headers


def test_cookies_are_host_prefixed_on_an_https_issuer(browser: Browser, party: Party) -> None:
    url = authorize_url(party)
    r = browser.get(url)
    cookies = set_cookies(r)
    # The CSRF cookie, and the cross-device sign-in's (tokend.web.pages.crossdevice): scoped
    # to the authorize path, so __Secure- (Secure, no Domain) rather than __Host-.
    (waiting,) = set(cookies) - {CSRF}
    assert waiting.startswith("__Secure-tokend_xd_"), cookies
    _, attrs = cookie_attributes(cookies[CSRF])
    assert {"secure", "path=/", "httponly", "samesite=lax"} <= attrs
    assert not any(a.startswith("domain") for a in attrs)
    _, attrs = cookie_attributes(cookies[waiting])
    assert {"secure", "path=/auth/v2/authorize", "httponly", "samesite=lax"} <= attrs
    assert not any(a.startswith("domain") for a in attrs)
    r = browser.submit_login(Page(r.text).form(LOGIN), party.user.username, party.password)
    assert r.status_code == 303
    cookies = set_cookies(r)
    assert set(cookies) == {SESSION, CSRF}, cookies
    for header in cookies.values():
        _, attrs = cookie_attributes(header)
        assert {"secure", "path=/", "httponly", "samesite=lax"} <= attrs
        assert not any(a.startswith("domain") for a in attrs)
    # Sign-out deletes the session cookie under the same rules (else browsers ignore it).
    r = browser.post(LOGOUT, browser.account()[1].form(LOGOUT).hidden)
    _, attrs = cookie_attributes(set_cookies(r)[SESSION])
    assert {"secure", "path=/"} <= attrs and "max-age=0" in attrs


def test_plain_cookies_keep_their_names_on_a_plain_http_issuer(
    plain: TestClient, party: Party
) -> None:
    b = Browser(plain)
    r = b.get(authorize_url(party))
    (waiting,) = set(set_cookies(r)) - {"tokend_csrf"}
    assert waiting.startswith("tokend_xd_")  # the cross-device sign-in's
    r = b.submit_login(Page(r.text).form(LOGIN), party.user.username, party.password)
    assert r.status_code == 303
    assert set(set_cookies(r)) == {"tokend_session", "tokend_csrf"}
    assert "strict-transport-security" not in r.headers


def test_a_tossed_session_cookie_is_ignored(
    browser: Browser, new_browser: type[Browser], rt: Runtime, party: Party
) -> None:
    """Cookie tossing: a sibling subdomain (or a plain-http answer) sets ``tokend_session``
    to the attacker's own valid session, hoping the victim then grants the attacker's
    account (login CSRF). A ``__Host-`` cookie cannot be set that way, and the plain name
    is not read on an https issuer."""
    attacker = new_browser()
    mallory = make_party(rt)
    attacker.grant(mallory)
    attacker_sid = session_of(attacker)
    browser.client.cookies.set("tokend_session", attacker_sid, domain="issuer.test", path="/")
    r = browser.get(authorize_url(mallory, prompt="none"))
    assert at_redirect_uri(r, 302)["error"] == "login_required"
    r = browser.get(ACCOUNT)
    assert Page(r.text).form(LOGIN) and mallory.user.username not in r.text


def test_a_tossed_csrf_cookie_does_not_let_an_attacker_sign_the_victim_in(
    browser: Browser, new_browser: type[Browser], rt: Runtime, party: Party
) -> None:
    """Login CSRF with a tossed CSRF cookie: the attacker takes a (cookie, token) pair from a
    visit of their own, plants the cookie under the plain name in the victim's browser and
    posts their own credentials with the token (no Origin header: an old browser, or a
    form the Origin check does not see)."""
    mallory = make_party(rt)
    attacker = new_browser()
    url = authorize_url(mallory)
    form = attacker.login_page(url)
    cookie = attacker.cookie(CSRF) or attacker.cookie("tokend_csrf")
    assert cookie
    browser.client.cookies.set("tokend_csrf", cookie, domain="issuer.test", path="/")
    engine = browser.client.app.state.runtime.store.engine
    before = storage_snapshot(engine)
    r = browser.submit_login(form, mallory.user.username, mallory.password)
    assert r.status_code == 403 and "location" not in r.headers
    assert not any("session" in name for name in set_cookies(r))
    assert storage_snapshot(engine) == before


# -- the CSRF token: rotated at sign-in, tied to the session --------------------------------


def test_a_csrf_token_from_before_sign_in_stops_working_after_it(
    browser: Browser, party: Party
) -> None:
    form = browser.login_page(authorize_url(party))
    old_token = form.hidden["csrf_token"]
    old_cookie = browser.cookie(CSRF) or browser.cookie("tokend_csrf")
    r = browser.submit_login(form, party.user.username, party.password)
    assert r.status_code == 303
    # The pre-login token opens none of the signed-in forms, nor the login form again.
    for path in (LOGOUT, EVERYWHERE):
        assert browser.post(path, {"csrf_token": old_token}).status_code == 403
    assert browser.submit_login(form, party.user.username, party.password).status_code == 403
    # The CSRF cookie itself is replaced at sign-in.
    new_cookie = browser.cookie(CSRF) or browser.cookie("tokend_csrf")
    assert new_cookie and new_cookie != old_cookie
    assert party.user.username in browser.get(ACCOUNT).text  # still signed in
    # The token of a page shown after sign-in works.
    fresh = browser.account()[1].form(LOGOUT).hidden
    assert fresh["csrf_token"] != old_token
    assert browser.post(LOGOUT, fresh).status_code == 303


def test_a_csrf_token_from_another_session_is_refused(
    plain: TestClient, rt: Runtime, party: Party
) -> None:
    """Token fixation on an http issuer, where a network attacker can set cookies: Mallory
    signs in, takes her page's CSRF cookie and token, plants the cookie in Alice's browser
    and makes it post her token (a cross-site form; the Origin check aside). The token is
    bound to Mallory's session, not to Alice's: refused."""
    alice = Browser(plain)
    alice.grant(party)
    mallory_party = make_party(rt)
    mallory = Browser(TestClient(plain.app, base_url=PLAIN_ISSUER, follow_redirects=False))
    try:
        mallory.grant(mallory_party)
        token = Page(mallory.get(ACCOUNT).text).form(LOGOUT).hidden["csrf_token"]
        alice.client.cookies.set("tokend_csrf", mallory.cookie("tokend_csrf"))
        for path in (LOGOUT, EVERYWHERE):
            r = alice.post(path, {"csrf_token": token})
            assert r.status_code == 403 and "location" not in r.headers
        assert party.user.username in alice.get(ACCOUNT).text  # Alice is still signed in
        gets_a_code(alice, party)
    finally:
        mallory.client.close()


def test_the_session_id_is_new_at_every_sign_in_even_from_the_same_browser(
    browser: Browser, new_browser: type[Browser], party: Party
) -> None:
    browser.grant(party)
    first = session_of(browser)
    browser.get(ACCOUNT)
    r = browser.post(LOGOUT, browser.account()[1].form(LOGOUT).hidden)
    assert r.status_code == 303
    browser.sign_in(ACCOUNT, party)
    second = session_of(browser)
    assert second != first
    gets_no_code(holding(new_browser, first), party)


# -- revoking an application withdraws its consent ------------------------------------------


def test_revoking_an_app_withdraws_its_consent(
    browser: Browser, http: TestClient, party: Party
) -> None:
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    assert "code" in at_redirect_uri(browser.get(authorize_url(party, prompt="none")), 302)
    r = browser.post(REVOKE, browser.account()[1].form(REVOKE).hidden)
    assert r.status_code == 303
    assert_oauth_error(do_refresh(http, party, tokens["refresh_token"]), "invalid_grant")
    # The same browser, still signed in, gets no new code without being asked again.
    got = at_redirect_uri(browser.get(authorize_url(party, prompt="none")), 302)
    assert got["error"] == "consent_required" and "code" not in got
    r = browser.get(authorize_url(party))
    assert r.status_code == 200 and Page(r.text).form(CONSENT)


def test_revoking_an_app_expires_the_codes_it_has_not_exchanged(
    browser: Browser, http: TestClient, party: Party
) -> None:
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    pending = gets_a_code(browser, party)  # handed out, not yet exchanged
    browser.post(REVOKE, browser.account()[1].form(REVOKE).hidden)
    assert_oauth_error(exchange(http, party, pending), "invalid_grant")
    assert_oauth_error(do_refresh(http, party, tokens["refresh_token"]), "invalid_grant")


def test_account_lists_remembered_consents_and_withdraws_each(
    browser: Browser, http: TestClient, clock: FrozenClock, rt: Runtime, party: Party
) -> None:
    notes = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    clock.advance(60)
    other, secret = make_client(rt, name="Acme Calendar")
    calendar = Party(other, secret, party.user, party.password)
    r = browser.get(authorize_url(calendar, scope="openid offline"))
    code = at_redirect_uri(browser.decide(r, "allow"))["code"]
    cal = assert_tokens(exchange(http, calendar, code))

    r, page = browser.account()
    assert_page_headers(r)
    assert_self_contained(r.text)
    forms = [f for f in page.forms if f.action == WITHDRAW]
    by_client = {f.hidden["client_id"]: f for f in forms}
    assert set(by_client) == {party.client_id, other.client_id}
    assert all(b.text == "Withdraw" for f in forms for b in f.buttons)
    assert "Remembered permissions" in page.text
    # Plain words, not scope names; newest first.
    consents_html = r.text[r.text.index('class="scopes consents"') :]
    assert consents_html.index("Acme Calendar") < consents_html.index("Acme Notes")
    assert "Stay connected" in consents_html and "See your email address" in consents_html
    assert "offline" not in consents_html.split("</ul>")[0]
    assert 'aria-label="Withdraw the permissions of Acme Notes"' in consents_html

    # CSRF: no token, another token, another origin: nothing changes.
    engine = rt.store.engine
    before = storage_snapshot(engine)
    notes_form = by_client[party.client_id]
    for data, headers in (
        ({"client_id": party.client_id}, {}),
        ({**notes_form.hidden, "csrf_token": "x" * 43}, {}),
        (notes_form.hidden, {"Origin": "https://evil.example"}),
    ):
        assert browser.post(WITHDRAW, data, **headers).status_code == 403
    assert storage_snapshot(engine) == before

    r = browser.post(WITHDRAW, notes_form.hidden)
    assert r.status_code == 303 and r.headers["location"] == ISSUER + ACCOUNT
    # Notes: the consent is gone and so is what it gave; Calendar keeps both.
    _, page = browser.account()
    assert {f.hidden["client_id"] for f in page.forms if f.action == WITHDRAW} == {other.client_id}
    assert_oauth_error(do_refresh(http, party, notes["refresh_token"]), "invalid_grant")
    got = at_redirect_uri(browser.get(authorize_url(party, prompt="none")), 302)
    assert got["error"] == "consent_required"
    assert assert_tokens(do_refresh(http, calendar, cal["refresh_token"]))
    r = browser.get(authorize_url(calendar, scope="openid offline", prompt="none"))
    assert "code" in at_redirect_uri(r, 302)
    # Withdrawing what is not there (again, or unknown) is a no-op.
    assert browser.post(WITHDRAW, notes_form.hidden).status_code == 303
    assert browser.post(WITHDRAW, {**notes_form.hidden, "client_id": "nope"}).status_code == 303


def test_a_user_cannot_withdraw_another_users_consent(
    browser: Browser, new_browser: type[Browser], http: TestClient, rt: Runtime, party: Party
) -> None:
    alice_tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    bob = make_party(rt)
    bob_browser = new_browser()
    bob_browser.grant(bob)
    form = bob_browser.account()[1].form(WITHDRAW)
    r = bob_browser.post(WITHDRAW, {**form.hidden, "client_id": party.client_id})
    assert r.status_code == 303
    gets_a_code(browser, party)  # Alice's consent is still there
    assert assert_tokens(do_refresh(http, party, alice_tokens["refresh_token"]))


# -- the end of every browser session of a user -----------------------------------------------


def test_sign_out_everywhere_ends_every_session_of_the_user(
    browser: Browser, new_browser: type[Browser], http: TestClient, rt: Runtime, party: Party
) -> None:
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    laptop = new_browser()
    laptop.sign_in(ACCOUNT, party)
    thief = holding(new_browser, session_of(browser))
    gets_a_code(thief, party)  # the stolen cookie works, until...
    pending = gets_a_code(thief, party)
    # Someone else's session is not touched.
    carol = make_party(rt, name="Carol's app")
    carols = new_browser()
    carols.grant(carol)

    _, page = browser.account()
    form = page.form(EVERYWHERE)
    assert [b.text for b in form.buttons] == ["Sign out everywhere"]
    r = browser.post(EVERYWHERE, form.hidden)
    assert r.status_code == 303 and r.headers["location"] == ISSUER + ACCOUNT
    value, attrs = cookie_attributes(set_cookies(r)[SESSION])
    assert value in ("", '""') and "max-age=0" in attrs
    for b in (browser, laptop, thief):
        gets_no_code(b, party)
        assert Page(b.get(ACCOUNT).text).form(LOGIN)
    assert_oauth_error(exchange(http, party, pending), "invalid_grant")
    gets_a_code(carols, carol)
    # The applications keep the access the user gave them (OIDC Core §11: offline access
    # outlives the sign-in); /account revokes those one by one.
    assert assert_tokens(do_refresh(http, party, tokens["refresh_token"]))


def test_sign_out_everywhere_needs_the_csrf_token(
    browser: Browser, new_browser: type[Browser], party: Party
) -> None:
    browser.grant(party)
    form = browser.account()[1].form(EVERYWHERE)
    for data, headers in (
        ({}, {}),
        ({"csrf_token": "x" * 43}, {}),
        (form.hidden, {"Origin": "https://evil.example"}),
    ):
        assert browser.post(EVERYWHERE, data, **headers).status_code == 403
    gets_a_code(browser, party)


def test_a_password_change_ends_every_browser_session(
    browser: Browser, new_browser: type[Browser], http: TestClient, rt: Runtime, party: Party
) -> None:
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    thief = holding(new_browser, session_of(browser))
    pending = gets_a_code(thief, party)
    # A profile change is not a credential change: the sessions stay.
    cli(rt, "users", "update", party.user.username, "--email", "a@example.com")
    gets_a_code(thief, party)

    err = cli(rt, "users", "update", party.user.username, "--password-stdin", input="n3w pw\n")
    gets_no_code(thief, party)
    gets_no_code(browser, party)
    assert "session" in err
    assert_oauth_error(exchange(http, party, pending), "invalid_grant")
    # The old password no longer signs in; the new one does.
    form = browser.login_page(authorize_url(party))
    assert browser.submit_login(form, party.user.username, party.password).status_code == 400
    new = Party(party.client, party.secret, party.user, "n3w pw")
    browser.sign_in(ACCOUNT, new)
    gets_a_code(browser, party)
    # The families are the administrator's to revoke (tokens revoke --user), not a side
    # effect of a new password.
    assert assert_tokens(do_refresh(http, party, tokens["refresh_token"]))


def test_tokens_revoke_user_ends_every_browser_session(
    browser: Browser, new_browser: type[Browser], http: TestClient, rt: Runtime, party: Party
) -> None:
    tokens = assert_tokens(exchange(http, party, browser.grant(party)["code"]))
    thief = holding(new_browser, session_of(browser))
    pending = gets_a_code(thief, party)
    bob = make_party(rt)
    bobs = new_browser()
    bobs.grant(bob)

    err = cli(rt, "tokens", "revoke", "--user", party.user.username)
    gets_no_code(thief, party)
    gets_no_code(browser, party)
    assert "ended 1 browser session" in err
    # The code the thief got a moment before is worth nothing now, nor the families.
    r = exchange(http, party, pending)
    assert_oauth_error(r, "invalid_grant")
    assert_oauth_error(do_refresh(http, party, tokens["refresh_token"]), "invalid_grant")
    gets_a_code(bobs, bob)  # another user is not touched


def test_the_logout_form_still_ends_only_this_session(
    browser: Browser, new_browser: type[Browser], party: Party
) -> None:
    browser.grant(party)
    laptop = new_browser()
    laptop.sign_in(ACCOUNT, party)
    r = browser.post(LOGOUT, browser.account()[1].form(LOGOUT).hidden)
    assert r.status_code == 303
    gets_no_code(browser, party)
    gets_a_code(laptop, party)


@pytest.mark.parametrize("value", ["a\x00b", "x" * 5000, "é", " "], ids=repr)
@pytest.mark.parametrize(("path", "field"), [(WITHDRAW, "client_id"), (REVOKE, "family_id")])
def test_account_forms_take_any_id_without_a_5xx(
    browser: Browser, rt: Runtime, party: Party, path: str, field: str, value: str
) -> None:
    """A NUL byte reaches PostgreSQL as an error (SQLite hides it); nothing changes. The
    pages' input discipline refuses a form with a control character (403, as any form that
    did not come from this site); other ids are no client's or family's: back to /account."""
    browser.grant(party)
    form = browser.account()[1].form(WITHDRAW)
    before = storage_snapshot(rt.store.engine)
    r = browser.post(path, {"csrf_token": form.hidden["csrf_token"], field: value})
    if "\x00" in value:
        assert r.status_code == 403
    else:
        assert r.status_code == 303 and r.headers["location"] == ISSUER + ACCOUNT
    assert storage_snapshot(rt.store.engine) == before
