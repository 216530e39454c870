"""``POST /auth/v2/revoke``: token revocation (RFC 7009) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``); the
rules are ``tokend.core.revocation``'s. Success is 200 with an empty body, whatever became
of the token (RFC 7009 §2.2); errors are RFC 6749 §5.2 JSON, rendered by the app's error
dispatcher (``tokend.web.responses.handle_error``; 401 with ``WWW-Authenticate: Basic`` for
``invalid_client``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.models import ClientCredentials
from tokend.core.revocation import RevocationService
from tokend.web.offload import Call
from tokend.web.parsing import read_client_params
from tokend.web.responses import NO_STORE
from tokend.web.throttling import ClientAuthGuard

REVOCATION_PATH = "/auth/v2/revoke"


class RevocationEndpoint:
    """The route handler. ``guard``: the abuse limits on client authentication
    (``tokend.web.throttling``)."""

    __slots__ = ("_call", "_guard", "_max_body", "_service")

    def __init__(
        self, service: RevocationService, *, guard: ClientAuthGuard, call: Call, max_body: int
    ) -> None:
        self._service = service
        self._guard = guard
        self._call = call
        self._max_body = max_body

    async def __call__(self, request: Request) -> Response:
        credentials, params = await read_client_params(request, self._max_body)

        async def work(creds: ClientCredentials, address: str) -> None:
            await self._call(self._service.revoke, creds, params, address=address)

        await self._guard.run(request, credentials, work)
        return Response(b"", 200, NO_STORE)
