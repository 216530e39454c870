"""``revoke`` (RFC 7009) and ``introspect`` (RFC 7662) against a STUB server.

tokend serves both endpoints, and test_oauth_client.py uses them for real
(``test_revoke_and_introspect_follow_tokends_discovery`` and the tests after it). This tiny
ASGI app of our own remains for what the real server never answers, so that the client's
handling of it is still tested: ``unsupported_token_type`` (tokend knows every token type),
a 503 with a text body, a response without ``active``, another server's introspection shape;
and for the exact wire format each call sends, recorded byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.client.support import SyncASGITransport
from tokend.client import (
    AsyncOAuthClient,
    InvalidClient,
    InvalidResponse,
    OAuthClient,
    TemporarilyUnavailable,
    UnsupportedTokenType,
)

ISSUER = "https://stub.test"
CLIENT_ID, CLIENT_SECRET = "stub-client", "stub-secret"


@dataclass
class Stub:
    received: list[dict[str, Any]] = field(default_factory=list)
    answer: Response = field(default_factory=lambda: Response(status_code=200))

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": ISSUER,
                    "token_endpoint": f"{ISSUER}/token",
                    "revocation_endpoint": f"{ISSUER}/revoke",
                    "introspection_endpoint": f"{ISSUER}/introspect",
                }
            )

        async def endpoint(request: Request) -> Response:
            form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
            self.received.append(
                {
                    "path": request.url.path,
                    "content_type": request.headers.get("content-type"),
                    "authorization": request.headers.get("authorization"),
                    "form": dict(form),
                }
            )
            return self.answer

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/revoke", endpoint, methods=["POST"]),
                Route("/introspect", endpoint, methods=["POST"]),
            ]
        )


@pytest.fixture
def stub() -> Stub:
    return Stub()


@pytest.fixture
def oauth(stub: Stub, portal) -> Iterator[OAuthClient]:  # type: ignore[no-untyped-def]
    with httpx.Client(transport=SyncASGITransport(stub.app(), portal)) as http:
        yield OAuthClient.from_issuer(
            ISSUER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, http_client=http
        )


BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


def test_revoke_posts_the_token_with_client_auth(oauth: OAuthClient, stub: Stub) -> None:
    assert oauth.revoke("tkd_rt_abc", token_type_hint="refresh_token") is None
    assert stub.received == [
        {
            "path": "/revoke",
            "content_type": "application/x-www-form-urlencoded",
            "authorization": BASIC,
            "form": {"token": "tkd_rt_abc", "token_type_hint": "refresh_token"},
        }
    ]
    oauth.revoke("tkd_rt_def")
    assert stub.received[-1]["form"] == {"token": "tkd_rt_def"}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            JSONResponse({"error": "unsupported_token_type"}, status_code=400),
            UnsupportedTokenType,
        ),
        (
            JSONResponse(
                {"error": "invalid_client", "error_description": "Who are you?"}, status_code=401
            ),
            InvalidClient,
        ),
        (
            Response("busy", status_code=503, headers={"Retry-After": "5"}),
            InvalidResponse,
        ),
        (
            JSONResponse({"error": "temporarily_unavailable"}, status_code=503),
            TemporarilyUnavailable,
        ),
    ],
    ids=["unsupported_token_type", "invalid_client", "503 text", "503 json"],
)
def test_revoke_errors(
    oauth: OAuthClient, stub: Stub, answer: Response, error: type[Exception]
) -> None:
    stub.answer = answer
    with pytest.raises(error) as info:
        oauth.revoke("tok")
    assert getattr(info.value, "status_code", None) == answer.status_code
    if error is InvalidClient:
        assert str(info.value) == "Who are you?"


def test_introspect(oauth: OAuthClient, stub: Stub) -> None:
    stub.answer = JSONResponse(
        {
            "active": True,
            "scope": "openid offline",
            "client_id": CLIENT_ID,
            "sub": "user-1",
            "exp": 1_800_000_000,
            "token_type": "Bearer",
            "sid": "family-1",
        }
    )
    result = oauth.introspect("eyJ.access", token_type_hint="access_token")
    assert result.active and result.sub == "user-1" and result.exp == 1_800_000_000
    assert result.claims["sid"] == "family-1"
    assert stub.received[-1]["path"] == "/introspect"
    assert stub.received[-1]["authorization"] == BASIC
    assert stub.received[-1]["form"] == {"token": "eyJ.access", "token_type_hint": "access_token"}

    stub.answer = JSONResponse({"active": False})
    assert oauth.introspect("eyJ.gone").active is False

    stub.answer = JSONResponse({"scope": "openid"})  # no "active": not RFC 7662
    with pytest.raises(InvalidResponse):
        oauth.introspect("eyJ.x")


def test_async_revoke_and_introspect(stub: Stub) -> None:
    async def run() -> tuple[Any, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(stub.app())) as http:
            oauth = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, http_client=http
            )
            stub.answer = JSONResponse({"active": True, "sub": "user-2"})
            introspection = await oauth.introspect("eyJ.a")
            stub.answer = Response(status_code=200)
            return introspection, await oauth.revoke("tkd_rt_x")

    introspection, revoked = asyncio.run(run())
    assert introspection.sub == "user-2" and revoked is None
    assert [r["path"] for r in stub.received] == ["/introspect", "/revoke"]
