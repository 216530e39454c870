"""Unit tests of web/parsing.py: bodies, parameters and Basic credentials (RFC 6749 §2.3.1,
§3.1, §3.2), without an app or a database."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
from starlette.requests import ClientDisconnect, Request

from tokend.core.errors import InvalidClient, InvalidRequest
from tokend.web.parsing import (
    MAX_AUTHORIZATION_LENGTH,
    MAX_FIELDS,
    PayloadTooLarge,
    RequestHead,
    _plain_pairs,
    parse_basic,
    parse_form,
    parse_json,
    parse_params,
    read_body,
)

FORM = "application/x-www-form-urlencoded"


def b64(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


# -- parse_form ----------------------------------------------------------------------------


def test_form_decodes_plus_and_percent_as_utf8() -> None:
    assert parse_form(b"a=x+y%2Bz&b=%C3%A9%E2%9C%93&c=%25") == {"a": "x y+z", "b": "é✓", "c": "%"}


def test_form_empty_values_are_omitted_rfc6749_3_1() -> None:
    assert parse_form(b"grant_type=refresh_token&scope=&client_id") == {
        "grant_type": "refresh_token"
    }


def test_form_empty_body_is_no_parameters() -> None:
    assert parse_form(b"") == {}


@pytest.mark.parametrize(
    "body",
    [b"a=1&a=1", b"a=1&a=2", b"a=&a=1", b"a&a", b"x=1&a=1&y=2&a=1", b"%61=1&a=2"],
    ids=["same", "different", "empty-then-value", "no-equals", "apart", "encoded-name"],
)
def test_form_repeated_parameter_is_invalid_request_rfc6749_3_2(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="parameter is repeated"):
        parse_form(body)


@pytest.mark.parametrize(
    "body",
    [b"a=\xff", b"a=%FF", b"a=%C0%AF", b"a=%ED%A0%80", b"%FF=1", b"a=\xe9t\xe9"],
    ids=["raw-ff", "percent-ff", "overlong", "surrogate", "in-name", "latin1"],
)
def test_form_invalid_utf8_is_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="UTF-8"):
        parse_form(body)


@pytest.mark.parametrize(
    "body",
    [b"a=%00", b"a=\x00", b"%00=1", b"a=x%0Ay", b"a=x%0Dy", b"a=%1B", b"a=%7F", b"a=%EF%BF%BF"],
    ids=["nul", "raw-nul", "nul-name", "lf", "cr", "esc", "del", "noncharacter-ffff"],
)
def test_form_characters_outside_unicodecharnocrlf_are_invalid_request(body: bytes) -> None:
    """RFC 6749 Appendix A: no parameter may hold a control character other than TAB."""
    with pytest.raises(InvalidRequest, match="not allowed"):
        parse_form(body)


def test_form_tab_and_astral_characters_are_allowed() -> None:
    assert parse_form(b"a=x%09y&b=%F0%9F%94%91") == {"a": "x\ty", "b": "\U0001f511"}


def test_form_field_limit() -> None:
    at_limit = "&".join(f"f{i}=1" for i in range(MAX_FIELDS)).encode()
    assert len(parse_form(at_limit)) == MAX_FIELDS
    with pytest.raises(InvalidRequest, match="too many parameters"):
        parse_form(at_limit + b"&x=1")
    with pytest.raises(InvalidRequest, match="too many parameters"):
        parse_form(b"&" * MAX_FIELDS)


def test_form_description_never_echoes_odd_parameter_names() -> None:
    for name in ["x" * 41, "n\u00e9", "a\tb"]:
        body = f"{quote(name)}=1&{quote(name)}=2".encode()
        with pytest.raises(InvalidRequest) as exc:
            parse_form(body)
        assert exc.value.description == "The a parameter is repeated."
    with pytest.raises(InvalidRequest) as exc:
        parse_form(b"client_secret=1&client_secret=2")
    assert exc.value.description == "The client_secret parameter is repeated."


# -- parse_json ----------------------------------------------------------------------------


def test_json_object_of_strings() -> None:
    assert parse_json(b'{"grant_type": "refresh_token", "scope": "openid \\u00e9"}') == {
        "grant_type": "refresh_token",
        "scope": "openid é",
    }


def test_json_null_and_empty_string_are_omitted() -> None:
    assert parse_json(b'{"a": null, "b": "", "c": "x"}') == {"c": "x"}


def test_json_empty_object() -> None:
    assert parse_json(b"{}") == {}


@pytest.mark.parametrize(
    "body",
    [b"[]", b'[["a", "b"]]', b'[{"a": "b"}]', b"42", b'"a=b"', b"null", b"true", b"[{}]"],
    ids=["empty-array", "array-of-pairs", "array-of-object", "number", "string", "null", "true",
         "array-of-empty-object"],
)  # fmt: skip
def test_json_must_be_an_object(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="must be an object"):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1}', b'{"a": 1.5}', b'{"a": true}', b'{"a": false}', b'{"a": []}', b'{"a": ["x"]}',
     b'{"a": {}}', b'{"a": {"b": "c"}}', b'{"a": NaN}', b'{"a": Infinity}'],
    ids=["int", "float", "true", "false", "empty-array", "array", "empty-object", "object",
         "nan", "infinity"],
)  # fmt: skip
def test_json_values_must_be_strings(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="The a parameter must be a string"):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a": "1", "a": "1"}', b'{"a": "1", "a": "2"}', b'{"a": null, "a": "1"}',
     b'{"a": "1", "b": "2", "a": ""}'],
    ids=["same", "different", "null-then-value", "apart"],
)  # fmt: skip
def test_json_duplicate_keys_are_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="The a parameter is repeated"):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"a": "b"', b'{"a": "b"}}', b"{'a': 'b'}", b'{"a": "\xff"}',
     b'\xef\xbb\xbf{"a": "b"}', '{"a": "b"}'.encode("utf-16"), b"[" * 5000 + b"]" * 5000,
     b'{"a":' * 2000 + b'"x"' + b"}" * 2000, b'{"a": ' + b"9" * 5000 + b"}"],
    ids=["empty", "unclosed", "unclosed-2", "trailing", "single-quotes", "invalid-utf8", "bom",
         "utf16", "deep-array", "deep-object", "huge-int"],
)  # fmt: skip
def test_json_invalid_is_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\\ud800"}', b'{"a": "x\\udfffy"}', b'{"\\ud800": "x"}', b'{"a": "\\u0000"}',
     b'{"a": "x\\ny"}', b'{"a": "\\u007f"}'],
    ids=["lone-high-surrogate", "lone-low-surrogate", "surrogate-name", "nul", "newline", "del"],
)  # fmt: skip
def test_json_characters_outside_unicodecharnocrlf_are_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not allowed"):
        parse_json(body)


def test_json_surrogate_pair_escape_is_one_character() -> None:
    assert parse_json(b'{"a": "\\ud83d\\udd11"}') == {"a": "\U0001f511"}


def test_json_field_limit() -> None:
    fields = ", ".join(f'"f{i}": "1"' for i in range(MAX_FIELDS))
    assert len(parse_json(f"{{{fields}}}".encode())) == MAX_FIELDS
    with pytest.raises(InvalidRequest, match="too many parameters"):
        parse_json(f'{{{fields}, "x": "1"}}'.encode())


# -- parse_params --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [FORM, FORM.upper(), f"{FORM}; charset=utf-8", f'{FORM};charset="UTF-8"',
     f"{FORM}; charset=us-ascii", f" {FORM} ; foo=bar"],
)  # fmt: skip
def test_params_form_content_types(content_type: str) -> None:
    assert parse_params(content_type, b"a=b") == {"a": "b"}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON", "application/json; charset=utf-8"],
)
def test_params_json_content_types(content_type: str) -> None:
    assert parse_params(content_type, b'{"a": "b"}') == {"a": "b"}


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "multipart/form-data; boundary=x", "application/xml",
     "application/jsonx", "application/x-www-form-urlencodedx", "application/*", "*/*",
     "text/json"],
)  # fmt: skip
def test_params_other_content_types_are_invalid_request(content_type: str | None) -> None:
    with pytest.raises(InvalidRequest, match="Content-Type"):
        parse_params(content_type, b"a=b")


@pytest.mark.parametrize("charset", ["iso-8859-1", "utf-16", "windows-1252", ""])
def test_params_form_with_other_charset_is_invalid_request(charset: str) -> None:
    with pytest.raises(InvalidRequest, match="UTF-8"):
        parse_params(f"{FORM}; charset={charset}", b"a=b")


def test_params_body_is_parsed_by_the_declared_type_only() -> None:
    # JSON declared as a form is one nameless, valueless field: no parameters at all.
    assert parse_params(FORM, b'{"grant_type": "refresh_token"}') == {}
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_params("application/json", b"grant_type=refresh_token")


# -- parse_basic ---------------------------------------------------------------------------


def test_basic_absent_is_none() -> None:
    assert parse_basic(None) is None


CREDENTIALS = [
    ("client", "secret"),
    ("a:b c%", "s3cr+t:with%25 space/ü"),
    ("x%41", "p+q"),
    ("clïent-ß", "pässwörd ✓"),
    ("id", ""),
    ("semi;colon&amp=eq", "=&;,"),
    ("tab\tid", "tab\tsecret"),
]


@pytest.mark.parametrize(("client_id", "secret"), CREDENTIALS)
def test_basic_form_urlencoded_credentials_rfc6749_2_3_1(client_id: str, secret: str) -> None:
    """§2.3.1: "The client identifier is encoded using the application/x-www-form-urlencoded
    encoding algorithm [...] and the encoded value is used as the username"; same for the
    password. Spaces may come as "+" or "%20"."""
    plus = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    percent = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    assert parse_basic(b64(plus)) == (client_id, secret)
    assert parse_basic(b64(percent)) == (client_id, secret)


def test_basic_decodes_exactly_once() -> None:
    assert parse_basic(b64(b"x%2541:p%252B")) == ("x%41", "p%2B")
    assert parse_basic(b64(b"x%41:p+q")) == ("xA", "p q")


def test_basic_id_ends_at_the_first_colon_rfc7617() -> None:
    assert parse_basic(b64(b"id:pass:word")) == ("id", "pass:word")
    assert parse_basic(b64(b"a:b c%25:x")) == ("a", "b c%:x")


def test_basic_scheme_is_case_insensitive_and_whitespace_tolerant() -> None:
    for header in ["basic ", "BASIC ", "Basic  ", " Basic "]:
        assert parse_basic(header + base64.b64encode(b"id:pw").decode() + " ") == ("id", "pw")


@pytest.mark.parametrize(
    "header",
    [
        b64(b"nocolon"),
        b64(b":secret"),
        b64(b""),
        "Basic",
        "Basic ",
        "",
        "Basic !!!!",
        "Basic " + base64.b64encode(b"id:pw").decode()[:-1],
        "Basic aWQ6cHc",  # unpadded
        "Basic aWQ6c Hc=",
        "Basic aWQ6cHc=\u00e9",
        b64(b"id:\xff\xfe"),
        b64(b"\xc3(:pw"),
        b64(b"id:%FF"),
        b64(b"%C3%28:pw"),
        b64(b"id\x00:pw"),
        b64(b"id%00:pw"),
        b64(b"id:pw%0A"),
        b64(b"id:pw\r\n"),
        "Bearer abc",
        'Digest username="x"',
        "Basicx " + base64.b64encode(b"id:pw").decode(),
        "aWQ6cHc=",
    ],
    ids=[
        "no-colon", "empty-id", "empty-credentials", "scheme-only", "scheme-space", "empty",
        "bad-base64", "truncated-base64", "unpadded", "space-inside", "non-ascii", "non-utf8",
        "non-utf8-id", "percent-non-utf8", "percent-non-utf8-id", "nul", "percent-nul",
        "percent-newline", "raw-crlf", "bearer", "digest", "scheme-prefix", "no-scheme",
    ],
)  # fmt: skip
def test_basic_malformed_is_invalid_client(header: str) -> None:
    with pytest.raises(InvalidClient):
        parse_basic(header)


# -- read_body -----------------------------------------------------------------------------


def _request(headers: dict[str, bytes], chunks: Iterable[bytes]) -> tuple[Request, list[int]]:
    pending = list(chunks)
    reads = [0]

    async def receive() -> dict[str, object]:
        reads[0] += 1
        if not pending:
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.encode(), v) for k, v in headers.items()],
    }
    return Request(scope, receive), reads


def _read(headers: dict[str, bytes], chunks: Iterable[bytes], limit: int = 100) -> bytes:
    request, _ = _request(headers, chunks)
    return asyncio.run(read_body(request, limit))


def test_read_body_joins_chunks() -> None:
    assert _read({}, [b"ab", b"", b"cd"]) == b"abcd"
    assert _read({"content-length": b"4"}, [b"abcd"]) == b"abcd"


def test_read_body_limit_is_inclusive() -> None:
    assert _read({"content-length": b"100"}, [b"x" * 100]) == b"x" * 100
    assert _read({}, [b"x" * 60, b"x" * 40]) == b"x" * 100


@pytest.mark.parametrize(
    "length", [b"101", b"0101", b"9" * 50], ids=["one-over", "leading-zero", "huge"]
)
def test_read_body_content_length_over_limit_is_413_before_reading(length: bytes) -> None:
    request, reads = _request({"content-length": length}, [b"x"])
    with pytest.raises(PayloadTooLarge) as exc:
        asyncio.run(read_body(request, 100))
    assert exc.value.status_code == 413
    assert exc.value.error == "invalid_request"
    assert reads[0] == 0


def test_read_body_streamed_over_limit_is_413_without_reading_everything() -> None:
    request, reads = _request({}, [b"x" * 30] * 1000)
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(request, 100))
    assert reads[0] == 4


def test_read_body_content_length_that_lies_short_still_has_the_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        _read({"content-length": b"5"}, [b"x" * 60, b"x" * 60])


@pytest.mark.parametrize(
    "length",
    [b"-1", b"+5", b"1e2", b"0x10", b" 5", b"5 ", b"", b"abc", b"5,5", b"\xb2", b"\xb9\xb2",
     "\u0665".encode()],
    ids=["negative", "plus", "exponent", "hex", "leading-space", "trailing-space", "empty",
         "word", "list", "superscript-two", "superscripts", "arabic-indic-five-utf8"],
)  # fmt: skip
def test_read_body_invalid_content_length_is_invalid_request(length: bytes) -> None:
    with pytest.raises(InvalidRequest, match="Content-Length") as exc:
        _read({"content-length": length}, [b"x"])
    assert exc.value.status_code == 400


def test_basic_header_over_the_length_limit_is_invalid_client_before_decoding() -> None:
    """Issue 10 §3: the header is bounded before base64 and percent decoding."""
    secret = "s" * (MAX_AUTHORIZATION_LENGTH - 100)
    short = secret[: MAX_AUTHORIZATION_LENGTH // 2]
    ok = "Basic " + base64.b64encode(f"client:{short}".encode()).decode()
    assert parse_basic(ok) == ("client", short)
    header = "Basic " + base64.b64encode(f"client:{secret}".encode()).decode()
    assert len(header) > MAX_AUTHORIZATION_LENGTH
    with pytest.raises(InvalidClient):
        parse_basic(header)


def test_read_body_in_one_message_over_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        _read({"content-length": b"5"}, [b"x" * 101])


def test_read_body_is_what_request_body_answers_afterwards() -> None:
    for chunks in ([b"abcd"], [b"ab", b"cd"]):
        request, reads = _request({}, chunks)

        async def both(request: Request = request) -> tuple[bytes, bytes]:
            return await read_body(request, 100), await request.body()

        assert asyncio.run(both()) == (b"abcd", b"abcd")
        assert reads[0] == len(chunks)  # the server was asked once per chunk, not again


def test_read_body_disconnected_midway_is_client_disconnect() -> None:
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(request, 100))


# Every string of up to 4 characters over this alphabet: blank fields, names without "=",
# several "=", leading and trailing "&", non-ASCII text.
_FORM_ALPHABET = "a=&\u00e9"


@pytest.mark.parametrize("max_fields", [1, 2, 64])
def test_plain_form_pairs_are_parse_qsl_s(max_fields: int) -> None:
    texts = ["".join(t) for n in range(5) for t in itertools.product(_FORM_ALPHABET, repeat=n)]
    for text in texts:
        try:
            expected: object = parse_qsl(
                text, keep_blank_values=True, errors="strict", max_num_fields=max_fields
            )
        except ValueError:
            expected = ValueError
        try:
            got: object = _plain_pairs(text, max_fields)
        except ValueError:
            got = ValueError
        assert got == expected, text


def test_a_form_with_escapes_is_still_decoded() -> None:
    assert parse_form(b"a=x%20y&b=1+2&c=%C3%A9") == {"a": "x y", "b": "1 2", "c": "\u00e9"}
    assert parse_form(b"grant_type=refresh_token&scope=&x") == {"grant_type": "refresh_token"}


def test_request_head_reads_the_first_of_each_field_and_any_dpop() -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", b"Basic one"),
        (b"content-type", b"text/plain"),
        (b"authorization", b"Basic two"),
        (b"content-length", b"12"),
    ]
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers})
    head = RequestHead(request)
    assert (head.content_type, head.authorization, head.content_length, head.dpop) == (
        request.headers.get("content-type"),
        request.headers.get("authorization"),
        request.headers.get("content-length"),
        False,
    )
    assert RequestHead(Request({**request.scope, "headers": [(b"dpop", b"")]})).dpop
    assert RequestHead(Request({**request.scope, "headers": []})).content_type is None
