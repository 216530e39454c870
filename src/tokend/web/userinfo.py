"""``GET|POST /auth/v2/users/retrieve``: the UserInfo endpoint (OIDC Core §5.3) over HTTP.

The access token comes as ``Authorization: Bearer <token>`` (RFC 6750 §2.1) or, on POST, as
the ``access_token`` parameter of a form body (§2.2); never in the query string (§2.3 is a
MAY, and a URL ends up in logs and browser history). Errors carry the ``WWW-Authenticate:
Bearer`` challenge of §3: with ``error="invalid_token"`` (401), ``error="insufficient_scope"``
and the needed ``scope`` (403), ``error="invalid_request"`` (400); and without any error
attribute when the request held no token at all (§3.1). The claims themselves are the
core's (``tokend.core.userinfo``).

A DPoP-bound token (RFC 9449 §7) comes as ``Authorization: DPoP <token>`` with a ``DPoP``
proof of its key whose ``ath`` is the token's hash; errors then carry the ``DPoP`` challenge,
``invalid_dpop_proof`` and ``use_dpop_nonce`` (with ``DPoP-Nonce``) included, all 401 (§7.1,
§9). A bound token sent as Bearer is ``invalid_token``; proofs are recorded against replay.
Server nonces are required here, and sent, when ``TOKEND_DPOP_NONCE=on`` (the per-client
setting cannot apply: a resource knows no client).
"""

from __future__ import annotations

import re
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.bearer import InsufficientScope, InvalidToken
from tokend.core.errors import InvalidDPoPProof, InvalidRequest, UseDPoPNonce
from tokend.core.userinfo import UserInfoService
from tokend.web.dpop import DPoPHeaders
from tokend.web.offload import Call
from tokend.web.parsing import parse_params, read_body
from tokend.web.responses import MissingToken, json_response, resource_error_response

USERINFO_PATH = "/auth/v2/users/retrieve"
FORM = "application/x-www-form-urlencoded"
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_DPOP_SCHEME = re.compile(r"(?i)dpop ")


class ProofReplays(Protocol):
    """Where a proof presented at the resource is recorded against replay (RFC 9449 §11.1)."""

    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool:
        """False when the proof was recorded before."""
        ...


def scheme_token(authorization: str | None, scheme: str) -> str | None:
    """The token of ``Authorization: <scheme> <token>`` (``scheme`` in lower case; the
    credentials are RFC 6750 §2.1's token68 for Bearer and, as Bearer's, for DPoP, RFC 9449
    §7.1); None when the header is absent or uses another scheme; ``InvalidToken`` when the
    credentials are malformed."""
    if authorization is None:
        return None
    name, _, token = authorization.partition(" ")
    if name.lower() != scheme:
        return None
    token = token.strip(" ")
    if not _B64TOKEN.fullmatch(token):
        raise InvalidToken("The Authorization header is malformed.")
    return token


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (``scheme_token``)."""
    return scheme_token(authorization, "bearer")


def dpop_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: DPoP <token>`` (``scheme_token``)."""
    return scheme_token(authorization, "dpop")


async def access_token_of(request: Request, max_body: int) -> tuple[str, str]:
    """The one access token the request presents (RFC 6750 §2: "Clients MUST NOT use more
    than one method to transmit the token in each request"), and its scheme: ``Bearer``
    (the header or the body) or ``DPoP`` (the header, RFC 9449 §7.1)."""
    if request.scope.get("query_string") and "access_token" in request.query_params:
        raise InvalidRequest("The access token must not be sent in the query string.")
    authorization = request.headers.get("authorization")
    scheme = "Bearer"
    token = bearer_token(authorization)
    if token is None:
        token = dpop_token(authorization)
        if token is not None:
            scheme = "DPoP"
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and content_type.partition(";")[0].strip().lower() == FORM:
        params = parse_params(content_type, await read_body(request, max_body))
        in_body = params.get("access_token")
        if in_body is not None:
            if token is not None:
                raise InvalidRequest("The access token was sent in more than one way.")
            token = in_body
    if token is None:
        raise MissingToken()
    return token, scheme


class UserInfoEndpoint:
    """The route handler. ``dpop``: the DPoP headers of ``USERINFO_PATH``, whose nonces
    ``TOKEND_DPOP_NONCE`` alone requires and sends (no client here)."""

    __slots__ = ("_call", "_dpop", "_max_body", "_replays", "_service")

    def __init__(
        self,
        service: UserInfoService,
        *,
        replays: ProofReplays,
        dpop: DPoPHeaders,
        call: Call,
        max_body: int,
    ) -> None:
        self._service = service
        self._replays = replays
        self._dpop = dpop
        self._call = call
        self._max_body = max_body

    async def __call__(self, request: Request) -> Response:
        dpop = self._dpop
        # The challenge answers in the scheme the client used, even before it is parsed.
        authorization = request.headers.get("authorization", "")
        scheme = "DPoP" if _DPOP_SCHEME.match(authorization) else "Bearer"
        try:
            token, scheme = await access_token_of(request, self._max_body)
            claims = await self._claims(request, token, scheme)
        except (InvalidToken, InsufficientScope, InvalidRequest) as exc:
            # Anything else (temporarily_unavailable, ...) goes to the app's error dispatcher.
            return dpop.with_nonce(request, resource_error_response(exc, scheme))
        except (InvalidDPoPProof, UseDPoPNonce) as exc:
            # RFC 9449 §7.1, §9: 401 at a protected resource, with the DPoP challenge.
            return resource_error_response(exc, status=401, headers=dpop.nonce_headers())
        return dpop.with_nonce(request, json_response(claims))

    async def _claims(self, request: Request, token: str, scheme: str) -> dict[str, object]:
        claims: dict[str, object]
        if scheme != "DPoP":
            claims = await self._call(self._service.userinfo, token)
            return claims
        proof = self._dpop.proof(request, access_token=token)
        if proof is None:
            raise InvalidDPoPProof("The DPoP scheme needs a DPoP proof.")
        claims = await self._call(self._service.userinfo, token, proof.jkt)
        # After the token checks: an invalid token costs no write. RFC 9449 §11.1.
        if not await self._call(
            self._replays.record_dpop_proof, proof.replay_hash, expires_at=proof.replay_until
        ):
            raise InvalidDPoPProof("The DPoP proof has been used before.")
        return claims
