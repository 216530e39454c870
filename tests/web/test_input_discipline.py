"""One input discipline for the authorize endpoint and the pages' forms (issue 10 §3, §4, §7),
over HTTP, on SQLite and PostgreSQL (PostgreSQL refuses a NUL in text: a NUL that reached it
was a 500; SQLite stored it quietly).

Before the redirect URI is verified an error is a readable page, never a redirect; after,
it is the RFC 6749 §4.1.2.1 redirect. A form our pages never send is refused like a forged
one (403 page). Redirects name the issuer, never the request's Host header.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from tests.conftest import ISSUER
from tests.web.conftest import shared_browser_fixtures
from tests.web.helpers import storage_snapshot
from tests.web.test_pages import (
    AUTHORIZE,
    LOGIN,
    REDIRECT,
    Browser,
    Page,
    Party,
    assert_page_headers,
    at_redirect_uri,
    authorize_url,
    make_party,
    params_of,
)
from tokend.core.scopes import MAX_SCOPES
from tokend.runtime import Runtime
from tokend.web.parsing import MAX_FIELDS, MAX_QUERY_BYTES

# One runtime per backend for the module, a fresh cookie jar per test (as test_pages.py).


rt, http, clock = shared_browser_fixtures()


@pytest.fixture
def browser(http: TestClient) -> Browser:
    return Browser(http)


@pytest.fixture
def party(rt: Runtime) -> Party:
    return make_party(rt)


def assert_error_page(r, *words: str) -> Page:  # type: ignore[no-untyped-def]
    """A 400 page of our own: no redirect, no form, the security headers."""
    assert r.status_code == 400, r.text
    assert "location" not in r.headers
    assert_page_headers(r)
    page = Page(r.text)
    assert "can't be completed" in page.text
    for word in words:
        assert word in page.text, page.text
    assert not page.forms
    return page


# -- the authorize query ----------------------------------------------------------------------


def test_too_many_parameters_is_an_error_page_not_a_500(browser: Browser, party: Party) -> None:
    """100 parameters: parse_qsl(max_num_fields) raised ValueError, uncaught (500)."""
    extra = [(f"x{i}", "1") for i in range(100)]
    assert_error_page(browser.get(authorize_url(party, *extra)), "too many parameters")


def test_max_fields_parameters_are_fine(browser: Browser, party: Party) -> None:
    base = params_of(authorize_url(party))
    extra = [(f"x{i}", "1") for i in range(MAX_FIELDS - len(base))]
    assert browser.get(authorize_url(party, *extra)).status_code == 200


def test_a_query_over_the_size_limit_is_an_error_page(browser: Browser, party: Party) -> None:
    r = browser.get(authorize_url(party, state="s" * MAX_QUERY_BYTES))
    assert_error_page(r, "longer than")


def test_an_empty_client_id_before_the_real_one_is_a_repetition(
    browser: Browser, party: Party
) -> None:
    """RFC 6749 §3.1: parameters MUST NOT be included more than once, empty or not. The
    empty one was dropped as "omitted" before the repetition was seen."""
    url = authorize_url(party, client_id=None)
    url = url.replace("?", f"?client_id=&client_id={party.client_id}&", 1)
    assert_error_page(browser.get(url), "client_id")


def test_an_empty_redirect_uri_after_the_real_one_is_a_repetition(
    browser: Browser, party: Party
) -> None:
    assert_error_page(browser.get(authorize_url(party) + "&redirect_uri="), "redirect_uri")


@pytest.mark.parametrize("char", ["%00", "%01", "%0A", "%0D", "%1B", "%7F"])
@pytest.mark.parametrize("name", ["nonce", "login_hint", "ui_locales", "scope"])
def test_a_control_character_in_a_parameter_goes_back_as_invalid_request(
    browser: Browser, party: Party, name: str, char: str
) -> None:
    url = authorize_url(party, state="st-1") + f"&{name}=a{char}b"
    if name in ("nonce", "scope"):
        url = authorize_url(party, state="st-1", **{name: None}) + f"&{name}=openid{char}b"
    got = at_redirect_uri(browser.get(url), 302)
    assert got["error"] == "invalid_request", got
    assert name in got["error_description"] and "not allowed" in got["error_description"]
    assert got["state"] == "st-1"


@pytest.mark.parametrize("char", ["%00", "%0A", "%1F"])
def test_a_control_character_in_state_goes_back_without_the_state(
    browser: Browser, party: Party, char: str
) -> None:
    url = authorize_url(party, state=None) + f"&state=a{char}b"
    got = at_redirect_uri(browser.get(url), 302)
    assert got["error"] == "invalid_request" and "state" in got["error_description"]
    assert "state" not in got


def test_a_control_character_in_a_parameter_name_goes_back_as_invalid_request(
    browser: Browser, party: Party
) -> None:
    got = at_redirect_uri(browser.get(authorize_url(party) + "&x%00y=1"), 302)
    assert got["error"] == "invalid_request"


@pytest.mark.parametrize(
    "client_id", ["a%00b", "%00", "a%0Ab", "a%ED%A0%80b", "a%FFb", "x" * 65], ids=repr
)
def test_a_malformed_client_id_never_reaches_storage(
    browser: Browser, party: Party, client_id: str
) -> None:
    """On PostgreSQL a NUL in the client id was psycopg.DataError, a 500."""
    url = authorize_url(party, client_id=None) + f"&client_id={client_id}"
    assert_error_page(browser.get(url))


@pytest.mark.parametrize("redirect_uri", ["https://app.example/cb%00", "%0Ahttps://app.example/cb"])
def test_a_malformed_redirect_uri_is_an_error_page(
    browser: Browser, party: Party, redirect_uri: str
) -> None:
    url = authorize_url(party, redirect_uri=None) + f"&redirect_uri={redirect_uri}"
    assert_error_page(browser.get(url))


def test_percent_encoded_invalid_utf8_is_refused_not_replaced(
    browser: Browser, party: Party
) -> None:
    """%FF used to become U+FFFD silently; now the request is refused (here in state, so the
    redirect URI is not known to be trusted: the whole query is undecodable)."""
    assert_error_page(browser.get(authorize_url(party) + "&login_hint=%FF"), "UTF-8")


def test_raw_utf8_in_the_query_is_read_as_utf8(browser: Browser, party: Party) -> None:
    r = browser.get(authorize_url(party, state=None) + "&state=\u00e9t\u00e9")
    assert r.status_code == 200
    form = Page(r.text).form(LOGIN)
    assert "state=%C3%A9t%C3%A9" in form.hidden["next"]


def test_sixty_five_scope_values_are_invalid_scope(rt: Runtime, browser: Browser) -> None:
    """Scopes are bounded (and parsed in linear time): 5,000 values took ~250 ms."""
    values = [f"s{i}" for i in range(MAX_SCOPES)]
    p = make_party(rt, scopes=" ".join(["openid", *values]))
    got = at_redirect_uri(browser.get(authorize_url(p, scope=" ".join(["openid", *values]))), 302)
    assert got["error"] == "invalid_scope"
    assert f"more than {MAX_SCOPES}" in got["error_description"]


# -- the pages' forms -------------------------------------------------------------------------


def login_body(browser: Browser, party: Party, **fields: str) -> dict[str, str]:
    form = browser.login_page(authorize_url(party))
    return {**form.hidden, "username": party.user.username, "password": party.password, **fields}


def post_raw(browser: Browser, body: str) -> object:
    return browser.client.post(
        LOGIN, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


def encode(fields: dict[str, str] | list[tuple[str, str]]) -> str:
    items = fields.items() if isinstance(fields, dict) else fields
    return "&".join(
        f"{quote(k, safe='')}={quote(v, safe='', errors='surrogatepass')}" for k, v in items
    )


@pytest.mark.parametrize("username", ["alice\x00", "\x00", "al\x01ice", "a\ud800"], ids=repr)
def test_a_control_character_in_the_username_never_reaches_storage(
    browser: Browser, party: Party, rt: Runtime, username: str
) -> None:
    """On PostgreSQL a NUL in the username was psycopg.DataError, a 500."""
    body = login_body(browser, party)
    body["username"] = username
    before = storage_snapshot(rt.store.engine)
    r = post_raw(browser, encode(body))
    assert r.status_code == 403, r.text  # type: ignore[attr-defined]
    assert browser.cookie("tokend_session") is None
    assert storage_snapshot(rt.store.engine) == before


def test_a_nul_in_next_never_reaches_storage(browser: Browser, party: Party) -> None:
    body = login_body(browser, party)
    body["next"] += "\x00"
    assert post_raw(browser, encode(body)).status_code == 403  # type: ignore[attr-defined]


@pytest.mark.parametrize("client_id", ["a%00b", "a%0Ab", "a%FFb"])
def test_a_malformed_client_id_inside_next_is_an_error_page(
    browser: Browser, party: Party, client_id: str
) -> None:
    body = login_body(browser, party)
    body["next"] = authorize_url(party, client_id=None) + f"&client_id={client_id}"
    assert_error_page(post_raw(browser, encode(body)))
    assert browser.cookie("tokend_session") is None


def test_a_repeated_form_field_is_refused(browser: Browser, party: Party) -> None:
    """A dict() of the pairs kept the last one: a second username slipped past whatever
    looked at the first."""
    body = [*list(login_body(browser, party).items()), ("username", "mallory")]
    assert post_raw(browser, encode(body)).status_code == 403  # type: ignore[attr-defined]
    assert browser.cookie("tokend_session") is None


def test_a_form_with_many_fields_is_refused(browser: Browser, party: Party) -> None:
    body = list(login_body(browser, party).items()) + [(f"x{i}", "1") for i in range(20)]
    assert post_raw(browser, encode(body)).status_code == 403  # type: ignore[attr-defined]


def test_a_long_authorization_request_survives_the_sign_in(browser: Browser, party: Party) -> None:
    """The login form carries the whole query in `next`, re-encoded: the form limit is sized
    for the largest query the authorize endpoint accepts."""
    state = "\u00e9&%" * ((MAX_QUERY_BYTES - 400) // 15)
    url = authorize_url(party, state=state)
    assert len(url) - len(AUTHORIZE) - 1 <= MAX_QUERY_BYTES
    consent = browser.sign_in(url, party)
    assert consent.status_code == 200, consent.text


# -- redirects come from the issuer -----------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/account/", "/auth/v2/revoke/", "/auth/v2/authorize/"])
def test_no_trailing_slash_redirect_to_the_request_host(
    http: TestClient, method: str, path: str
) -> None:
    """Starlette answered `/account/` with `307 Location: http://evil.example/account`."""
    r = http.request(method, path, headers={"Host": "evil.example"})
    assert r.status_code in (404, 405), (r.status_code, r.headers)
    assert "location" not in r.headers


def test_sign_in_redirects_name_the_issuer_whatever_the_host(
    browser: Browser, party: Party
) -> None:
    body = login_body(browser, party)
    r = browser.client.post(LOGIN, data=body, headers={"Host": "evil.example"})
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(ISSUER + AUTHORIZE + "?")


def test_client_redirects_go_to_the_registered_uri_whatever_the_host(
    browser: Browser, party: Party
) -> None:
    r = browser.client.get(authorize_url(party, prompt="bogus"), headers={"Host": "evil.example"})
    assert r.status_code == 302
    assert r.headers["location"].startswith(REDIRECT + "?")
