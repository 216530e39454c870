"""Properties of the request parsers of tokend.web.parsing: the form and JSON bodies of the
token, revocation, introspection and UserInfo endpoints, and the Basic header.

For any input: a dict of single-valued text parameters, or the parser's documented error
(``InvalidRequest`` for bodies, ``InvalidClient`` for the header), never anything else. A
well-formed request round-trips. The bounds (64 parameters, UNICODECHARNOCRLF text, no
empty value) hold for everything returned."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import unquote_plus, urlencode

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz.strategies import (
    NOT_TEXT,
    any_text,
    hostile_text,
    json_values,
    nonempty_text,
    text,
)
from tests.web.helpers import basic, raw_basic
from tokend.core.errors import InvalidClient, InvalidRequest
from tokend.web.parsing import MAX_FIELDS, parse_basic, parse_form, parse_json, parse_params

FORM = "application/x-www-form-urlencoded"


def assert_params(params: dict[str, str]) -> None:
    """What every parser promises about what it returns."""
    assert isinstance(params, dict)
    assert len(params) <= MAX_FIELDS
    for key, value in params.items():
        assert isinstance(key, str) and isinstance(value, str)
        assert value != "", "an empty value must be treated as omitted (RFC 6749 §3.1)"
        for s in (key, value):
            assert not any(c in s for c in NOT_TEXT), repr(s)
            assert not any("\ud800" <= c <= "\udfff" for c in s), repr(s)


# A form's parameters: distinct names, non-empty text values, within the field bound.
forms = st.dictionaries(nonempty_text, nonempty_text, max_size=12)


# -- application/x-www-form-urlencoded -----------------------------------------------------


@given(st.binary(max_size=300))
def test_form_any_bytes(body: bytes) -> None:
    try:
        params = parse_form(body)
    except InvalidRequest as exc:
        assert exc.status_code == 400 and exc.description
        return
    assert_params(params)


@given(st.lists(st.tuples(hostile_text, hostile_text), max_size=8))
def test_form_any_pairs(pairs: list[tuple[str, str]]) -> None:
    body = urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode()
    try:
        params = parse_form(body)
    except InvalidRequest:
        return
    assert_params(params)
    names = [k for k, _ in pairs]
    assert len(set(names)) == len(names), "a repeated parameter was accepted"
    assert params == {k: v for k, v in pairs if v != ""}


@given(forms)
def test_form_round_trip(form: dict[str, str]) -> None:
    assert parse_form(urlencode(form).encode()) == form


@given(forms, st.sampled_from([None, "utf-8", "UTF-8", '"utf-8"', "us-ascii"]))
def test_form_round_trip_with_content_type(form: dict[str, str], charset: str | None) -> None:
    content_type = FORM if charset is None else f"{FORM}; charset={charset}"
    body = urlencode(form).encode()
    if charset == "us-ascii":
        assume(body.isascii())
    assert parse_params(content_type, body) == form


@given(forms.filter(bool), st.data())
def test_form_repeated_name_is_refused(form: dict[str, str], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(form)))
    again = data.draw(text)  # an empty repeat is a repeat too (client_id=&client_id=x)
    pairs = [*form.items(), (name, again)]
    data.draw(st.randoms()).shuffle(pairs)
    with pytest.raises(InvalidRequest, match="repeated"):
        parse_form(urlencode(pairs).encode())


@given(st.integers(MAX_FIELDS + 1, 4 * MAX_FIELDS))
def test_form_field_bound(n: int) -> None:
    body = "&".join(f"p{i}=v" for i in range(n)).encode()
    with pytest.raises(InvalidRequest, match="too many"):
        parse_form(body)
    assert len(parse_form("&".join(f"p{i}=v" for i in range(MAX_FIELDS)).encode())) == 64


@given(forms.filter(bool), st.data())
def test_form_control_character_is_refused(form: dict[str, str], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(form)))
    bad = data.draw(st.sampled_from(NOT_TEXT))
    at = data.draw(st.integers(0, len(form[name])))
    form[name] = form[name][:at] + bad + form[name][at:]
    with pytest.raises(InvalidRequest, match="not allowed"):
        parse_form(urlencode(form).encode())


# -- application/json ------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_json_any_bytes(body: bytes) -> None:
    try:
        params = parse_json(body)
    except InvalidRequest:
        return
    assert_params(params)


@given(json_values, st.booleans())
def test_json_any_value(value: object, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        params = parse_json(body)
    except InvalidRequest:
        return
    assert_params(params)
    assert isinstance(value, dict)
    assert params == {k: v for k, v in value.items() if v is not None and v != ""}


@given(forms, st.dictionaries(nonempty_text, st.none(), max_size=3), st.booleans())
def test_json_round_trip(form: dict[str, str], nulls: dict[str, None], ascii_only: bool) -> None:
    """A JSON null is an omitted parameter, like an empty string."""
    assume(not set(form) & set(nulls) and len(form) + len(nulls) <= MAX_FIELDS)
    body = json.dumps({**form, **nulls}, ensure_ascii=ascii_only).encode()
    assert parse_json(body) == form
    assert parse_params("application/json; charset=utf-8", body) == form


@given(forms.filter(bool), st.data())
def test_json_repeated_member_is_refused(form: dict[str, str], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(form)))
    members = [json.dumps(k) + ":" + json.dumps(v) for k, v in form.items()]
    members.append(json.dumps(name) + ":" + json.dumps(data.draw(text)))
    with pytest.raises(InvalidRequest, match="repeated"):
        parse_json(("{" + ",".join(members) + "}").encode())


@given(st.sampled_from([b"[", b'{"a":[', b'[{"a":']), st.integers(10, 200_000))
def test_json_nesting_is_bounded(opening: bytes, depth: int) -> None:
    """Deep nesting is an invalid request, quickly, never a RecursionError or a crash."""
    started = time.perf_counter()
    with pytest.raises(InvalidRequest):
        parse_json(opening * depth)
    assert time.perf_counter() - started < 1.0


# -- the Content-Type ------------------------------------------------------------------------


@given(hostile_text, st.binary(max_size=100))
def test_params_any_content_type(content_type: str, body: bytes) -> None:
    try:
        params = parse_params(content_type, body)
    except InvalidRequest:
        return
    assert_params(params)
    media = content_type.partition(";")[0].strip().lower()
    assert media in (FORM, "application/json")


# -- Authorization: Basic (RFC 6749 §2.3.1, RFC 7617) ----------------------------------------


@given(any_text)
def test_basic_any_header(value: str) -> None:
    try:
        parsed = parse_basic(value)
    except InvalidClient as exc:
        assert exc.status_code == 401
        return
    assert parsed is not None
    client_id, secret = parsed
    assert client_id and not any(c in client_id + secret for c in NOT_TEXT)


@given(st.binary(max_size=100), st.sampled_from(["Basic", "basic", "BASIC"]))
def test_basic_any_credentials(raw: bytes, scheme: str) -> None:
    header = raw_basic(raw)["Authorization"].replace("Basic", scheme, 1)
    try:
        client_id, secret = parse_basic(header)  # type: ignore[misc]
    except InvalidClient:
        return
    # What was accepted is exactly what was sent, form-urlencoded (RFC 6749 §2.3.1).
    left, sep, right = raw.decode("utf-8").partition(":")
    assert sep and (client_id, secret) == (unquote_plus(left), unquote_plus(right))
    assert client_id


@given(nonempty_text, text)
def test_basic_round_trip(client_id: str, secret: str) -> None:
    assert parse_basic(basic(client_id, secret)["Authorization"]) == (client_id, secret)


@given(nonempty_text, text, st.sampled_from(NOT_TEXT), st.booleans())
def test_basic_control_character_is_refused(
    client_id: str, secret: str, bad: str, in_id: bool
) -> None:
    if in_id:
        client_id += bad
    else:
        secret = bad + secret
    with pytest.raises(InvalidClient):
        parse_basic(basic(client_id, secret)["Authorization"])


def test_basic_absent_is_none() -> None:
    assert parse_basic(None) is None


@given(
    st.text(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="),
        max_size=80,
    )
)
def test_basic_any_base64(encoded: str) -> None:
    try:
        parsed = parse_basic("Basic " + encoded)
    except InvalidClient:
        return
    assert parsed is not None
    decoded = base64.b64decode(encoded, validate=True).decode()
    assert ":" in decoded and parsed[0]
