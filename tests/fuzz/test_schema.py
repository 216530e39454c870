"""A schema-driven fuzz of every endpoint, from the OpenAPI document (GET /openapi.json).

schemathesis generates requests from the document (tokend.web.openapi), in two modes:
``positive`` (requests the document admits) and ``negative`` (requests that break it), and
two ways of asking: ``anonymous`` (as generated), and ``credentials`` (as a registered
client or a signed-in user would: the confidential client's Basic credentials at the
token, revocation and introspection endpoints with a live refresh token in place of a
generated one; a valid access token at UserInfo; the registered client and redirect URI at
the authorization endpoint, with a browser session; a session and a valid CSRF token on the
pages' forms). Each request goes to the real app, in-process, on each backend.

What every answer must be:

- never a 5xx;
- documented: its status, content type, headers and body as the document says for that
  status (schemathesis' conformance checks), and on the API endpoints every error is
  exactly ``{error, error_description}`` (RFC 6749 §5.2) with the no-store headers;
- a request the document admits is never refused as malformed (``invalid_request`` on the
  API, an ``invalid_request`` redirect at the authorization endpoint, the CSRF refusal on
  a page form sent with a valid token), except for the few rules between parameters that a
  schema cannot state (``CROSS_PARAMETER_RULES``);
- a request the document excludes is refused (a 4xx on the API, an error page or an error
  redirect at the authorization endpoint);
- an error changes nothing: the token state (token families, refresh tokens and whether
  they are spent or revoked, codes, consents, sessions, revoked access tokens, DPoP proofs,
  clients, users) is the same after every refused request as before it, and the live
  refresh token, which the ``credentials`` cases present in every refresh, still refreshes
  after each batch.

Bounded for CI: ``EXAMPLES`` generated requests per (operation, mode, way), fewer on the
sign-in form (each wrong password costs an Argon2 hash). The number of requests sent is
printed at the end of the run ("schema fuzz: ...").
"""

from __future__ import annotations

import os
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.conftest import ISSUER
from tests.fuzz.strategies import hostile_text, hostile_values
from tests.support.family import first_family, register_user
from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import basic
from tokend.core.models import Client, User
from tokend.core.secrets import new_id
from tokend.runtime import Runtime
from tokend.store import schema as tables
from tokend.web.app import create_app
from tokend.web.openapi import openapi_document

EXAMPLES = int(os.environ.get("TOKEND_FUZZ_EXAMPLES", "10"))
LOGIN_EXAMPLES = max(3, EXAMPLES // 3)
REDIRECT_URI = "https://app.example/cb"
# The pages' cookies on an https issuer (tokend.web.pages): __Host- prefixed.
SESSION_COOKIE = "__Host-tokend_session"
CSRF_COOKIE = "__Host-tokend_csrf"
SCOPES = ("openid", "offline", "email", "profile")

SCHEMA = schemathesis.openapi.from_dict(openapi_document(ISSUER))
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
CLIENT_AUTH = {"POST /auth/v2/token", "POST /auth/v2/token/", "POST /auth/v2/revoke",
               "POST /auth/v2/introspect"}  # fmt: skip
TOKEN_OPS = {"POST /auth/v2/token", "POST /auth/v2/token/"}
USERINFO_OPS = {"GET /auth/v2/users/retrieve", "POST /auth/v2/users/retrieve"}
AUTHORIZE = "GET /auth/v2/authorize"
PAGE_FORMS = {"POST /auth/v2/authorize/login", "POST /auth/v2/authorize/consent",
              "POST /account/revoke", "POST /account/logout"}  # fmt: skip
API = CLIENT_AUTH | USERINFO_OPS
WITH_CREDENTIALS = API | PAGE_FORMS | {AUTHORIZE, "GET /account"}
NEGATABLE = API | PAGE_FORMS | {AUTHORIZE}
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Rules between parameters, which a schema of independent parameters cannot state: a
# request the document admits may still break one (the description says so).
CROSS_PARAMETER_RULES = re.compile(
    r"code_challenge_method without code_challenge"
    r"|Public clients must send a PKCE code_challenge"
    r"|The access token was sent in more than one way"
    r"|Use only one client authentication method"
    r"|code_challenge_method must be S256"
)

AUTHORIZE_NAMES = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
]
AUTHORIZE_VALUES = [
    "code",
    "",
    REDIRECT_URI,
    "openid",
    "openid offline",
    "S256",
    "none",
    "login",
    "0",
    "a" * 43,
    "<client>",
]

REQUESTS: Counter[str] = Counter()


# -- the world the requests run against ------------------------------------------------------

rt, http, settings_, clock = shared_runtime_fixtures()


@dataclass
class World:
    rt: Runtime
    http: TestClient
    client: Client
    secret: str
    user: User
    live_refresh_token: str
    access_token: str
    csrf_cookie: str
    csrf_token: str
    sessions: list[str] = field(default_factory=list)

    @property
    def basic(self) -> dict[str, str]:
        return basic(self.client.client_id, self.secret)

    def new_session(self) -> str:
        return self.rt.accounts.start_session(self.user.id)

    def signed_in_form(self) -> tuple[dict[str, str], str]:
        """The cookies of a new signed-in browser and the CSRF token of its pages (bound to
        its CSRF cookie and its session), read off the account page as a browser would."""
        cookies = {SESSION_COOKIE: self.new_session(), CSRF_COOKIE: self.csrf_cookie}
        self.http.cookies.clear()
        for name, value in cookies.items():
            self.http.cookies.set(name, value)
        page = self.http.get("/account")
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m, page.text
        return cookies, m.group(1)


@pytest.fixture(scope="module")
def world(rt: Runtime) -> Iterator[World]:
    user = register_user(
        rt,
        username=f"fuzz{new_id()[:8]}",
        password_hash=PasswordHasher().hash(secrets.token_urlsafe(16)),
    )
    family = first_family(
        rt,
        name="fuzz client",
        client_scopes=" ".join(SCOPES),
        grant_types=("authorization_code", "refresh_token", "client_credentials"),
        redirect_uris=(REDIRECT_URI,),
        user=user,
        scopes="openid offline email",
    )
    app = create_app(rt.settings, runtime=rt)
    with TestClient(app, base_url=ISSUER, raise_server_exceptions=False) as client_http:
        page = client_http.get("/account")
        csrf_cookie = page.cookies[CSRF_COOKIE]
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m, page.text
        assert family.reg.secret is not None
        yield World(rt, client_http, family.client, family.reg.secret, user, family.refresh_token,
                    family.first.access_token, csrf_cookie, m.group(1))  # fmt: skip


def token_state(rt: Runtime) -> tuple[int, ...]:
    """What a refused request must not change (security_events and any throttling
    counters are left out: recording a failure is their job)."""
    t = tables
    counts = [
        select(func.count()).select_from(table).scalar_subquery()
        for table in (t.token_families, t.refresh_tokens, t.authorization_codes, t.consents,
                      t.browser_sessions, t.revoked_access_tokens, t.dpop_proofs, t.clients,
                      t.users)
    ]  # fmt: skip
    counts += [
        select(func.count())
        .select_from(t.refresh_tokens)
        .where(t.refresh_tokens.c.spent_at.is_not(None))
        .scalar_subquery(),
        select(func.count())
        .select_from(t.token_families)
        .where(t.token_families.c.revoked_at.is_not(None))
        .scalar_subquery(),
        select(func.count())
        .select_from(t.authorization_codes)
        .where(t.authorization_codes.c.consumed_at.is_not(None))
        .scalar_subquery(),
    ]
    with rt.store.engine.connect() as conn:
        return tuple(conn.execute(select(*counts)).one())


# -- one generated request -----------------------------------------------------------------


def _with_credentials(world: World, label: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request as a registered client or a signed-in user would send it."""
    headers = kwargs.setdefault("headers", {})
    body = kwargs.get("json") if "json" in kwargs else kwargs.get("data")
    if label in CLIENT_AUTH:
        headers.update(world.basic)
        if isinstance(body, dict):
            body.pop("client_secret", None)
            if body.get("client_id") is not None:
                body["client_id"] = world.client.client_id
            if label in TOKEN_OPS and body.get("grant_type") == "refresh_token":
                body["refresh_token"] = world.live_refresh_token
            if label == "POST /auth/v2/introspect" and isinstance(body.get("token"), str):
                # Read-only: the live tokens themselves (revoking them is not an error).
                choices = [world.access_token, world.live_refresh_token, body["token"]]
                body["token"] = choices[len(body["token"]) % 3]
    elif label in USERINFO_OPS:
        if isinstance(body, dict) and body.get("access_token"):
            body["access_token"] = world.access_token
        else:
            headers["Authorization"] = f"Bearer {world.access_token}"
    elif label == AUTHORIZE:
        params = kwargs.setdefault("params", {})
        params["client_id"] = world.client.client_id
        params["redirect_uri"] = REDIRECT_URI
        kwargs["cookies"] = {SESSION_COOKIE: world.new_session()}
    else:  # the pages
        kwargs["cookies"], token = world.signed_in_form()
        if isinstance(body, dict) and "csrf_token" in body:
            body["csrf_token"] = token
    return kwargs


def _send(world: World, kwargs: dict[str, Any]) -> httpx.Response:
    kwargs = dict(kwargs)
    kwargs["headers"] = {k: v for k, v in (kwargs.get("headers") or {}).items()
                         if not k.lower().startswith("x-schemathesis")}  # fmt: skip
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    cookies = kwargs.pop("cookies", None) or {}
    world.http.cookies.clear()  # no cookie of an earlier case carries over
    for name, value in cookies.items():
        world.http.cookies.set(name, value)
    method, url = kwargs.pop("method"), kwargs.pop("url")
    return world.http.request(method, url, follow_redirects=False, **kwargs)


DOC = openapi_document(ISSUER)
_MISSING = object()


def _form_value(value: Any) -> Any:
    """A form value as httpx sends it: one value, or _MISSING for none or several."""
    if isinstance(value, list | tuple):
        return _form_value(value[0]) if len(value) == 1 else _MISSING
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return _MISSING


def conforms(label: str, kwargs: dict[str, Any]) -> bool:
    """Whether the request, exactly as it is sent, is one the document admits: its query
    and header parameters and its body against their schemas (the generation mode only
    steers what is generated; ``_with_credentials`` may have undone a negation)."""
    method, path = label.split(" ", 1)
    op = DOC["paths"][path][method.lower()]
    headers = {k.lower(): v for k, v in (kwargs.get("headers") or {}).items()}
    params = kwargs.get("params") or {}
    for param in op.get("parameters", []):
        # At UserInfo a proof is read with the DPoP scheme only (RFC 9449 §7.1): with
        # Bearer the header is not looked at, whatever it holds.
        if (
            label in USERINFO_OPS
            and param["name"] == "DPoP"
            and not str(headers.get("authorization", "")).lower().startswith("dpop ")
        ):
            continue
        source = params if param["in"] == "query" else headers
        key = param["name"] if param["in"] == "query" else param["name"].lower()
        value = source.get(key, _MISSING)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else _MISSING
        if value is _MISSING:
            if param.get("required"):
                return False
            continue
        if not Draft202012Validator(param["schema"]).is_valid(value):
            return False
    if len(params) > len({p["name"] for p in op.get("parameters", [])}) and any(
        isinstance(v, list) and len(v) > 1 for v in params.values()
    ):
        return False
    body_doc = op.get("requestBody")
    has_body = any(k in kwargs for k in ("json", "data", "content"))
    if body_doc is None:
        return True
    if not has_body:
        return not body_doc.get("required", False)
    media = str(headers.get("content-type", "")).partition(";")[0].strip().lower()
    if media not in body_doc["content"] or "content" in kwargs:
        return False
    schema = body_doc["content"][media]["schema"]
    if "json" in kwargs:
        return Draft202012Validator(schema).is_valid(kwargs["json"])
    data = kwargs["data"]
    if not isinstance(data, dict):
        return False
    form = {str(k): _form_value(v) for k, v in data.items()}
    if _MISSING in form.values():
        return False
    return Draft202012Validator(schema).is_valid(form)


def _location_error(r: httpx.Response) -> str | None:
    query = parse_qs(urlsplit(r.headers.get("location", "")).query)
    return (query.get("error") or [None])[0]


def _describe(label: str, mode: str, way: str, kwargs: dict[str, Any], r: httpx.Response) -> str:
    shown = {k: v for k, v in kwargs.items() if k in ("params", "headers", "json", "data",
                                                      "content", "cookies")}  # fmt: skip
    return f"{label} [{mode}, {way}] {shown!r}\n-> {r.status_code} {r.headers!r}\n{r.text[:500]}"


def check(world: World, label: str, generated: str, way: str, case: Any) -> None:
    kwargs = case.as_transport_kwargs(base_url=ISSUER)
    if way == "credentials":
        kwargs = _with_credentials(world, label, kwargs)
    mode = "positive" if conforms(label, kwargs) else "negative"
    before = token_state(world.rt)
    r = _send(world, kwargs)
    REQUESTS[f"{label} {generated} {way}"] += 1
    where = _describe(label, mode, way, kwargs, r)
    assert r.status_code < 500, where
    try:
        case.validate_response(r, checks=CONFORMANCE)
    except (AssertionError, FailureGroup) as exc:
        raise AssertionError(f"{where}\n{exc}") from None

    error = None
    if label in API and r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", where
        assert r.headers.get("cache-control") == "no-store", where
        body = r.json()
        assert set(body) == {"error", "error_description"}, where
        assert all(isinstance(v, str) and v for v in body.values()), where
        error = body
        if body["error"] == "invalid_client" and label in CLIENT_AUTH:
            assert r.headers["www-authenticate"].startswith("Basic"), where
    if label == AUTHORIZE and r.status_code == 302:
        assert r.headers["location"].startswith(REDIRECT_URI + "?"), where
        code = _location_error(r)
        if code is not None:
            error = {"error": code, "error_description": parse_qs(urlsplit(
                r.headers["location"]).query).get("error_description", [""])[0]}  # fmt: skip

    refused = r.status_code >= 400 or error is not None
    if refused:
        assert token_state(world.rt) == before, f"a refused request changed the state: {where}"

    if mode == "positive":
        if error is not None and error["error"] == "invalid_request":
            assert CROSS_PARAMETER_RULES.search(error["error_description"]), (
                f"the document admits a request the server refuses as malformed: {where}"
            )
        if way == "credentials" and label in PAGE_FORMS:
            assert r.status_code != 403, f"a valid form with its CSRF token was refused: {where}"
    elif label in API:
        assert 400 <= r.status_code < 500, f"a request the document excludes was accepted: {where}"
    elif label == AUTHORIZE:
        assert r.status_code == 400 or error is not None, (
            f"a request the document excludes was accepted: {where}"
        )

    if r.status_code == 200 and label in TOKEN_OPS:
        new = r.json().get("refresh_token")
        if new is not None and "refresh_token" in str(kwargs.get("json") or kwargs.get("data")):
            body = kwargs.get("json") or kwargs.get("data")
            if isinstance(body, dict) and body.get("refresh_token") == world.live_refresh_token:
                world.live_refresh_token = new


CASES = [
    (label, mode, way)
    for label in OPERATIONS
    for mode in ("positive", "negative")
    for way in ("anonymous", "credentials")
    if (mode == "positive" or label in NEGATABLE) and (way == "anonymous" or label in
                                                        WITH_CREDENTIALS)
]  # fmt: skip


@pytest.mark.parametrize(("label", "mode", "way"), CASES)
def test_endpoint(world: World, label: str, mode: str, way: str) -> None:
    operation = OPERATIONS[label]
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    examples = LOGIN_EXAMPLES if label == "POST /auth/v2/authorize/login" else EXAMPLES

    @settings(
        max_examples=examples,
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(case=operation.as_strategy(generation))
    def run(case: Any) -> None:
        check(world, label, mode, way, case)

    try:
        run()
    except Unsatisfiable:
        pytest.skip("nothing to generate in this mode")
    # The live refresh token, presented by every refresh above, is still good.
    r = world.http.post(
        "/auth/v2/token",
        data={"grant_type": "refresh_token", "refresh_token": world.live_refresh_token},
        headers=world.basic,
    )
    assert r.status_code == 200, r.text
    world.live_refresh_token = r.json()["refresh_token"]


# -- beyond the document: raw queries and forms at the authorization endpoint and pages ---

# Each known parameter independently present or not, then extra pairs (unknown names,
# repeats); a value is a good one, a good one with a control character in it, or anything.
raw_params = st.fixed_dictionaries(
    {}, optional={name: hostile_values(AUTHORIZE_VALUES) for name in AUTHORIZE_NAMES}
)
raw_extra = st.lists(
    st.tuples(st.one_of(st.sampled_from(AUTHORIZE_NAMES), hostile_text),
              hostile_values(AUTHORIZE_VALUES)),
    max_size=4,
)  # fmt: skip
VALID = [("response_type", "code"), ("client_id", "<client>"), ("redirect_uri", REDIRECT_URI),
         ("scope", "openid")]  # fmt: skip
NOT_TEXT_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


@settings(max_examples=EXAMPLES * 3)
@given(
    params=raw_params,
    extra=raw_extra,
    padding=st.sampled_from([0, 0, 0, 63, 64, 65, 100, 1000]),
    signed_in=st.booleans(),
    base=st.booleans(),
)
# The attacks of issue 10 §4 and §7, always tried: 100 parameters; an empty client_id
# before the real one; a NUL in the client_id (PostgreSQL); NUL and controls in state,
# nonce and login_hint.
@example(params={}, extra=[], padding=100, signed_in=False, base=True)
@example(params={"client_id": ""}, extra=[], padding=0, signed_in=True, base=True)
@example(params={"client_id": "a\x00b", "redirect_uri": REDIRECT_URI}, extra=[], padding=0,
         signed_in=False, base=False)  # fmt: skip
@example(params={"state": "s\x00"}, extra=[], padding=0, signed_in=True, base=True)
@example(params={"nonce": "n\x01"}, extra=[], padding=0, signed_in=False, base=True)
@example(params={"login_hint": "\x00"}, extra=[], padding=0, signed_in=False, base=True)
def test_authorize_any_query(world: World, params: dict[str, str],
                             extra: list[tuple[str, str]], padding: int, signed_in: bool,
                             base: bool) -> None:  # fmt: skip
    """Any query string: never a 5xx; an error page (400), the sign-in or consent page
    (200), or a redirect to the registered redirect URI (302); a repeated parameter, even
    an empty one, or a control character in a parameter, is never taken for a valid
    request; refused requests change nothing."""
    pairs = [*params.items(), *(VALID if base else []), *extra]
    pairs += [(f"x{i}", "y") for i in range(padding)]
    pairs = [(n, world.client.client_id if v == "<client>" else v) for n, v in pairs]
    query = urlencode(pairs, encoding="utf-8", errors="surrogatepass")
    cookies = {SESSION_COOKIE: world.new_session()} if signed_in else {}
    before = token_state(world.rt)
    r = _send(world, {"method": "GET", "url": f"{ISSUER}/auth/v2/authorize?{query}",
                      "cookies": cookies})  # fmt: skip
    REQUESTS["GET /auth/v2/authorize raw query"] += 1
    where = f"GET /auth/v2/authorize?{query[:300]} -> {r.status_code} {r.text[:300]}"
    assert r.status_code in (200, 302, 400), where
    if r.status_code == 302:
        assert r.headers["location"].startswith(REDIRECT_URI + "?"), where
    refused = r.status_code == 400 or _location_error(r) is not None
    names = [n for n, _ in pairs]
    if len(names) != len(set(names)):
        assert refused, f"a repeated parameter was accepted: {where}"
    if any(NOT_TEXT_RE.search(v) for n, v in pairs if n in ("state", "nonce", "login_hint")):
        assert refused, f"a control character was accepted: {where}"
    if refused:
        assert token_state(world.rt) == before, f"a refused request changed the state: {where}"


PAGE_VALUES = ["/account", "allow", "deny", "/auth/v2/authorize?x=1", "alice"]


@settings(max_examples=EXAMPLES * 3)
@given(
    path=st.sampled_from(sorted(p.split(" ", 1)[1] for p in PAGE_FORMS)),
    params=st.fixed_dictionaries(
        {},
        optional={
            name: hostile_values(PAGE_VALUES)
            for name in ("username", "password", "next", "request", "decision", "family_id")
        },
    ),
    extra=st.lists(st.tuples(hostile_text, hostile_text), max_size=3),
    with_csrf=st.booleans(),
)
# A NUL in the username or in next (PostgreSQL: issue 10 §7).
@example(path="/auth/v2/authorize/login", params={"username": "a\x00b", "password": "x",
         "next": "/account"}, extra=[], with_csrf=True)  # fmt: skip
@example(path="/auth/v2/authorize/login", params={"username": "alice", "password": "x",
         "next": "/auth/v2/authorize?client_id=a%00b"}, extra=[], with_csrf=True)  # fmt: skip
@example(path="/auth/v2/authorize/consent", params={"request": "client_id=a%00b",
         "decision": "allow"}, extra=[], with_csrf=True)  # fmt: skip
@example(path="/account/revoke", params={"family_id": "a\x00b"}, extra=[], with_csrf=True)
def test_page_forms_any_body(world: World, path: str, params: dict[str, str],
                             extra: list[tuple[str, str]], with_csrf: bool) -> None:  # fmt: skip
    """Any form body (with a valid CSRF token or not) on the pages: never a 5xx, only the
    statuses the document lists for the form, and a refusal changes nothing."""
    cookies, token = world.signed_in_form()
    pairs = [*(("csrf_token", token),) * with_csrf, *params.items(), *extra]
    body = urlencode(pairs, encoding="utf-8", errors="surrogatepass")
    before = token_state(world.rt)
    r = _send(world, {"method": "POST", "url": ISSUER + path, "content": body.encode(),
                      "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                      "cookies": cookies})  # fmt: skip
    REQUESTS[f"POST {path} raw form"] += 1
    where = f"POST {path} {body[:300]!r} -> {r.status_code} {r.text[:300]}"
    assert str(r.status_code) in DOC["paths"][path]["post"]["responses"], where
    if r.status_code in (400, 403):
        assert token_state(world.rt) == before, f"a refused request changed the state: {where}"
