"""Hostile and broken requests to the token endpoint.

Each case must get a 4xx RFC 6749 §5.2 JSON error (never a 500, a stack trace or a secret),
and must change nothing in storage: row counts, refresh tokens' spent_at and families'
revoked_at are the same afterwards, and a refresh token issued before still refreshes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    FORM,
    JSON,
    TOKEN,
    assert_oauth_error,
    assert_tokens,
    basic,
    refresh,
    storage_snapshot,
)
from tokend.core.secrets import new_refresh_token
from tokend.web.app import create_app
from tokend.web.parsing import MAX_FIELDS

# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures()


@dataclass
class Victim:
    """A client with a live refresh token that every bad request carries where it can."""

    client_id: str
    secret: str
    token: str
    max_body: int

    @property
    def auth(self) -> dict[str, str]:
        return basic(self.client_id, self.secret)

    def form(self, **extra: str) -> str:
        return "&".join(f"{k}={v}" for k, v in {**refresh(self.token), **extra}.items())

    def json(self, **extra: object) -> bytes:
        return json.dumps({**refresh(self.token), **extra}).encode()


@dataclass(frozen=True)
class Case:
    id: str
    error: str
    status: int
    request: Callable[[Victim], dict[str, Any]]  # keyword arguments of http.post


def case(id: str, error: str, request: Callable[[Victim], dict[str, Any]], status: int = 0) -> Case:
    return Case(id, error, status or (401 if error == "invalid_client" else 400), request)


def form(body: bytes | str, **headers: str) -> Callable[[Victim], dict[str, Any]]:
    """A form body with the victim's (valid) Basic credentials."""
    return lambda v: {
        "content": body if isinstance(body, bytes) else body.encode(),
        "headers": {"Content-Type": FORM, **v.auth, **headers},
    }


def token_form(token: Callable[[Victim], str]) -> Callable[[Victim], dict[str, Any]]:
    return lambda v: {"data": refresh(token(v)), "headers": v.auth}


def json_body(body: bytes | str) -> Callable[[Victim], dict[str, Any]]:
    return lambda v: {
        "content": body if isinstance(body, bytes) else body.encode(),
        "headers": {"Content-Type": JSON, **v.auth},
    }


def bad_basic(header: Callable[[Victim], str]) -> Callable[[Victim], dict[str, Any]]:
    return lambda v: {
        "content": v.form(),
        "headers": {"Content-Type": FORM, "Authorization": header(v)},
    }


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _checksum_off(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def _chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    sent = 0
    yield b"grant_type=refresh_token&pad="
    while sent < total:
        yield b"x" * size
        sent += size


CASES = [
    # -- content types ------------------------------------------------------------------
    case(
        "content-type-text-plain",
        "invalid_request",
        lambda v: {"content": v.form(), "headers": {"Content-Type": "text/plain", **v.auth}},
    ),
    case(
        "content-type-missing",
        "invalid_request",
        lambda v: {"content": v.form(), "headers": v.auth},
    ),
    case(
        "content-type-multipart",
        "invalid_request",
        lambda v: {"data": refresh(v.token), "files": {"f": b"x"}, "headers": v.auth},
    ),
    case(
        "content-type-xml",
        "invalid_request",
        lambda v: {"content": v.form(), "headers": {"Content-Type": "application/xml", **v.auth}},
    ),
    case(
        "content-type-json-lookalike",
        "invalid_request",
        lambda v: {"content": v.json(), "headers": {"Content-Type": "application/jsonx", **v.auth}},
    ),
    case(
        "form-charset-latin1",
        "invalid_request",
        lambda v: {
            "content": v.form(),
            "headers": {"Content-Type": FORM + "; charset=ISO-8859-1", **v.auth},
        },
    ),
    case(
        "json-body-sent-as-form",
        "invalid_request",
        lambda v: {"content": v.json(), "headers": {"Content-Type": FORM, **v.auth}},
    ),
    case("empty-form-body", "invalid_request", form(b"")),
    # -- encodings ------------------------------------------------------------------------
    case("raw-invalid-utf8", "invalid_request", form(b"grant_type=refresh_token&x=\xff\xfe")),
    case("raw-latin1-in-token", "invalid_request", lambda v: form(v.form().encode() + b"\xe9")(v)),
    case("percent-invalid-utf8", "invalid_request", form("grant_type=refresh_token&x=%FF")),
    case("percent-overlong-utf8", "invalid_request", form("grant_type=refresh_token&x=%C0%AF")),
    case("percent-surrogate-utf8", "invalid_request", form("grant_type=refresh_token&x=%ED%A0%80")),
    case("percent-invalid-utf8-in-name", "invalid_request", form("grant_type=refresh_token&%FF=1")),
    case("percent-nul-in-value", "invalid_request", lambda v: form(v.form(scope="openid%00"))(v)),
    case("raw-nul-in-body", "invalid_request", lambda v: form(v.form().encode() + b"&x=\x00")(v)),
    case(
        "nul-in-client_id-post",
        "invalid_request",
        lambda v: {
            "data": refresh(v.token, client_id=v.client_id + "\x00", client_secret=v.secret)
        },
    ),
    case(
        "control-char-in-client_secret-post",
        "invalid_request",
        lambda v: {
            "data": refresh(v.token, client_id=v.client_id, client_secret=v.secret + "\x1b[2J")
        },
    ),
    # -- body size ------------------------------------------------------------------------
    case(
        "body-too-large-content-length",
        "invalid_request",
        lambda v: form(v.form(pad="x" * v.max_body))(v),
        413,
    ),
    case(
        "body-too-large-chunked",
        "invalid_request",
        lambda v: {
            "content": _chunks(v.max_body + 1),
            "headers": {"Content-Type": FORM, **v.auth},
        },
        413,
    ),
    case(
        "content-length-claims-too-large",
        "invalid_request",
        lambda v: form(v.form(), **{"Content-Length": str(v.max_body + 1)})(v),
        413,
    ),
    case(
        "content-length-huge",
        "invalid_request",
        lambda v: form(v.form(), **{"Content-Length": "9" * 40})(v),
        413,
    ),
    case(
        "content-length-negative",
        "invalid_request",
        lambda v: form(v.form(), **{"Content-Length": "-1"})(v),
    ),
    case(
        "content-length-non-numeric",
        "invalid_request",
        lambda v: form(v.form(), **{"Content-Length": "twelve"})(v),
    ),
    case(
        "content-length-float",
        "invalid_request",
        lambda v: form(v.form(), **{"Content-Length": "1e3"})(v),
    ),
    case(
        "content-length-plus-sign",
        "invalid_request",
        lambda v: form(v.form(), **{"Content-Length": "+120"})(v),
    ),
    case(
        "content-length-lies-short",
        # The limit holds for what is read, whatever the header claimed.
        "invalid_request",
        lambda v: form(v.form(pad="x" * v.max_body), **{"Content-Length": "5"})(v),
        413,
    ),
    # -- Basic authorization headers ------------------------------------------------------
    case("basic-no-colon", "invalid_client", bad_basic(lambda v: "Basic " + b64(b"nocolon"))),
    case("basic-empty-credentials", "invalid_client", bad_basic(lambda v: "Basic ")),
    case("basic-scheme-only", "invalid_client", bad_basic(lambda v: "Basic")),
    case("basic-empty-header", "invalid_client", bad_basic(lambda v: "")),
    case("basic-empty-id", "invalid_client", bad_basic(lambda v: "Basic " + b64(b":secret"))),
    case("basic-bad-base64", "invalid_client", bad_basic(lambda v: "Basic !!!not-base64!!!")),
    case("basic-bad-padding", "invalid_client", bad_basic(lambda v: "Basic " + b64(b"a:b")[:-1])),
    case(
        "basic-non-utf8",
        "invalid_client",
        bad_basic(lambda v: "Basic " + b64(v.client_id.encode() + b":\xff\xfe")),
    ),
    case(
        "basic-percent-non-utf8",
        "invalid_client",
        bad_basic(lambda v: "Basic " + b64(f"{v.client_id}:%FF{v.secret}".encode())),
    ),
    case(
        "basic-nul-in-id",
        "invalid_client",
        bad_basic(lambda v: "Basic " + b64(v.client_id.encode() + b"\x00:" + v.secret.encode())),
    ),
    case(
        "basic-percent-nul-in-id",
        "invalid_client",
        bad_basic(lambda v: "Basic " + b64(f"{v.client_id}%00:{v.secret}".encode())),
    ),
    case(
        "basic-newline-in-secret",
        "invalid_client",
        bad_basic(lambda v: "Basic " + b64(f"{v.client_id}:{v.secret}%0A".encode())),
    ),
    case("basic-bearer-scheme", "invalid_client", bad_basic(lambda v: f"Bearer {v.token}")),
    case("basic-digest-scheme", "invalid_client", bad_basic(lambda v: 'Digest username="x"')),
    case(
        "basic-huge",
        "invalid_client",
        bad_basic(lambda v: "Basic " + b64(b"x" * 6000 + b":" + b"y" * 6000)),
    ),
    # -- JSON bodies ----------------------------------------------------------------------
    case("json-array", "invalid_request", lambda v: json_body(f'["{v.token}"]')(v)),
    case("json-empty-array", "invalid_request", json_body(b"[]")),
    case(
        # Refused as a body, before client authentication could look at it.
        "json-empty-array-unauthenticated",
        "invalid_request",
        lambda v: {"content": b"[]", "headers": {"Content-Type": JSON}},
    ),
    case("json-array-of-object", "invalid_request", lambda v: json_body(b"[" + v.json() + b"]")(v)),
    case("json-number", "invalid_request", json_body(b"42")),
    case("json-string", "invalid_request", json_body(b'"grant_type=refresh_token"')),
    case("json-null", "invalid_request", json_body(b"null")),
    case("json-true", "invalid_request", json_body(b"true")),
    case("json-empty-body", "invalid_request", json_body(b"")),
    case("json-invalid", "invalid_request", lambda v: json_body(v.json()[:-1])(v)),
    case("json-trailing-garbage", "invalid_request", lambda v: json_body(v.json() + b"}")(v)),
    case("json-single-quotes", "invalid_request", json_body(b"{'grant_type': 'refresh_token'}")),
    case(
        "json-nested-object-value",
        "invalid_request",
        lambda v: json_body(v.json(scope={"openid": True}))(v),
    ),
    case(
        "json-array-value",
        "invalid_request",
        lambda v: json_body(v.json(refresh_token=[v.token]))(v),
    ),
    case("json-number-value", "invalid_request", lambda v: json_body(v.json(scope=1))(v)),
    case("json-bool-value", "invalid_request", lambda v: json_body(v.json(scope=True))(v)),
    case("json-nan-value", "invalid_request", lambda v: json_body(v.json()[:-1] + b',"x":NaN}')(v)),
    case(
        "json-huge-integer-value",
        "invalid_request",
        lambda v: json_body(v.json()[:-1] + b',"x":' + b"9" * 5000 + b"}")(v),
    ),
    case(
        "json-duplicate-key",
        "invalid_request",
        lambda v: json_body(v.json()[:-1] + f',"refresh_token":"{v.token}"}}'.encode())(v),
    ),
    case(
        "json-duplicate-key-differing",
        "invalid_request",
        lambda v: json_body(b'{"grant_type":"password",' + v.json()[1:])(v),
    ),
    case("json-deeply-nested", "invalid_request", json_body(b"[" * 5000 + b"]" * 5000)),
    case(
        "json-deeply-nested-object",
        "invalid_request",
        json_body(b'{"a":' * 2000 + b"1" + b"}" * 2000),
    ),
    case("json-invalid-utf8", "invalid_request", lambda v: json_body(v.json()[:-2] + b'\xff"}')(v)),
    case(
        "json-utf16", "invalid_request", lambda v: json_body(v.json().decode().encode("utf-16"))(v)
    ),
    case("json-bom", "invalid_request", lambda v: json_body(b"\xef\xbb\xbf" + v.json())(v)),
    case(
        "json-lone-surrogate-in-secret",
        "invalid_request",
        lambda v: {
            "content": json.dumps(
                refresh(v.token, client_id=v.client_id, client_secret="\ud800")
            ).encode(),
            "headers": {"Content-Type": JSON},
        },
    ),
    case(
        "json-lone-surrogate-in-client_id",
        "invalid_request",
        lambda v: {
            "content": json.dumps(refresh(v.token, client_id="\udfff")).encode(),
            "headers": {"Content-Type": JSON},
        },
    ),
    case("json-nul-in-scope", "invalid_request", lambda v: json_body(v.json(scope="a\x00"))(v)),
    # -- refresh tokens -------------------------------------------------------------------
    case("token-random-string", "invalid_grant", token_form(lambda v: "8xLOxBtZp8")),
    case("token-spec-example", "invalid_grant", token_form(lambda v: "your_refresh_token_here")),
    case("token-prefix-only", "invalid_grant", token_form(lambda v: "tkd_rt_")),
    case("token-wrong-checksum", "invalid_grant", token_form(lambda v: _checksum_off(v.token))),
    case("token-truncated", "invalid_grant", token_form(lambda v: v.token[:-1])),
    case("token-extended", "invalid_grant", token_form(lambda v: v.token + "0")),
    case("token-upper-cased", "invalid_grant", token_form(lambda v: v.token.upper())),
    case("token-with-spaces", "invalid_grant", token_form(lambda v: f" {v.token} ")),
    case("token-other-prefix", "invalid_grant", token_form(lambda v: "tkd_cs_" + v.token[7:])),
    case("token-well-formed-unknown", "invalid_grant", token_form(lambda v: new_refresh_token())),
    case("token-10kb", "invalid_grant", token_form(lambda v: "tkd_rt_" + "A" * 10_000)),
    case("token-non-ascii", "invalid_grant", token_form(lambda v: v.token[:-1] + "é")),
    case("token-nul-bytes", "invalid_request", token_form(lambda v: v.token[:20] + "\x00" * 29)),
    case(
        "token-percent-nul",
        "invalid_request",
        lambda v: form(f"grant_type=refresh_token&refresh_token={v.token}%00")(v),
    ),
    case(
        "token-in-json-nul", "invalid_request", lambda v: json_body(v.json(refresh_token="\x00"))(v)
    ),
    # -- too many fields ------------------------------------------------------------------
    case(
        "form-too-many-fields",
        "invalid_request",
        lambda v: form(v.form(**{f"f{i}": "1" for i in range(MAX_FIELDS - 1)}))(v),
    ),
    case("form-only-separators", "invalid_request", form(b"&" * 5000)),
    case(
        "json-too-many-fields",
        "invalid_request",
        lambda v: json_body(v.json(**{f"f{i}": "1" for i in range(MAX_FIELDS - 1)}))(v),
    ),
    case(
        "form-long-parameter-name-repeated",
        "invalid_request",
        lambda v: form(v.form() + "&" + "n" * 5000 + "=1&" + "n" * 5000 + "=2")(v),
    ),
]


@pytest.fixture
def victim(http, make_client, issue, rt) -> Victim:
    reg = make_client()
    token = issue(reg, "openid offline email").refresh_token
    assert reg.secret is not None and token is not None
    # Background state the snapshot must also find unchanged: a spent token (with its
    # successor) of a second family, and a revoked family of another client.
    spent = issue(reg, "openid offline").refresh_token
    assert_tokens(http.post(TOKEN, data=refresh(spent), auth=reg.basic))
    other = make_client()
    issue(other, "offline")
    assert rt.store.revoke_families(now=rt.clock.now(), reason="test", client_id=other.client_id)
    return Victim(reg.client_id, reg.secret, token, rt.settings.max_body_bytes)


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_request_is_a_clean_4xx_and_changes_nothing(
    http, rt, victim: Victim, bad: Case, caplog
) -> None:
    before = storage_snapshot(rt.store.engine)
    caplog.set_level(logging.INFO)

    r = http.post(TOKEN, **bad.request(victim))

    body = assert_oauth_error(r, bad.error, bad.status, leaks=(victim.secret, victim.token))
    assert len(body["error_description"]) < 200
    assert body["error_description"].isprintable()
    assert storage_snapshot(rt.store.engine) == before
    # Nothing was logged as an unexpected error (a 500 in disguise).
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    # The victim's token was not spent, revoked or otherwise touched.
    assert_tokens(http.post(TOKEN, data=refresh(victim.token), headers=victim.auth))


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_body_at_the_size_limit_is_accepted(http, victim: Victim) -> None:
    """The limit is inclusive: exactly max_body_bytes is read and parsed."""
    head = victim.form(pad="")
    body = head + "x" * (victim.max_body - len(head))
    assert len(body) == victim.max_body
    r = http.post(TOKEN, content=body, headers={"Content-Type": FORM, **victim.auth})
    assert_tokens(r)


def test_exactly_max_fields_are_accepted(http, victim: Victim) -> None:
    extra = {f"f{i}": "1" for i in range(MAX_FIELDS - 2)}
    r = http.post(TOKEN, data=refresh(victim.token, **extra), headers=victim.auth)
    assert_tokens(r)
    assert len(refresh(victim.token, **extra)) == MAX_FIELDS


def test_tab_is_allowed_in_parameter_values(http, victim: Victim) -> None:
    """RFC 6749 Appendix A's UNICODECHARNOCRLF includes %x09; an unknown parameter with a
    TAB is ignored like any other extension parameter."""
    r = http.post(TOKEN, data=refresh(victim.token, note="a\tb"), headers=victim.auth)
    assert_tokens(r)


def test_endless_chunked_body_is_cut_off_early(rt, victim: Victim) -> None:
    """Without Content-Length the server stops reading once the limit is passed, instead of
    buffering whatever a client streams (ASGI-level: real multi-message bodies)."""
    app = create_app(rt.settings, runtime=rt)
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received > 10_000:
            raise AssertionError("the app kept reading an endless body")
        return {"type": "http.request", "body": b"a" * 1024, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": TOKEN,
        "raw_path": TOKEN.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"issuer.test"),
            (b"content-type", FORM.encode()),
            (b"transfer-encoding", b"chunked"),
            *((k.lower().encode(), v.encode()) for k, v in victim.auth.items()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("issuer.test", 443),
    }
    asyncio.run(app(scope, receive, send))

    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"] == "invalid_request"
    assert received * 1024 <= victim.max_body + 1024
