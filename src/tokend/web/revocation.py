"""``POST /auth/v2/revoke``: token revocation (RFC 7009) over HTTP.

Parsing and client authentication are the token endpoint's (``tokend.web.parsing``), under
the abuse limits (``tokend.web.throttling.GuardedEndpoint``); the rules are
``tokend.core.revocation``'s. Success is 200 with an empty body, whatever became of the
token (RFC 7009 §2.2); errors are RFC 6749 §5.2 JSON, rendered by the app's error
dispatcher (``tokend.web.responses.handle_error``; 401 with ``WWW-Authenticate: Basic`` for
``invalid_client``).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from tokend.core.models import ClientCredentials
from tokend.core.revocation import RevocationService
from tokend.web.responses import NO_STORE
from tokend.web.throttling import GuardedEndpoint

REVOCATION_PATH = "/auth/v2/revoke"


class RevocationEndpoint(GuardedEndpoint[RevocationService, None]):
    """The route handler."""

    __slots__ = ()

    async def _serve(
        self, creds: ClientCredentials, params: Mapping[str, str], address: str
    ) -> None:
        await self._call(self._service.revoke, creds, params, address=address)

    def _respond(self, result: None) -> Response:
        return Response(b"", 200, NO_STORE)
