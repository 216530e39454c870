"""The ASGI application (Starlette): the routes, each a small endpoint that receives its
service from the runtime (``tokend.runtime``), and the one error dispatcher
(``tokend.web.responses.handle_error``) behind every exception handler and the direct token
route."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokend import metrics
from tokend.config import Settings
from tokend.core.device import DeviceAuthorization
from tokend.core.errors import OAuthError
from tokend.logs import bind_request
from tokend.runtime import Runtime, build_runtime
from tokend.web.device import DEVICE_AUTHORIZATION_PATH, DeviceAuthorizationEndpoint
from tokend.web.discovery import discovery_document
from tokend.web.dpop import DPoPHeaders
from tokend.web.introspection import INTROSPECTION_PATH, IntrospectionEndpoint
from tokend.web.metrics import METRICS_PATH, MetricsEndpoint, RequestObserver
from tokend.web.offload import Call, offloader
from tokend.web.openapi import openapi_document
from tokend.web.pages import page_routes
from tokend.web.responses import JSON, handle_error, json_response
from tokend.web.revocation import REVOCATION_PATH, RevocationEndpoint
from tokend.web.sweep import GcSweep
from tokend.web.throttling import ClientAuthGuard
from tokend.web.token import TOKEN_PATHS, TokenEndpoint
from tokend.web.userinfo import USERINFO_PATH, UserInfoEndpoint
from tokend.web.webhook import EventsWebhook

log = logging.getLogger("tokend.web")

# On an https issuer, every response: browsers then never talk to the issuer's host (or its
# subdomains) over plain http again, for two years (RFC 6797; the cookies are __Host-).
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
# Public documents: cacheable for five minutes, readable from any origin.
PUBLIC = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}


class Endpoint(Protocol):
    """A route's handler: one small object holding its service (built in ``runtime.py``)."""

    async def __call__(self, request: Request) -> Response: ...


class PublicKeys(Protocol):
    @property
    def jwks_json(self) -> bytes: ...


class Jwks:
    """``GET /auth/jwks``: the public signing keys, as the key ring has them now."""

    __slots__ = ("_keys",)

    def __init__(self, keys: PublicKeys) -> None:
        self._keys = keys

    async def __call__(self, request: Request) -> Response:
        return Response(self._keys.jwks_json, 200, PUBLIC, "application/jwk-set+json")


class Document:
    """A JSON document fixed at start-up (discovery, OpenAPI)."""

    __slots__ = ("_body", "_headers")

    def __init__(self, body: object, headers: dict[str, str] | None = None) -> None:
        self._body = orjson.dumps(body)
        self._headers = headers

    async def __call__(self, request: Request) -> Response:
        return Response(self._body, 200, self._headers, JSON)


class Health:
    """``GET /healthz``, readiness (a Kubernetes readiness probe): 200 when the database
    answers and the key ring has a current signing key, else 503 with what is wrong."""

    __slots__ = ("_call", "_keys_ready", "_ping")

    def __init__(
        self, ping: Callable[[], object], keys_ready: Callable[[], bool], call: Call
    ) -> None:
        self._ping = ping
        self._keys_ready = keys_ready
        self._call = call

    async def __call__(self, request: Request) -> Response:
        database = "ok"
        try:
            await self._call(self._ping)
        except Exception:
            log.exception("health check failed")
            database = "unreachable"
        keys = "ok" if self._keys_ready() else "missing"
        ok = database == "ok" and keys == "ok"
        body = {"status": "ok" if ok else "unavailable", "database": database, "keys": keys}
        return json_response(body, 200 if ok else 503)


async def live(request: Request) -> Response:
    """``GET /healthz/live``, liveness (a Kubernetes liveness probe): the process answers.
    Nothing else is checked, the database least of all: a restart would not bring it back."""
    return json_response({"status": "ok"})


def _route(path: str, endpoint: Endpoint, method: str, *more: str) -> Route:
    # A bound method: Starlette treats any other callable object as a raw ASGI app.
    return Route(path, endpoint.__call__, methods=[method, *more])


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Starlette:
    """App factory (uvicorn ``--factory``). Settings come from the environment by default."""
    settings = settings or Settings()
    rt = runtime or build_runtime(settings)
    max_body = settings.max_body_bytes
    call = offloader(inline=rt.is_sqlite, concurrency=settings.db_concurrency)
    # Failed client authentications are counted, and past the limits refused (429) before
    # the secret is compared (tokend.core.throttle), here and at revocation and introspection.
    guard = ClientAuthGuard(rt.throttle, settings.trusted_proxy_networks, call)
    token = TokenEndpoint(
        rt.service, dpop=DPoPHeaders(rt, TOKEN_PATHS), guard=guard, call=call, max_body=max_body
    )
    revoke = RevocationEndpoint(rt.revocation, guard=guard, call=call, max_body=max_body)
    introspect = IntrospectionEndpoint(rt.introspection, guard=guard, call=call, max_body=max_body)
    device_authorize = DeviceAuthorizationEndpoint(
        DeviceAuthorization(rt.device, rt.store.get_client, issuer=rt.policy.issuer),
        guard=guard,
        call=call,
        max_body=max_body,
    )
    # No client at the UserInfo endpoint: TOKEND_DPOP_NONCE alone decides about nonces.
    nonces = rt.policy.dpop_nonce
    userinfo = UserInfoEndpoint(
        rt.userinfo,
        replays=rt.store,
        dpop=DPoPHeaders(rt, (USERINFO_PATH,), require_nonce=nonces, send_nonce=nonces),
        call=call,
        max_body=max_body,
    )
    discovery = Document(
        discovery_document(rt.policy.issuer, grant_types=rt.service.grant_types), PUBLIC
    )
    routes = [
        *(_route(path, token, "POST") for path in TOKEN_PATHS),
        _route("/auth/jwks", Jwks(rt.keys), "GET"),
        _route(USERINFO_PATH, userinfo, "GET", "POST"),
        _route(REVOCATION_PATH, revoke, "POST"),
        _route(INTROSPECTION_PATH, introspect, "POST"),
        _route(DEVICE_AUTHORIZATION_PATH, device_authorize, "POST"),
        _route("/.well-known/openid-configuration", discovery, "GET"),
        _route("/.well-known/oauth-authorization-server", discovery, "GET"),
        _route("/openapi.json", Document(openapi_document(rt.policy.issuer)), "GET"),
        _route("/healthz", Health(rt.store.ping, rt.keys.ready, call), "GET"),
        Route("/healthz/live", live, methods=["GET"]),
        _route(METRICS_PATH, MetricsEndpoint(rt.keys, rt.clock, settings.metrics_token), "GET"),
        *page_routes(rt, call),
    ]
    app = _TokendApp(
        direct_routes={("POST", path): token for path in TOKEN_PATHS},
        routes=routes,
        # One dispatcher for all: OAuthError and HTTPException are answered inside the
        # routing (ExceptionMiddleware), anything else at the outermost layer.
        exception_handlers={
            HTTPException: handle_error,
            OAuthError: handle_error,
            Exception: handle_error,
        },
        lifespan=_lifespan(rt, settings.key_refresh_interval, settings.gc_interval),
        hsts=rt.policy.issuer.startswith("https://"),
        observer=RequestObserver(routes),
    )
    # Starlette would answer `/account/` with a 307 to an absolute URL built from the
    # request's Host header (and a 307 re-sends a POST's body and credentials): redirects
    # come from the issuer, or not at all. A path tokend does not serve is a 404.
    app.router.redirect_slashes = False
    app.state.runtime = rt
    return app


def _lifespan(
    rt: Runtime, key_refresh_interval: float, gc_interval: float
) -> Callable[[Starlette], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt.store.start_checkpointer()  # SQLite: WAL checkpoints off the event loop
        try:
            await run_in_threadpool(rt.store.enable_client_cache)
        except Exception:  # the database is not reachable yet: serve without the cache
            log.exception("could not read the clients; client cache disabled")
        tasks = [asyncio.create_task(_refresh_shared_state(rt, key_refresh_interval))]
        if gc_interval > 0:  # one worker of all the servers sweeps at a time (its lease)
            tasks.append(asyncio.create_task(GcSweep(rt, gc_interval).run()))
        hook, hook_secret = rt.settings.events_webhook, rt.settings.events_webhook_secret
        if hook and hook_secret:  # one worker of all the servers delivers at a time (a lease)
            tasks.append(asyncio.create_task(EventsWebhook(rt, hook, hook_secret).run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await rt.aclose()
            metrics.process_stopped()  # this worker's live gauges leave the shared directory

    return lifespan


class _TokendApp(Starlette):
    """Starlette, with a direct route to the token endpoint (issue 6): the hottest route
    skips the router and the two exception middlewares. It answers byte for byte as the
    router would (tests/web/test_direct_route.py): every exception the endpoint lets out
    goes to the app's one error dispatcher (``handle_error``), other methods on the same
    path still reach the router (405), and the request id (``X-Request-Id``, ``tokend.logs``)
    and HSTS are added to both alike.

    The direct route is taken in the app itself, the outermost layer Starlette has: a
    middleware added to the app would never see it, so none may be (``add_middleware``,
    ``middleware=``): building the middleware stack, on the first request or the lifespan
    startup, whichever comes first, refuses to start with one. Wrapping the whole app in
    ASGI middleware from outside (uvicorn's proxy headers) is unaffected."""

    def __init__(self, *, direct_routes: dict[tuple[str, str], Endpoint], hsts: bool = False,
                 observer: RequestObserver | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self._observer = observer
        # (method, path) -> endpoint; empty: every request goes through the router.
        self.direct_routes = direct_routes
        self._hsts = hsts

    def build_middleware_stack(self) -> ASGIApp:
        if self.user_middleware and self.direct_routes:
            raise RuntimeError(
                "middleware was added to tokend's app, but its direct token route would skip "
                "it: remove the direct route (tokend.web.app) or wrap the app from outside"
            )
        return super().build_middleware_stack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if scope["type"] == "http":
            # The headers every answer carries (HSTS on an https issuer, the request id of
            # tokend.logs, set here for this request's log lines), added by the same one
            # send wrapper that times and counts the answer.
            rid = bind_request(scope["headers"])
            headers = [HSTS, rid] if self._hsts else [rid]
            endpoint = self.direct_routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await self._direct(endpoint, scope, receive, send, headers)
                return
            if self._observer is not None:  # timed from here to the answer's last part
                send = self._observer.wrap(scope, send, headers)
            else:
                send = _with_headers(send, headers)
        await super().__call__(scope, receive, send)

    async def _direct(
        self,
        endpoint: Endpoint,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """The direct route: the endpoint's answer (or the dispatcher's), with ``headers``
        added to it, observed as ``RequestObserver.wrap`` would. A plain ``Response`` (every
        answer of the token endpoint) is written here in its two messages, without a send
        wrapper in between; anything else goes through the wrapper."""
        observer = self._observer
        started = perf_counter()
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await handle_error(request, exc)
        if type(response).__call__ is not Response.__call__ or response.background is not None:
            if observer is not None:
                send = observer.wrap(scope, send, headers, started=started)
            else:
                send = _with_headers(send, headers)
            await response(scope, receive, send)
            return
        status = response.status_code
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": response.raw_headers + headers,
            }
        )
        if observer is not None:  # counted before the last part goes out, as wrap does
            observer.endpoint(scope["path"]).done(status, perf_counter() - started)
        await send({"type": "http.response.body", "body": response.body})


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send``, adding ``headers`` to the response's start message."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return send_with_headers


def _ensure_client_algs(rt: Runtime) -> None:
    made = rt.keys.ensure(rt.store.signing_algs_in_use())
    for record in made:
        log.info("signing key made for %s: kid %s", record.alg, record.kid)


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
                changed = True
            else:
                changed = False
        except Exception:
            rt.store.invalidate_client_cache()  # unsure what changed: read clients afresh
            log.exception("could not check the clients for changes")
            changed = True
        if changed:
            # A client may have been given an algorithm the ring has no key for yet: make
            # it now rather than on the client's first token request (which still would).
            try:
                await run_in_threadpool(_ensure_client_algs, rt)
            except Exception:
                log.exception("could not make the signing keys of the clients' algorithms")
