"""Turning HTTP requests into single-valued parameters: the one input discipline of every
endpoint and page (issue 10 §4). The rules on each parameter are ``tokend.core.params``'s
(RFC 6749 §3.1/§3.2: no repetition, empty means omitted; Appendix A: UNICODECHARNOCRLF text
only); this module decodes, and bounds the work before anything is decoded:

- Bodies: ``application/x-www-form-urlencoded`` (the standard) or ``application/json`` (Didit's
  demo client), at most ``max_bytes`` (``TOKEND_MAX_BODY_BYTES``, 16 KiB by default; the
  pages' forms ``MAX_PAGE_FORM_BYTES``), UTF-8 only, at most ``MAX_FIELDS`` parameters. A
  JSON body is one flat object of strings; the size cap bounds its depth and member count
  before decoding, and anything else is refused after.
- The authorize endpoint's query (and the same query carried by the pages' forms): at most
  ``MAX_QUERY_BYTES``, UTF-8 (raw or percent-encoded), at most ``MAX_FIELDS`` parameters.
- Basic credentials (at most ``MAX_AUTHORIZATION_LENGTH`` characters) are form-urlencoded
  before base64 (§2.3.1) and decoded accordingly.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import ClientDisconnect, Request

from tokend.core import params as rules
from tokend.core.client_auth import credentials_from
from tokend.core.errors import InvalidClient, InvalidRequest, OAuthError
from tokend.core.models import ClientCredentials

MAX_FIELDS = 64
# An authorization request is a dozen short parameters; 8 KiB leaves room for a large state
# and is what most proxies allow for a whole request line.
MAX_QUERY_BYTES = 8 * 1024
# The pages' forms carry that query once more (``next``, ``request``), re-encoded: each of
# its bytes takes at most 5 in the form body ("%C3" of a raw byte becomes "%25C3").
MAX_PAGE_FORM_BYTES = 5 * MAX_QUERY_BYTES + 8 * 1024
MAX_PAGE_FORM_FIELDS = 16
# "Basic " and base64 of a client id and secret: tokend's are under 100 characters.
MAX_AUTHORIZATION_LENGTH = 2048


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    default_description = "The request body is too large."


class RequestHead:
    """The header fields a client-authenticating endpoint reads, found in one pass over the
    request's (lower-case, ASGI) header list: the first ``Content-Length``,
    ``Content-Type`` and ``Authorization``, as ``request.headers.get`` would answer, and
    whether any ``DPoP`` header came (issue 14: one pass instead of a scan per field)."""

    __slots__ = ("authorization", "content_length", "content_type", "dpop")

    def __init__(self, request: Request) -> None:
        length = content_type = authorization = None
        dpop = False
        for name, value in request.scope["headers"]:
            if name == b"content-length":
                if length is None:
                    length = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"dpop":
                dpop = True
        self.content_length: str | None = length
        self.content_type: str | None = content_type
        self.authorization: str | None = authorization
        self.dpop = dpop


async def read_body(request: Request, max_bytes: int, head: RequestHead | None = None) -> bytes:
    """The request's body, at most ``max_bytes`` (413 past it); ``head``: its header fields
    if already read (``RequestHead``)."""
    length = request.headers.get("content-length") if head is None else head.content_length
    if length is not None:
        # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
        if not (length.isascii() and length.isdigit()):
            raise InvalidRequest("The Content-Length header is invalid.")
        if int(length) > max_bytes:
            raise PayloadTooLarge()
    receive = request.receive
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        # The whole body in one message, as a client's small form always comes: no
        # generator around it (issue 14).
        whole: bytes = message.get("body", b"")
        if len(whole) > max_bytes:
            raise PayloadTooLarge()
    else:
        # Request.stream()'s loop, from the message already received.
        body = bytearray()
        while True:
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if message["type"] == "http.request":
                body += message.get("body", b"")
                if len(body) > max_bytes:
                    raise PayloadTooLarge()
                if not message.get("more_body", False):
                    break
            message = await receive()
        whole = bytes(body)
    # Read from the server once: Request.body() (and stream()) now answer with it.
    request._body = whole
    return whole


def _single_valued(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The parameters, or ``invalid_request`` naming the first that breaks a rule."""
    checked = rules.check(pairs)
    problem = checked.first_problem()
    if problem is not None:
        raise InvalidRequest(problem)
    return checked.values


def _pairs(text: str | bytes, max_fields: int, what: str) -> list[tuple[str, str]]:
    """Form-urlencoded pairs, UTF-8 raw or percent-encoded (strictly), ``max_fields`` at most."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if "%" not in text and "+" not in text:
            return _plain_pairs(text, max_fields)
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_fields,
        )
    except UnicodeDecodeError:
        raise InvalidRequest(f"The {what} is not valid form-urlencoded UTF-8.") from None
    except ValueError:  # parse_qsl's only other error: more than max_num_fields
        raise InvalidRequest("The request has too many parameters.") from None


def _plain_pairs(text: str, max_fields: int) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields)`` for a text
    without ``%`` and ``+``, which decodes to itself (the usual token request: base62 tokens
    and secrets, names in ASCII): the same pairs, without the per-field calls."""
    if not text:
        return []
    if text.count("&") + 1 > max_fields:
        raise ValueError("Max number of fields exceeded")
    pairs: list[tuple[str, str]] = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((name, value))
    return pairs


def parse_form(body: bytes, *, max_fields: int = MAX_FIELDS) -> dict[str, str]:
    return _single_valued(_pairs(body, max_fields, "request body"))


def parse_page_form(body: bytes) -> dict[str, str]:
    """A form POSTed by one of the pages (a few fields, one of them perhaps a whole
    authorization request); the caller reads the body with ``MAX_PAGE_FORM_BYTES``."""
    return parse_form(body, max_fields=MAX_PAGE_FORM_FIELDS)


def query_pairs(query: str | bytes) -> list[tuple[str, str]]:
    """The authorize endpoint's query (``scope["query_string"]``, or the same query carried
    by a page's form) as pairs, every one of them: the rules on each are the caller's to
    apply (``tokend.core.params.check``), since which parameter breaks one decides between
    an error page and a redirect (RFC 6749 §4.1.2.1)."""
    size = len(query.encode("utf-8", "surrogatepass") if isinstance(query, str) else query)
    if size > MAX_QUERY_BYTES:
        raise InvalidRequest(f"The request is longer than {MAX_QUERY_BYTES} bytes.")
    return _pairs(query, MAX_FIELDS, "request")


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
            raise InvalidRequest(f"The {rules.safe_name(key)} parameter must be a string.")
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
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidClient("The Basic authorization header is malformed.")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Only HTTP Basic client authentication is accepted here.")
    try:
        decoded = b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, sep, secret = decoded.partition(":")
        if "%" in decoded or "+" in decoded:  # else each decodes to itself (tokend's own)
            client_id = unquote_plus(client_id, errors="strict")
            secret = unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):  # incl. UnicodeDecodeError
        raise InvalidClient("The Basic authorization header is malformed.") from None
    if not sep or not client_id or not rules.is_text(client_id) or not rules.is_text(secret):
        raise InvalidClient("The Basic authorization header is malformed.")
    return client_id, secret


async def read_client_params(
    request: Request, max_bytes: int
) -> tuple[Callable[[], ClientCredentials], dict[str, str]]:
    """The body parameters of a request to an endpoint that authenticates clients as the
    token endpoint does (revocation, introspection), and a function that decides the client
    credentials (raising ``InvalidClient`` for a malformed Basic header) when called, so
    that the abuse limits count only failed authentications."""
    params = parse_params(request.headers.get("content-type"), await read_body(request, max_bytes))

    def credentials() -> ClientCredentials:
        return credentials_from(parse_basic(request.headers.get("authorization")), params)

    return credentials, params


__all__ = [
    "OAuthError",
    "PayloadTooLarge",
    "RequestHead",
    "parse_basic",
    "parse_page_form",
    "parse_params",
    "query_pairs",
    "read_body",
    "read_client_params",
]
