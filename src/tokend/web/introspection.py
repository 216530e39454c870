"""``POST /auth/v2/introspect``: token introspection (RFC 7662) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``), under
the abuse limits (``tokend.web.throttling.GuardedEndpoint``); the rules, and who may
introspect what, are ``tokend.core.introspection``'s. The answer is 200 JSON
(``{"active": false}`` for any token that is not active); errors are RFC 6749 §5.2 JSON,
rendered by the app's error dispatcher (``tokend.web.responses.handle_error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from tokend.core.introspection import IntrospectionService
from tokend.core.models import ClientCredentials
from tokend.web.responses import json_response
from tokend.web.throttling import GuardedEndpoint

INTROSPECTION_PATH = "/auth/v2/introspect"


class IntrospectionEndpoint(GuardedEndpoint[IntrospectionService, dict[str, Any]]):
    """The route handler."""

    __slots__ = ()

    async def _serve(
        self, creds: ClientCredentials, params: Mapping[str, str], address: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(self._service.introspect, creds, params)
        return result

    def _respond(self, result: dict[str, Any]) -> Response:
        return json_response(result)
