"""``POST /auth/v2/revoke``: token revocation (RFC 7009) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``); the
rules are ``tokend.core.revocation``'s. Success is 200 with an empty body, whatever became
of the token (RFC 7009 §2.2); errors are RFC 6749 §5.2 JSON, rendered by the app's
``OAuthError`` handler (401 with ``WWW-Authenticate: Basic`` for ``invalid_client``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.revocation import RevocationService
from tokend.runtime import Runtime
from tokend.web.parsing import read_client_request

REVOCATION_PATH = "/auth/v2/revoke"
_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Call = Callable[..., Awaitable[Any]]


def revocation_endpoint(
    rt: Runtime, call: Call, max_body: int
) -> Callable[..., Awaitable[Response]]:
    """The route handler, with its service built once."""
    service = RevocationService(store=rt.store, verifier=rt.keys, policy=rt.policy, clock=rt.clock)

    async def revoke(request: Request) -> Response:
        credentials, params = await read_client_request(request, max_body)
        await call(service.revoke, credentials, params)
        return Response(b"", 200, _HEADERS)

    return revoke
