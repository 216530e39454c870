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

from tokend.core.models import ClientCredentials
from tokend.core.revocation import RevocationService
from tokend.runtime import Runtime
from tokend.web.parsing import read_client_params
from tokend.web.responses import NO_STORE
from tokend.web.throttling import ClientAuthGuard

REVOCATION_PATH = "/auth/v2/revoke"

Call = Callable[..., Awaitable[Any]]


def revocation_endpoint(
    rt: Runtime, call: Call, max_body: int, guard: ClientAuthGuard
) -> Callable[..., Awaitable[Response]]:
    """The route handler, with its service built once. ``guard``: the abuse limits on
    client authentication (``tokend.web.throttling``)."""
    service = RevocationService(
        store=rt.store,
        verifier=rt.keys,
        policy=rt.policy,
        clock=rt.clock,
        event_window=rt.settings.event_aggregation_window,
    )

    async def revoke(request: Request) -> Response:
        credentials, params = await read_client_params(request, max_body)

        async def work(creds: ClientCredentials, address: str) -> None:
            await call(service.revoke, creds, params, address=address)

        await guard.run(request, credentials, work)
        return Response(b"", 200, NO_STORE)

    return revoke
