"""The ASGI application (Starlette). Routes parse HTTP, call the core, serialise; errors are
mapped to RFC 6749 §5.2 JSON in exactly one place (``_oauth_error``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tokend.config import Settings
from tokend.core.client_auth import credentials_from
from tokend.core.errors import (
    InvalidClient,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
    TooManyAttempts,
)
from tokend.core.models import ClientCredentials, TokenRequest, TokenResponse
from tokend.runtime import Runtime, build_runtime
from tokend.web.discovery import discovery_document
from tokend.web.dpop import DPoPHeaders
from tokend.web.introspection import INTROSPECTION_PATH, introspection_endpoint
from tokend.web.openapi import openapi_document
from tokend.web.pages import page_routes
from tokend.web.parsing import parse_basic, parse_params, read_body
from tokend.web.responses import JSON, json_response
from tokend.web.revocation import REVOCATION_PATH, revocation_endpoint
from tokend.web.throttling import ClientAuthGuard
from tokend.web.userinfo import USERINFO_PATH, userinfo_endpoint

log = logging.getLogger("tokend.web")
T = TypeVar("T")

TOKEN_PATHS = ("/auth/v2/token", "/auth/v2/token/")
# On an https issuer, every response: browsers then never talk to the issuer's host (or its
# subdomains) over plain http again, for two years (RFC 6797; the cookies are __Host-).
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


def _oauth_error(exc: OAuthError) -> Response:
    headers = {}
    if isinstance(exc, InvalidClient):
        # RFC 6749 §5.2: 401 with WWW-Authenticate matching the scheme (Basic).
        headers["WWW-Authenticate"] = 'Basic realm="tokend", charset="UTF-8"'
    elif isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)  # RFC 6585 §4, RFC 9110 §10.2.3
    if exc.debug:
        log.info("%s: %s", exc.error, exc.debug)
    return json_response(exc.to_dict(), exc.status_code, headers)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Starlette:
    """App factory (uvicorn ``--factory``). Settings come from the environment by default."""
    settings = settings or Settings()
    rt = runtime or build_runtime(settings)
    service = rt.service
    max_body = settings.max_body_bytes
    inline = rt.is_sqlite  # SQLite work is a few µs of local I/O: run it on the loop

    # PostgreSQL work runs on threads, at most this many at once per process: more threads
    # than the pool has connections only queue for them, and more database sessions than
    # cores only add contention (issue 6: on 2 cores, c=8 outran c=32 by a third).
    limiter = anyio.CapacityLimiter(settings.db_concurrency)

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if inline:
            return fn(*args, **kwargs)
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=limiter
        )

    # Every answer to a request with a DPoP proof carries the current nonce (RFC 9449 §8.2);
    # whether the proof needed one is the domain's to say, per client (UseDPoPNonce).
    dpop = DPoPHeaders(rt, TOKEN_PATHS)

    # Failed client authentications are counted, and past the limits refused (429) before
    # the secret is compared (tokend.core.throttle), here and at revocation and introspection.
    guard = ClientAuthGuard(rt.throttle, settings.trusted_proxy_networks, call)

    async def token(request: Request) -> Response:
        try:
            body = await read_body(request, max_body)
            params = parse_params(request.headers.get("content-type"), body)

            def credentials() -> ClientCredentials:
                return credentials_from(parse_basic(request.headers.get("authorization")), params)

            async def work(creds: ClientCredentials, address: str) -> TokenResponse:
                proof = dpop.proof(request)  # RFC 9449 §5; None without a DPoP header
                return await call(service.token, TokenRequest(params, creds, proof))

            result = await guard.run(request, credentials, work)
        except OAuthError as exc:
            return dpop.with_nonce(request, _oauth_error(exc))
        return dpop.with_nonce(request, json_response(result.to_dict()))

    async def jwks(request: Request) -> Response:
        return Response(
            rt.keys.jwks_json,
            200,
            {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
            "application/jwk-set+json",
        )

    userinfo = userinfo_endpoint(rt, call, max_body)

    discovery = discovery_document(rt.policy.issuer, grant_types=service.grant_types)
    discovery_body = orjson.dumps(discovery)
    openapi_body = orjson.dumps(openapi_document(rt.policy.issuer))

    async def well_known(request: Request) -> Response:
        return Response(
            discovery_body,
            200,
            {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
            JSON,
        )

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, 200, media_type=JSON)

    async def healthz(request: Request) -> Response:
        try:
            await call(rt.store.ping)
        except Exception:
            log.exception("health check failed")
            return json_response({"status": "unavailable", "database": "unreachable"}, 503)
        return json_response({"status": "ok", "database": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = "invalid_request" if exc.status_code in (405, 400) else "not_found"
        desc = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, exc.detail)
        return json_response(
            {"error": error, "error_description": desc}, exc.status_code, dict(exc.headers or {})
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, TemporarilyUnavailable):
            return _oauth_error(exc)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _oauth_error(ServerError())

    async def oauth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OAuthError)
        return _oauth_error(exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt.store.start_checkpointer()  # SQLite: WAL checkpoints off the event loop
        try:
            await run_in_threadpool(rt.store.enable_client_cache)
        except Exception:  # the database is not reachable yet: serve without the cache
            log.exception("could not read the clients; client cache disabled")
        task = asyncio.create_task(_refresh_shared_state(rt, settings.key_refresh_interval))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            rt.close()

    routes = [
        *(Route(path, token, methods=["POST"]) for path in TOKEN_PATHS),
        Route("/auth/jwks", jwks, methods=["GET"]),
        Route(USERINFO_PATH, userinfo, methods=["GET", "POST"]),
        Route(REVOCATION_PATH, revocation_endpoint(rt, call, max_body, guard), methods=["POST"]),
        Route(
            INTROSPECTION_PATH,
            introspection_endpoint(rt, call, max_body, guard),
            methods=["POST"],
        ),
        Route("/.well-known/openid-configuration", well_known, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", well_known, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *page_routes(rt, call),
    ]
    app = _TokendApp(
        fast_routes={("POST", path): (token, unexpected) for path in TOKEN_PATHS},
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            OAuthError: oauth_error,
            Exception: unexpected,
        },
        lifespan=lifespan,
        hsts=rt.policy.issuer.startswith("https://"),
    )
    # Starlette would answer `/account/` with a 307 to an absolute URL built from the
    # request's Host header (and a 307 re-sends a POST's body and credentials): redirects
    # come from the issuer, or not at all. A path tokend does not serve is a 404.
    app.router.redirect_slashes = False
    app.state.runtime = rt
    return app


Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class _TokendApp(Starlette):
    """Starlette, with a direct path to the token endpoint (issue 6): the hottest route
    skips the router and the two exception middlewares, ~4% of a refresh's CPU. It keeps
    their behaviour: every exception the handler lets out is answered by ``on_error``
    (RFC 6749 JSON, a 500 ``server_error`` for anything unexpected), and other methods on
    the same path still reach the router (405)."""

    def __init__(self, *, fast_routes: dict[tuple[str, str], tuple[Endpoint, ErrorHandler]],
                 hsts: bool = False, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self._fast = fast_routes
        self._hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._hsts:
                send = _with_hsts(send)
            route = self._fast.get((scope["method"], scope["path"]))
            if route is not None:
                scope["app"] = self
                endpoint, on_error = route
                request = Request(scope, receive, send)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    response = await on_error(request, exc)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _with_hsts(send: Send) -> Send:
    async def send_with_hsts(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), HSTS]}
        await send(message)

    return send_with_hsts


async def _refresh_shared_state(rt: Runtime, interval: float) -> None:
    """Pick up, within ``interval`` seconds, what other processes change: `tokend keys
    rotate`, and clients created, changed or deleted with `tokend clients ...`."""
    while True:
        await asyncio.sleep(interval)
        try:
            if await run_in_threadpool(rt.keys.reload_if_changed):
                log.info("signing keys reloaded; current kid %s", rt.keys.current_kid())
        except Exception:
            log.exception("could not reload signing keys")
        try:
            if await run_in_threadpool(rt.store.refresh_client_cache):
                log.info("clients changed: client cache cleared")
        except Exception:
            rt.store.invalidate_client_cache()  # unsure what changed: read clients afresh
            log.exception("could not check the clients for changes")
