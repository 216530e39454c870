"""What every API answer of tokend is made of, errors included: the one place an error
becomes an HTTP answer.

- JSON bodies with the no-store headers that RFC 6749 §5.1 asks of token responses (and
  tokend gives every answer that carries a token, a secret or an error: token, revocation,
  introspection, userinfo, health): ``json_response``.
- ``error_response``: an ``OAuthError`` as RFC 6749 §5.2 JSON (``{"error",
  "error_description"}``), with ``WWW-Authenticate: Basic`` on ``invalid_client`` (401) and
  ``Retry-After`` on a throttled request (429). The shape of the token, revocation and
  introspection endpoints, and of any error no endpoint answers itself.
- ``resource_error_response``: the same body with the ``WWW-Authenticate: Bearer`` challenge
  of a protected resource (RFC 6750 §3; the ``DPoP`` challenge of RFC 9449 §7.1). The
  UserInfo endpoint's shape.
- ``handle_error``: the one error dispatcher. Starlette's exception handlers (``OAuthError``,
  ``HTTPException``, ``Exception``) and the direct token route (``tokend.web.app``) are this
  one function: an ``OAuthError`` is ``error_response``; a routing error (404, 405) is the
  same JSON shape; anything else is logged and answered as a bare ``server_error`` (500).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tokend.core.bearer import InsufficientScope, InvalidToken
from tokend.core.dpop import ALGS
from tokend.core.errors import (
    InvalidClient,
    InvalidDPoPProof,
    OAuthError,
    ServerError,
    TooManyAttempts,
    UseDPoPNonce,
)

log = logging.getLogger("tokend.web")

JSON = "application/json"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §5.2: 401 with WWW-Authenticate matching the scheme the client may use (Basic).
BASIC_CHALLENGE = 'Basic realm="tokend", charset="UTF-8"'
# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash).
_NOT_DESCRIPTION_CHAR = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


# The no-store answer's header fields as Starlette's Response would encode them (lower-case
# names, in this order, then content-length and content-type), encoded once.
_NO_STORE_FIELDS = tuple(
    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in NO_STORE.items()
)
_JSON_TYPE = (b"content-type", JSON.encode("latin-1"))


class _JsonAnswer(Response):
    """A JSON answer whose header fields are made from ``_NO_STORE_FIELDS`` rather than
    encoded from a dict per request: the same status, fields (in the same order) and body
    as ``Response(body, status, NO_STORE, JSON)``, and the same object to the rest of the
    app (``headers`` can still be added, ``tokend.web.dpop``)."""

    media_type = JSON

    def __init__(self, body: bytes, status: int) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            *_NO_STORE_FIELDS,
            (b"content-length", str(len(body)).encode("latin-1")),
            _JSON_TYPE,
        ]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON, never stored by a cache; ``headers`` are added to the no-store ones."""
    if headers or status < 200 or status in (204, 304):
        return Response(orjson.dumps(body), status, {**NO_STORE, **(headers or {})}, JSON)
    return _JsonAnswer(orjson.dumps(body), status)


# -- RFC 6749 §5.2: the token, revocation and introspection endpoints ---------------------------


def error_response(exc: OAuthError) -> Response:
    """``exc`` as RFC 6749 §5.2 JSON; its ``debug`` text (never sent) is logged."""
    headers = {}
    if isinstance(exc, InvalidClient):
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    elif isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)  # RFC 6585 §4, RFC 9110 §10.2.3
    if exc.debug:
        log.info("%s: %s", exc.error, exc.debug)
    return json_response(exc.to_dict(), exc.status_code, headers)


def http_error_response(exc: HTTPException) -> Response:
    """A request the router refused (no such path: 404; not this method: 405 with ``Allow``),
    in the JSON shape of every other error."""
    error = "invalid_request" if exc.status_code in (405, 400) else "not_found"
    desc = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, exc.detail)
    return json_response(
        {"error": error, "error_description": desc}, exc.status_code, dict(exc.headers or {})
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    """The one error dispatcher (see the module's docstring)."""
    if isinstance(exc, OAuthError):
        return error_response(exc)
    if isinstance(exc, HTTPException):
        return http_error_response(exc)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ServerError())


# -- RFC 6750 §3, RFC 9449 §7.1: a protected resource (UserInfo) -------------------------------


class MissingToken(InvalidToken):
    """No access token in the request (RFC 6750 §3.1: the challenge has no error code)."""

    default_description = "An access token is required."


def challenge(exc: OAuthError, scheme: str = "Bearer") -> str:
    """The ``WWW-Authenticate`` value for a failed request (RFC 6750 §3; RFC 9449 §7.1 for
    the DPoP scheme, which also lists the proof algorithms accepted)."""
    if isinstance(exc, MissingToken):
        return "Bearer"
    if isinstance(exc, InvalidDPoPProof | UseDPoPNonce):
        scheme = "DPoP"
    description = _NOT_DESCRIPTION_CHAR.sub("", exc.description)
    value = f'{scheme} error="{exc.error}", error_description="{description}"'
    if isinstance(exc, InsufficientScope):
        value += f', scope="{exc.scope}"'
    if scheme == "DPoP":
        value += f', algs="{" ".join(ALGS)}"'
    return value


def resource_error_response(
    exc: OAuthError,
    scheme: str = "Bearer",
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """``exc`` at a protected resource: the RFC 6749 §5.2 body with the challenge of
    ``scheme`` (``challenge``); ``status`` when the resource answers with another than the
    error's own (a DPoP proof error is 401 there, RFC 9449 §7.1), ``headers`` after it."""
    return json_response(
        exc.to_dict(),
        status or exc.status_code,
        {"WWW-Authenticate": challenge(exc, scheme), **(headers or {})},
    )
