"""``POST /auth/v2/introspect``: token introspection (RFC 7662) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``); the
rules, and who may introspect what, are ``tokend.core.introspection``'s. The answer is 200
JSON (``{"active": false}`` for any token that is not active); errors are RFC 6749 §5.2
JSON, rendered by the app's error dispatcher (``tokend.web.responses.handle_error``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.introspection import IntrospectionService
from tokend.core.models import ClientCredentials
from tokend.web.offload import Call
from tokend.web.parsing import read_client_params
from tokend.web.responses import json_response
from tokend.web.throttling import ClientAuthGuard

INTROSPECTION_PATH = "/auth/v2/introspect"


class IntrospectionEndpoint:
    """The route handler. ``guard``: the abuse limits on client authentication
    (``tokend.web.throttling``)."""

    __slots__ = ("_call", "_guard", "_max_body", "_service")

    def __init__(
        self, service: IntrospectionService, *, guard: ClientAuthGuard, call: Call, max_body: int
    ) -> None:
        self._service = service
        self._guard = guard
        self._call = call
        self._max_body = max_body

    async def __call__(self, request: Request) -> Response:
        credentials, params = await read_client_params(request, self._max_body)

        async def work(creds: ClientCredentials, address: str) -> Any:
            return await self._call(self._service.introspect, creds, params)

        result = await self._guard.run(request, credentials, work)
        return json_response(result)
