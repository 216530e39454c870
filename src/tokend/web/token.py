"""``POST /auth/v2/token`` (and ``/auth/v2/token/``): the token endpoint (RFC 6749 §3.2).

Parsing and client credentials are ``tokend.web.parsing``'s; the grants and client
authentication are the core's (``tokend.core.service``). Success is RFC 6749 §5.1 JSON;
errors are §5.2 JSON (``tokend.web.responses.error_response``). Every answer to a request
with a DPoP proof carries the current nonce (RFC 9449 §8.2); whether the proof needed one is
the domain's to say, per client (``UseDPoPNonce``). The app serves this endpoint on its
direct route (``tokend.web.app``), which answers exactly as the router would.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.client_auth import credentials_from
from tokend.core.errors import OAuthError
from tokend.core.models import ClientCredentials, TokenRequest, TokenResponse
from tokend.core.service import TokenService
from tokend.metrics import TokenRequests
from tokend.web.dpop import DPoPHeaders
from tokend.web.offload import Call
from tokend.web.parsing import RequestHead, parse_basic, parse_params, read_body
from tokend.web.responses import error_response, json_response
from tokend.web.throttling import ClientAuthGuard

TOKEN_PATHS = ("/auth/v2/token", "/auth/v2/token/")


class TokenEndpoint:
    """The route handler. ``guard``: the abuse limits on client authentication
    (``tokend.web.throttling``); ``dpop``: the DPoP headers of ``TOKEN_PATHS``."""

    __slots__ = ("_call", "_count", "_dpop", "_guard", "_max_body", "_service")

    def __init__(
        self,
        service: TokenService,
        *,
        dpop: DPoPHeaders,
        guard: ClientAuthGuard,
        call: Call,
        max_body: int,
        counter: TokenRequests | None = None,
    ) -> None:
        self._service = service
        # tokend_token_requests_total, by grant type and outcome
        self._count = (counter or TokenRequests(service.grant_types)).count
        self._dpop = dpop
        self._guard = guard
        self._call = call
        self._max_body = max_body

    async def __call__(self, request: Request) -> Response:
        dpop = self._dpop
        grant_type = None
        head = RequestHead(request)
        try:
            body = await read_body(request, self._max_body, head)
            params = parse_params(head.content_type, body)
            grant_type = params.get("grant_type")

            def credentials() -> ClientCredentials:
                return credentials_from(parse_basic(head.authorization), params)

            async def work(creds: ClientCredentials, address: str) -> TokenResponse:
                # RFC 9449 §5; None without a DPoP header
                proof = dpop.proof(request) if head.dpop else None
                return await self._call(
                    self._service.token, TokenRequest(params, creds, proof, address)
                )

            result = await self._guard.run(request, credentials, work)
        except OAuthError as exc:
            self._count(grant_type, exc.error)
            return dpop.with_nonce(request, error_response(exc), used_dpop=head.dpop)
        except Exception:  # answered as server_error by the app's dispatcher
            self._count(grant_type, "server_error")
            raise
        self._count(grant_type, "success")
        return dpop.with_nonce(request, json_response(result.to_dict()), used_dpop=head.dpop)
