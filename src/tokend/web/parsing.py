"""Turning token-endpoint HTTP requests into single-valued parameters (RFC 6749 §3.2).

- Bodies: ``application/x-www-form-urlencoded`` (the standard) or ``application/json`` (Didit's
  demo client), at most ``max_bytes``.
- "Request and response parameters MUST NOT be included more than once" (§3.2): a repeated
  parameter is ``invalid_request``, in forms and in JSON objects alike.
- "Parameters sent without a value MUST be treated as if they were omitted" (§3.1).
- Basic credentials are form-urlencoded before base64 (§2.3.1) and decoded accordingly.
- Every name and value is text of RFC 6749 Appendix A's widest class, UNICODECHARNOCRLF
  (no NUL or other controls but TAB, no lone surrogates): anything else is malformed, and
  never reaches storage (PostgreSQL text cannot hold NUL; a lone surrogate is not UTF-8).
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import b64decode
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request

from tokend.core.client_auth import credentials_from
from tokend.core.errors import InvalidClient, InvalidRequest, OAuthError
from tokend.core.models import ClientCredentials

MAX_FIELDS = 64

# RFC 6749 Appendix A: UNICODECHARNOCRLF = %x09 / %x20-7E / %x80-D7FF / %xE000-FFFD /
# %x10000-10FFFF. Its complement, searched for:
_NOT_UNICODECHARNOCRLF = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    default_description = "The request body is too large."


async def read_body(request: Request, max_bytes: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
        if not (length.isascii() and length.isdigit()):
            raise InvalidRequest("The Content-Length header is invalid.")
        if int(length) > max_bytes:
            raise PayloadTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge()
    return bytes(body)


def _single_valued(pairs: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            raise InvalidRequest(f"The {_safe_name(key)} parameter is repeated.")
        if not _is_text(key) or not _is_text(value):
            raise InvalidRequest(
                f"The {_safe_name(key)} parameter contains a character that is not allowed."
            )
        seen.add(key)
        if value != "":
            params[key] = value
    return params


def _is_text(value: str) -> bool:
    return _NOT_UNICODECHARNOCRLF.search(value) is None


def _safe_name(key: str) -> str:
    """Parameter names echoed in descriptions: short and printable only."""
    return key if key.isascii() and key.isprintable() and len(key) <= 40 else "a"


def parse_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid form-urlencoded UTF-8.") from None
    except ValueError:  # parse_qsl's only other error: more than max_num_fields
        raise InvalidRequest("The request has too many parameters.") from None
    return _single_valued(pairs)


class _Object(list[tuple[str, object]]):
    """A JSON object's members in order, duplicates kept (an array is a plain list)."""


def parse_json(body: bytes) -> dict[str, str]:
    try:
        pairs = json.loads(body.decode("utf-8"), object_pairs_hook=_Object)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(pairs, _Object):
        raise InvalidRequest("The JSON request body must be an object.")
    if len(pairs) > MAX_FIELDS:
        raise InvalidRequest("The request has too many parameters.")
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise InvalidRequest(f"The {_safe_name(key)} parameter must be a string.")
        out.append((key, value))
    return _single_valued(out)


def parse_params(content_type: str | None, body: bytes) -> dict[str, str]:
    media, _, rest = (content_type or "").partition(";")
    media = media.strip().lower()
    if media == "application/x-www-form-urlencoded":
        charset = _charset(rest)
        if charset not in (None, "utf-8", "us-ascii"):
            raise InvalidRequest("Only UTF-8 form bodies are accepted.")
        return parse_form(body)
    if media == "application/json":
        return parse_json(body)
    raise InvalidRequest(
        "The Content-Type must be application/x-www-form-urlencoded or application/json."
    )


def _charset(params: str) -> str | None:
    for item in params.split(";"):
        name, _, value = item.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def parse_basic(authorization: str | None) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1 / RFC 7617. ``None`` when no Authorization header was sent."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Only HTTP Basic client authentication is accepted here.")
    try:
        decoded = b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, sep, secret = decoded.partition(":")
        client_id = unquote_plus(client_id, errors="strict")
        secret = unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):  # incl. UnicodeDecodeError
        raise InvalidClient("The Basic authorization header is malformed.") from None
    if not sep or not client_id or not _is_text(client_id) or not _is_text(secret):
        raise InvalidClient("The Basic authorization header is malformed.")
    return client_id, secret


async def read_client_params(
    request: Request, max_bytes: int
) -> tuple[Callable[[], ClientCredentials], dict[str, str]]:
    """``read_client_request`` in two steps: the body parameters now, and a function that
    decides the client credentials (raising ``InvalidClient`` for a malformed Basic
    header), so that the abuse limits count only failed authentications."""
    params = parse_params(request.headers.get("content-type"), await read_body(request, max_bytes))

    def credentials() -> ClientCredentials:
        return credentials_from(parse_basic(request.headers.get("authorization")), params)

    return credentials, params


async def read_client_request(
    request: Request, max_bytes: int
) -> tuple[ClientCredentials, dict[str, str]]:
    """The body parameters and client credentials of a request to an endpoint that
    authenticates clients as the token endpoint does (revocation, introspection)."""
    params = parse_params(request.headers.get("content-type"), await read_body(request, max_bytes))
    basic = parse_basic(request.headers.get("authorization"))
    return credentials_from(basic, params), params


__all__ = [
    "OAuthError",
    "PayloadTooLarge",
    "parse_basic",
    "parse_params",
    "read_body",
    "read_client_params",
    "read_client_request",
]
