"""The token endpoint over HTTP (web/app.py ``token``): client authentication (RFC 6749 §2.3,
§3.2.1), every §5.2 error with its status and shape, headers, paths and methods, JSON bodies.

The spec's own example flow is in test_token_refresh.py; hostile input in test_bad_input.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.conftest import RegisteredClient
from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    FORM,
    JSON,
    TOKEN,
    TOKEN_SLASH,
    assert_no_store,
    assert_oauth_error,
    assert_tokens,
    basic,
    raw_basic,
    refresh,
    storage_snapshot,
)
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.models import Client
from tokend.core.secrets import hash_secret, new_client_secret, new_refresh_token

# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures()


@dataclass
class World:
    """A confidential client with a live family, and the other clients the cases need."""

    conf: RegisteredClient
    token: str
    public: RegisteredClient
    public_token: str
    other: RegisteredClient
    other_token: str
    no_refresh: RegisteredClient


@pytest.fixture
def world(make_client, issue) -> World:
    conf = make_client()
    public = make_client(public=True)
    other = make_client()
    return World(
        conf=conf,
        token=issue(conf, "openid offline email").refresh_token,
        public=public,
        public_token=issue(public, "openid offline").refresh_token,
        other=other,
        other_token=issue(other, "openid offline").refresh_token,
        no_refresh=make_client(grant_types=("authorization_code", "client_credentials")),
    )


def _create_client(rt, client_id: str, secret: str | None) -> RegisteredClient:
    client = Client(
        client_id=client_id,
        name="special characters",
        public=secret is None,
        secret_hash=None if secret is None else hash_secret(secret),
        grant_types=frozenset({"refresh_token", "client_credentials"}),
        redirect_uris=("https://app.example/cb",),
        scopes=("openid", "offline", "email"),
    )
    rt.store.create_client(client, now=rt.clock.now())
    return RegisteredClient(client, secret)


# -- successful requests: every client authentication method, both paths, both body types --


@pytest.mark.parametrize("path", [TOKEN, TOKEN_SLASH], ids=["no-slash", "trailing-slash"])
@pytest.mark.parametrize("body_type", ["form", "json"])
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
def test_refresh_succeeds_with_every_auth_method(
    http, world: World, rt, path, body_type, method
) -> None:
    if method == "none":
        reg, token = world.public, world.public_token
        params, headers = refresh(token, client_id=reg.client_id), {}
    elif method == "client_secret_post":
        reg, token = world.conf, world.token
        params = refresh(token, client_id=reg.client_id, client_secret=reg.secret)
        headers = {}
    else:
        reg, token = world.conf, world.token
        params, headers = refresh(token), basic(*reg.basic)
    if body_type == "json":
        r = http.post(path, content=json.dumps(params), headers={**headers, "Content-Type": JSON})
    else:
        r = http.post(path, data=params, headers=headers)
    body = assert_tokens(r)
    assert body["refresh_token"].startswith("tkd_rt_")
    assert body["refresh_token"] != token
    # The successor works, so the request really rotated the family.
    again = http.post(
        path,
        data={**params, "refresh_token": body["refresh_token"]},
        headers=headers,
    )
    assert_tokens(again)


def test_basic_and_matching_client_id_in_body_is_one_method(http, world: World) -> None:
    r = http.post(
        TOKEN, data=refresh(world.token, client_id=world.conf.client_id), auth=world.conf.basic
    )
    assert_tokens(r)


@pytest.mark.parametrize(
    "client_id",
    ["a:b c%", "x%41", "p+q", "id with:two:colons", "semi;colon&amp=eq"],
    ids=["colon-space-percent", "percent-escape-lookalike", "plus", "colons", "form-delims"],
)
def test_basic_credentials_are_form_urlencoded_rfc6749_2_3_1(
    http, rt, issue, client_id: str
) -> None:
    """§2.3.1: id and secret are form-urlencoded before base64, so the server must decode
    them (and only once): the encoded form works, the raw form names another client."""
    secret = "s3cr+t:with%25 space/ü"
    reg = _create_client(rt, client_id, secret)
    token = issue(reg, "openid offline").refresh_token

    r = http.post(TOKEN, data=refresh(token), headers=basic(client_id, secret))
    token = assert_tokens(r)["refresh_token"]

    # Spaces as %20 (urllib.parse.quote) are form-urlencoding too.
    as_percent = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    r = http.post(TOKEN, data=refresh(token), headers=raw_basic(as_percent))
    token = assert_tokens(r)["refresh_token"]

    # Not encoded: "a:b c%" splits at its own colon, "x%41" decodes to "xA", "p+q" to "p q".
    unencoded = f"{client_id}:{secret}".encode()
    r = http.post(TOKEN, data=refresh(token), headers=raw_basic(unencoded))
    assert_oauth_error(r, "invalid_client", leaks=(secret, token))
    # Encoded twice: decoded once it is not the client's id.
    twice = basic(quote(client_id, safe=""), secret)
    r = http.post(TOKEN, data=refresh(token), headers=twice)
    assert_oauth_error(r, "invalid_client", leaks=(secret, token))
    # The failures spent nothing: the last successor still refreshes.
    assert_tokens(http.post(TOKEN, data=refresh(token), headers=basic(client_id, secret)))


def test_basic_non_ascii_credentials_are_utf8(http, rt) -> None:
    """§2.3.1: form-urlencoding with UTF-8 ("application/x-www-form-urlencoded" algorithm)."""
    secret = "pässwörd-" + new_client_secret()
    reg = _create_client(rt, "clïent-ß", secret)
    grant = {"grant_type": "client_credentials"}
    assert_tokens(http.post(TOKEN, data=grant, headers=basic(*reg.basic)))
    # Raw UTF-8 without percent-encoding decodes to the same text.
    raw = f"{reg.client_id}:{secret}".encode()
    assert_tokens(http.post(TOKEN, data=grant, headers=raw_basic(raw)))
    # Percent-encoded Latin-1 is not UTF-8: a malformed header, not a lookup.
    latin1 = f"{quote(reg.client_id, encoding='latin-1')}:{quote(secret, encoding='latin-1')}"
    r = http.post(TOKEN, data=grant, headers=raw_basic(latin1.encode()))
    assert_oauth_error(r, "invalid_client", leaks=(secret,))


def test_basic_secret_may_contain_a_raw_colon(http, rt) -> None:
    """RFC 7617: the user-id ends at the first colon; the rest, colons included, is the secret."""
    _create_client(rt, "plain-id", "with:colon")
    grant = {"grant_type": "client_credentials"}
    assert_tokens(http.post(TOKEN, data=grant, headers=raw_basic(b"plain-id:with:colon")))
    r = http.post(TOKEN, data=grant, headers=raw_basic(b"plain-id:with"))
    assert_oauth_error(r, "invalid_client")


def test_lower_case_basic_scheme_is_accepted(http, world: World) -> None:
    header = basic(*world.conf.basic)["Authorization"].replace("Basic", "basic")
    r = http.post(TOKEN, data=refresh(world.token), headers={"Authorization": header})
    assert_tokens(r)


def test_client_credentials_grant_over_http(http, make_client) -> None:
    reg = make_client(scopes="openid offline email reports:read")
    r = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=reg.basic)
    body = assert_tokens(r)
    assert "refresh_token" not in body  # RFC 6749 §4.4.3
    assert "id_token" not in body
    assert body["scope"] == "email reports:read"
    assert body["expires_in"] == 86400


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded; charset=UTF-8",
        'application/x-www-form-urlencoded;charset="utf-8"',
        "Application/X-WWW-Form-Urlencoded",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
    ],
)
def test_content_type_parameters_and_case(http, world: World, content_type: str) -> None:
    params = refresh(world.token)
    if "json" in content_type.lower():
        content = json.dumps(params).encode()
    else:
        content = urlencode(params).encode()
    r = http.post(
        TOKEN, content=content, headers={"Content-Type": content_type}, auth=world.conf.basic
    )
    assert_tokens(r)


def test_json_null_and_empty_values_count_as_omitted(http, world: World) -> None:
    """§3.1: "Parameters sent without a value MUST be treated as if they were omitted"."""
    r = http.post(
        TOKEN,
        content=json.dumps({**refresh(world.token), "scope": None, "client_id": ""}),
        headers={"Content-Type": JSON},
        auth=world.conf.basic,
    )
    assert assert_tokens(r)["scope"] == "openid offline email"
    r = http.post(
        TOKEN,
        content=f"grant_type=refresh_token&refresh_token=&scope=&client_id={world.conf.client_id}",
        headers={"Content-Type": FORM},
        auth=world.conf.basic,
    )
    assert (
        "refresh_token parameter is required"
        in assert_oauth_error(r, "invalid_request")["error_description"]
    )


def test_scope_may_narrow_and_the_family_keeps_its_scope(http, world: World) -> None:
    """RFC 6749 §6: a narrower scope on refresh; the family keeps the original grant."""
    r = http.post(TOKEN, data=refresh(world.token, scope="openid"), auth=world.conf.basic)
    body = assert_tokens(r)
    assert body["scope"] == "openid"
    r = http.post(TOKEN, data=refresh(body["refresh_token"]), auth=world.conf.basic)
    assert assert_tokens(r)["scope"] == "openid offline email"


def test_rotation_grace_retry_and_reuse_over_http(http, world: World, clock, rt) -> None:
    auth = world.conf.basic
    first = assert_tokens(http.post(TOKEN, data=refresh(world.token), auth=auth))
    # A lost response: the same token again inside the grace window gets the same successor.
    retry = assert_tokens(http.post(TOKEN, data=refresh(world.token), auth=auth))
    assert retry["refresh_token"] == first["refresh_token"]
    clock.advance(rt.settings.refresh_reuse_grace + 1)
    # Reuse after the grace window: invalid_grant, and the whole family is revoked.
    r = http.post(TOKEN, data=refresh(world.token), auth=auth)
    assert_oauth_error(r, "invalid_grant", leaks=(world.token,))
    r = http.post(TOKEN, data=refresh(first["refresh_token"]), auth=auth)
    assert_oauth_error(r, "invalid_grant", leaks=(first["refresh_token"],))


# -- every RFC 6749 §5.2 error, its status and its shape -----------------------------------

Send = Callable[[Any, World], httpx.Response]

# (id, error, request). Each leaves storage as it was (see WRONG_CLIENT for the exception).
ERROR_CASES: list[tuple[str, str, Send]] = [
    # invalid_request
    (
        "missing-grant_type",
        "invalid_request",
        lambda http, w: http.post(TOKEN, data={"refresh_token": w.token}, auth=w.conf.basic),
    ),
    (
        "empty-grant_type",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN, data={"grant_type": "", "refresh_token": w.token}, auth=w.conf.basic
        ),
    ),
    (
        "missing-refresh_token",
        "invalid_request",
        lambda http, w: http.post(TOKEN, data={"grant_type": "refresh_token"}, auth=w.conf.basic),
    ),
    (
        "repeated-grant_type-form",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN,
            content=f"grant_type=refresh_token&grant_type=refresh_token&refresh_token={w.token}",
            headers={"Content-Type": FORM},
            auth=w.conf.basic,
        ),
    ),
    (
        "repeated-refresh_token-form",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN,
            content=f"grant_type=refresh_token&refresh_token={w.token}&refresh_token={w.token}",
            headers={"Content-Type": FORM},
            auth=w.conf.basic,
        ),
    ),
    (
        "repeated-empty-and-full-form",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN,
            content=f"grant_type=refresh_token&refresh_token=&refresh_token={w.token}",
            headers={"Content-Type": FORM},
            auth=w.conf.basic,
        ),
    ),
    (
        "repeated-grant_type-json",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN,
            content=(
                '{"grant_type":"refresh_token","grant_type":"refresh_token",'
                f'"refresh_token":"{w.token}"}}'
            ),
            headers={"Content-Type": JSON},
            auth=w.conf.basic,
        ),
    ),
    (
        "basic-and-client_secret-in-body",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN,
            data=refresh(w.token, client_secret=w.conf.secret),
            auth=w.conf.basic,
        ),
    ),
    (
        "basic-and-client_id-and-secret-in-body",
        "invalid_request",
        lambda http, w: http.post(
            TOKEN,
            data=refresh(w.token, client_id=w.conf.client_id, client_secret=w.conf.secret),
            auth=w.conf.basic,
        ),
    ),
    # invalid_client
    (
        "no-authentication",
        "invalid_client",
        lambda http, w: http.post(TOKEN, data=refresh(w.token)),
    ),
    (
        "basic-wrong-secret",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN, data=refresh(w.token), auth=(w.conf.client_id, new_client_secret())
        ),
    ),
    (
        "basic-unknown-client",
        "invalid_client",
        lambda http, w: http.post(TOKEN, data=refresh(w.token), auth=("nobody", "x" * 40)),
    ),
    (
        "basic-other-clients-secret",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN, data=refresh(w.token), auth=(w.conf.client_id, w.other.secret)
        ),
    ),
    (
        "post-wrong-secret",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN,
            data=refresh(w.token, client_id=w.conf.client_id, client_secret="wrong-secret"),
        ),
    ),
    (
        "post-secret-without-client_id",
        "invalid_client",
        lambda http, w: http.post(TOKEN, data=refresh(w.token, client_secret=w.conf.secret)),
    ),
    (
        "confidential-client-with-none",
        "invalid_client",
        lambda http, w: http.post(TOKEN, data=refresh(w.token, client_id=w.conf.client_id)),
    ),
    (
        "public-client-with-secret",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN,
            data=refresh(w.public_token, client_id=w.public.client_id, client_secret="x"),
        ),
    ),
    (
        "public-client-unknown-id",
        "invalid_client",
        lambda http, w: http.post(TOKEN, data=refresh(w.public_token, client_id="nobody")),
    ),
    (
        "basic-and-other-client_id-in-body",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN, data=refresh(w.token, client_id=w.other.client_id), auth=w.conf.basic
        ),
    ),
    (
        "bearer-scheme",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN, data=refresh(w.token), headers={"Authorization": f"Bearer {w.conf.secret}"}
        ),
    ),
    (
        "json-wrong-secret",
        "invalid_client",
        lambda http, w: http.post(
            TOKEN,
            content=json.dumps(
                refresh(w.token, client_id=w.conf.client_id, client_secret="wrong-secret")
            ),
            headers={"Content-Type": JSON},
        ),
    ),
    # invalid_grant
    (
        "unknown-refresh-token",
        "invalid_grant",
        lambda http, w: http.post(TOKEN, data=refresh(new_refresh_token()), auth=w.conf.basic),
    ),
    (
        "another-clients-refresh-token",
        "invalid_grant",
        lambda http, w: http.post(TOKEN, data=refresh(w.other_token), auth=w.conf.basic),
    ),
    (
        "public-clients-token-presented-by-confidential",
        "invalid_grant",
        lambda http, w: http.post(TOKEN, data=refresh(w.public_token), auth=w.conf.basic),
    ),
    (
        "malformed-refresh-token",
        "invalid_grant",
        lambda http, w: http.post(TOKEN, data=refresh(w.token[:-1]), auth=w.conf.basic),
    ),
    # unauthorized_client
    (
        "client-without-refresh_token-grant",
        "unauthorized_client",
        lambda http, w: http.post(TOKEN, data=refresh(w.token), auth=w.no_refresh.basic),
    ),
    (
        "public-client-client_credentials",
        "unauthorized_client",
        lambda http, w: http.post(
            TOKEN, data={"grant_type": "client_credentials", "client_id": w.public.client_id}
        ),
    ),
    # unsupported_grant_type
    (
        "password-grant",
        "unsupported_grant_type",
        lambda http, w: http.post(
            TOKEN,
            data={"grant_type": "password", "username": "alice", "password": "pw"},
            auth=w.conf.basic,
        ),
    ),
    (
        "grant_type-is-case-sensitive",
        "unsupported_grant_type",
        lambda http, w: http.post(
            TOKEN, data={"grant_type": "Refresh_Token", "refresh_token": w.token}, auth=w.conf.basic
        ),
    ),
    (
        # RFC 8628's grant is served, to the clients registered with it only.
        "device-code-unregistered-client",
        "unauthorized_client",
        lambda http, w: http.post(
            TOKEN,
            data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code"},
            auth=w.conf.basic,
        ),
    ),
    # invalid_scope
    (
        "scope-widening",
        "invalid_scope",
        lambda http, w: http.post(
            TOKEN, data=refresh(w.token, scope="openid offline email profile"), auth=w.conf.basic
        ),
    ),
    (
        "scope-other-scope",
        "invalid_scope",
        lambda http, w: http.post(TOKEN, data=refresh(w.token, scope="admin"), auth=w.conf.basic),
    ),
    (
        "scope-malformed",
        "invalid_scope",
        lambda http, w: http.post(
            TOKEN, data=refresh(w.token, scope='openid "x"'), auth=w.conf.basic
        ),
    ),
    (
        "client_credentials-scope-not-allowed",
        "invalid_scope",
        lambda http, w: http.post(
            TOKEN, data={"grant_type": "client_credentials", "scope": "admin"}, auth=w.conf.basic
        ),
    ),
]


# A token presented by another client is refused and recorded as a security event.
WRONG_CLIENT = {"another-clients-refresh-token", "public-clients-token-presented-by-confidential"}


@pytest.mark.parametrize(("case", "error", "send"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_rfc6749_5_2_errors(http, rt, world: World, case: str, error: str, send: Send) -> None:
    before = storage_snapshot(rt.store.engine)
    r = send(http, world)
    secrets = (world.conf.secret, world.other.secret, world.token, world.other_token)
    assert_oauth_error(r, error, leaks=secrets)
    after = storage_snapshot(rt.store.engine)
    if case in WRONG_CLIENT:
        before["counts"]["security_events"] += 1  # type: ignore[index]
    assert after == before
    # None of the errors spent the clients' tokens.
    assert_tokens(http.post(TOKEN, data=refresh(world.token), auth=world.conf.basic))
    assert_tokens(http.post(TOKEN, data=refresh(world.other_token), auth=world.other.basic))


def test_every_rfc6749_5_2_code_is_covered() -> None:
    codes = {c[1] for c in ERROR_CASES}
    assert codes == {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }


@pytest.mark.parametrize("path", [TOKEN, TOKEN_SLASH], ids=["no-slash", "trailing-slash"])
def test_trailing_slash_gives_the_same_errors(http, world: World, path: str) -> None:
    assert_oauth_error(http.post(path, data=refresh(world.token)), "invalid_client")
    r = http.post(path, data={"grant_type": "password"}, auth=world.conf.basic)
    assert_oauth_error(r, "unsupported_grant_type")
    r = http.post(path, data=refresh(world.token, scope="admin"), auth=world.conf.basic)
    assert_oauth_error(r, "invalid_scope")


def test_parameters_in_the_query_string_are_ignored(http, world: World) -> None:
    """RFC 6749 §2.3.1: client credentials "MUST NOT be included in the request URI"; §3.2:
    the token endpoint takes its parameters from the request body."""
    query = f"?client_id={world.conf.client_id}&client_secret={world.conf.secret}"
    r = http.post(TOKEN + query, data=refresh(world.token))
    assert_oauth_error(r, "invalid_client", leaks=(world.conf.secret, world.token))
    r = http.post(
        f"{TOKEN}?grant_type=refresh_token&refresh_token={world.token}",
        data={"scope": "openid"},
        auth=world.conf.basic,
    )
    assert_oauth_error(r, "invalid_request", leaks=(world.token,))
    assert_tokens(http.post(TOKEN, data=refresh(world.token), auth=world.conf.basic))


def test_www_authenticate_names_basic_and_a_realm(http, world: World) -> None:
    r = http.post(TOKEN, data=refresh(world.token), auth=(world.conf.client_id, "wrong"))
    assert_oauth_error(r, "invalid_client")
    scheme, _, params = r.headers["www-authenticate"].partition(" ")
    assert scheme == "Basic"
    assert "realm=" in params


# -- methods, paths, unexpected failures ---------------------------------------------------


@pytest.mark.parametrize("path", [TOKEN, TOKEN_SLASH])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_json(http, path: str, method: str) -> None:
    r = http.request(method, path)
    assert r.status_code == 405
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    assert set(r.json()) == {"error", "error_description"}
    assert "POST" in r.headers["allow"]


def test_unknown_path_is_404_json(http) -> None:
    r = http.post("/auth/v2/tokens", data={"grant_type": "refresh_token"})
    assert r.status_code == 404
    assert r.headers["content-type"] == JSON
    assert r.json() == {"error": "not_found", "error_description": "Not found."}


def test_unexpected_exception_is_a_bare_server_error(http, world: World, rt, monkeypatch) -> None:
    def boom(client_id: str) -> None:
        raise RuntimeError(f"internal detail for {client_id} /var/lib/secret")

    monkeypatch.setattr(rt.store, "get_client", boom)
    r = http.post(TOKEN, data=refresh(world.token), auth=world.conf.basic)
    body = assert_oauth_error(
        r, "server_error", 500, leaks=("internal detail", "/var/lib", "RuntimeError")
    )
    assert body["error_description"] == "The server encountered an unexpected condition."


def test_busy_database_is_503_temporarily_unavailable(http, world: World, rt, monkeypatch) -> None:
    def busy(client_id: str) -> None:
        raise TemporarilyUnavailable(debug="database is locked at /var/lib/tokend.db")

    monkeypatch.setattr(rt.store, "get_client", busy)
    r = http.post(TOKEN, data=refresh(world.token), auth=world.conf.basic)
    assert_oauth_error(r, "temporarily_unavailable", 503, leaks=("locked", "/var/lib"))


def test_success_body_is_exactly_rfc6749_5_1(http, world: World) -> None:
    r = http.post(TOKEN, data=refresh(world.token), auth=world.conf.basic)
    body = assert_tokens(r)
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "id_token",
    }
    # No secret or internal state in the response beyond the tokens themselves.
    assert world.conf.secret not in r.text
    assert world.token not in r.text


def test_basic_header_value_is_not_logged_or_echoed(http, world: World, caplog) -> None:
    caplog.set_level("DEBUG")
    header = "Basic " + base64.b64encode(b"no-colon-" + world.conf.secret.encode()).decode()
    r = http.post(TOKEN, data=refresh(world.token), headers={"Authorization": header})
    assert_oauth_error(r, "invalid_client", leaks=(world.conf.secret, header))
    assert world.conf.secret not in caplog.text
