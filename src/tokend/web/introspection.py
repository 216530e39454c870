"""``POST /auth/v2/introspect``: token introspection (RFC 7662) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``); the
rules, and who may introspect what, are ``tokend.core.introspection``'s. The answer is 200
JSON (``{"active": false}`` for any token that is not active); errors are RFC 6749 §5.2
JSON, rendered by the app's ``OAuthError`` handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.introspection import IntrospectionService
from tokend.core.models import ClientCredentials
from tokend.runtime import Runtime
from tokend.web.parsing import read_client_params
from tokend.web.responses import json_response
from tokend.web.throttling import ClientAuthGuard

INTROSPECTION_PATH = "/auth/v2/introspect"

Call = Callable[..., Awaitable[Any]]


def introspection_endpoint(
    rt: Runtime, call: Call, max_body: int, guard: ClientAuthGuard
) -> Callable[..., Awaitable[Response]]:
    """The route handler, with its service built once. ``guard``: the abuse limits on
    client authentication (``tokend.web.throttling``)."""
    service = IntrospectionService(
        store=rt.store, verifier=rt.keys, policy=rt.policy, clock=rt.clock
    )

    async def introspect(request: Request) -> Response:
        credentials, params = await read_client_params(request, max_body)

        async def work(creds: ClientCredentials, address: str) -> Any:
            return await call(service.introspect, creds, params)

        result = await guard.run(request, credentials, work)
        return json_response(result)

    return introspect
