"""The web side of the metrics (``tokend.metrics`` defines them): ``GET /metrics`` and the
per-request observation that the app's outermost layer (``tokend.web.app._TokendApp``)
wraps around every HTTP request, the direct token route included.

``RequestObserver.wrap(scope, send, headers)`` reads the clock when the request reaches the
app and when the last part of its answer is about to be handed to the server (so a client
that has its answer finds it counted by the next scrape), and counts the answer
by endpoint and status (and adds ``headers`` to it, see ``tokend.web.app``): the endpoint is
the route's path template, bound to its histogram child once at start-up (a dict lookup per
request), or ``other`` for any path tokend does not serve (nothing a client sends becomes a
label).

``TOKEND_METRICS_TOKEN``: when set, ``/metrics`` asks for it as a bearer token (compared in
constant time) and answers 401 without it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from time import perf_counter
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Scope, Send

from tokend import metrics
from tokend.core.clock import Clock
from tokend.web.responses import json_response

METRICS_PATH = "/metrics"
_THROTTLED = 429


class _Endpoint:
    """One endpoint label's pre-bound children."""

    __slots__ = ("duration", "label", "responses", "throttled")

    def __init__(self, label: str) -> None:
        self.label = label
        self.duration = metrics.REQUEST_DURATION.labels(label)
        self.throttled = metrics.THROTTLED.labels(label)
        self.responses: dict[int, Any] = {}

    def done(self, status: int, seconds: float) -> None:
        self.duration.observe(seconds)
        child = self.responses.get(status)
        if child is None:  # status codes are the app's own: a bounded set
            child = self.responses[status] = metrics.RESPONSES.labels(self.label, str(status))
        child.inc()
        if status == _THROTTLED:
            self.throttled.inc()


class RequestObserver:
    """Times and counts every HTTP request of one app, by route (see the module's doc)."""

    __slots__ = ("_other", "_patterns", "_static")

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._static: dict[str, _Endpoint] = {}
        self._patterns: list[tuple[Any, _Endpoint]] = []
        for route in routes:
            if not isinstance(route, Route):
                continue
            if route.param_convertors:  # a template with parameters: matched by its regex
                self._patterns.append((route.path_regex, _Endpoint(route.path)))
            else:
                self._static.setdefault(route.path, _Endpoint(route.path))
        self._other = _Endpoint(metrics.OTHER)

    def endpoint(self, path: str) -> _Endpoint:
        found = self._static.get(path)
        if found is not None:
            return found
        for regex, endpoint in self._patterns:
            if regex.match(path):
                return endpoint
        return self._other

    def wrap(
        self,
        scope: Scope,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        *,
        started: float | None = None,
    ) -> Send:
        """``send``, adding ``headers`` to the answer's start and observing the request of
        ``scope`` when its answer is complete: one wrapper, so each message the app sends
        passes through one extra coroutine, not one per concern. ``started``: when the
        request reached the app (``perf_counter``), if not now."""
        start = perf_counter() if started is None else started
        endpoint = self.endpoint(scope["path"])
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
                await send(message)
                return
            if kind == "http.response.body" and not message.get("more_body"):
                # Counted before the last part goes out: a client that has its answer (and
                # scrapes next) finds it counted, on any worker.
                endpoint.done(status, perf_counter() - start)
            await send(message)

        return send_observed


class SigningKeys(Protocol):
    @property
    def current_created_at(self) -> float | None: ...


class MetricsEndpoint:
    """``GET /metrics``: every metric, summed over the server's workers (Prometheus text)."""

    __slots__ = ("_clock", "_keys", "_token")

    def __init__(self, keys: SigningKeys, clock: Clock, token: str | None) -> None:
        self._keys = keys
        self._clock = clock
        self._token = token.encode() if token else None

    def _key_age(self) -> float | None:
        created = self._keys.current_created_at
        return None if created is None else self._clock.now() - created

    async def __call__(self, request: Request) -> Response:
        if self._token is not None and not self._authorized(request):
            return json_response(
                {"error": "invalid_token", "error_description": "A metrics token is required."},
                401,
                {"WWW-Authenticate": 'Bearer realm="tokend-metrics"'},
            )
        # Multiprocess mode reads every worker's files: off the event loop.
        body = await run_in_threadpool(metrics.exposition, self._key_age)
        return Response(body, 200, {"Cache-Control": "no-store"}, metrics.CONTENT_TYPE)

    def _authorized(self, request: Request) -> bool:
        assert self._token is not None
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        presented = value.strip().encode("utf-8", "surrogateescape")
        # compare_digest: as long for a wrong token as for a right one of the same length.
        return scheme.lower() == "bearer" and hmac.compare_digest(presented, self._token)
