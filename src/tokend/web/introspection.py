"""``POST /auth/v2/introspect``: token introspection (RFC 7662) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``); the
rules, and who may introspect what, are ``tokend.core.introspection``'s. The answer is 200
JSON (``{"active": false}`` for any token that is not active); errors are RFC 6749 §5.2
JSON, rendered by the app's ``OAuthError`` handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tokend.core.introspection import IntrospectionService
from tokend.runtime import Runtime
from tokend.web.parsing import read_client_request

INTROSPECTION_PATH = "/auth/v2/introspect"
_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Call = Callable[..., Awaitable[Any]]


def introspection_endpoint(
    rt: Runtime, call: Call, max_body: int
) -> Callable[..., Awaitable[Response]]:
    """The route handler, with its service built once."""
    service = IntrospectionService(
        store=rt.store, verifier=rt.keys, policy=rt.policy, clock=rt.clock
    )

    async def introspect(request: Request) -> Response:
        credentials, params = await read_client_request(request, max_body)
        result = await call(service.introspect, credentials, params)
        return Response(orjson.dumps(result), 200, _HEADERS, "application/json")

    return introspect
