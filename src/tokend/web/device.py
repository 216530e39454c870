"""``POST /auth/v2/device/authorize``: the RFC 8628 device authorization endpoint.

Parsing (form or JSON bodies) and client credentials are the token endpoint's
(``tokend.web.parsing``), under the same abuse limits on failed client authentication
(``tokend.web.throttling.GuardedEndpoint``); the rules are ``tokend.core.device``'s.
Success is the §3.2 JSON with ``Cache-Control: no-store`` (it carries the device code);
errors are RFC 6749 §5.2 JSON, rendered by the app's error dispatcher.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from tokend.core.device import DeviceAuthorization
from tokend.core.models import ClientCredentials
from tokend.web.responses import json_response
from tokend.web.throttling import GuardedEndpoint

DEVICE_AUTHORIZATION_PATH = "/auth/v2/device/authorize"


class DeviceAuthorizationEndpoint(GuardedEndpoint[DeviceAuthorization, dict[str, str | int]]):
    """The route handler."""

    __slots__ = ()

    async def _serve(
        self, creds: ClientCredentials, params: Mapping[str, str], address: str
    ) -> dict[str, str | int]:
        return await self._call(self._service.authorize, creds, params, address=address)

    def _respond(self, result: dict[str, str | int]) -> Response:
        return json_response(result)
