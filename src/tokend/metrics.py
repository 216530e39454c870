"""tokend's Prometheus metrics: every one defined here, and ``GET /metrics``'s exposition.

A leaf module: it imports only ``prometheus_client``, so that ``store/``, ``web/`` and
``runtime`` can count where the thing happens while ``core/`` stays pure (the core raises,
returns and records events; the layers around it count what it decided).

Summed over every worker of ``tokend serve --workers N``: the serve command gives the workers
a fresh private directory in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode: each process writes its values to memory-mapped files there, a scrape on any worker
reads them all, and a worker's live gauges are dropped when it stops). One process without
that variable uses the normal in-memory registry. ``exposition()`` serves both.

Cost (measured, issue 12): per request, the app's timing and the token counter are ~15 µs
of CPU in multiprocess mode (each ``inc``/``observe`` writes a memory-mapped file under a
lock), ~8 µs with the normal registry: under 1% of a refresh (~2.2 ms of CPU). Children
are bound once per label set; nothing is built per request.

Labels are bounded: fixed sets chosen in code (grant types the server knows, OAuth error
codes, route templates, event kinds, revocation reasons), never a client id, username,
token or address; anything outside a set is ``other``.

The metrics (``_total`` on counters; every histogram has ``_bucket``, ``_sum``, ``_count``):

- ``tokend_token_requests_total{grant_type, outcome}``: token endpoint requests; ``outcome``
  is ``success`` or the OAuth error code (``invalid_grant``, ``invalid_client``,
  ``temporarily_unavailable`` (throttled or database), ...); ``grant_type`` one the server
  knows, else ``other``.
- ``tokend_http_request_duration_seconds{endpoint}``: histogram, from the request reaching
  the app to its answer's last part being handed to the server (counted before the client
  can have it); ``endpoint`` is the route's path template
  (``/auth/v2/token``), ``other`` for a path tokend does not serve.
- ``tokend_http_responses_total{endpoint, code}``: answers by HTTP status (5xx, 401, 429).
- ``tokend_refresh_reuse_detections_total``: a spent refresh token presented again after
  the grace window (its family was revoked).
- ``tokend_families_revoked_total{reason}``: families the server revoked:
  ``refresh_token_reuse``, ``authorization_code_replay``, ``client`` (RFC 7009), ``user``
  (/account, consent withdrawn). (``tokens revoke`` runs in the CLI's own process.)
- ``tokend_throttled_requests_total{endpoint}``: requests refused with 429 (abuse limits).
- ``tokend_security_events_total{kind}``: security events committed to the trail, by
  ``core/events.EventKind`` value; an aggregated kind counts every occurrence; a rolled-back
  transaction counts nothing.
- ``tokend_database_errors_total{operation}``: database failures answered as
  ``temporarily_unavailable``; ``operation`` is ``connect``, ``transaction`` or ``read``.
- ``tokend_sqlite_busy_retries_total``: ``SQLITE_BUSY`` answers waited out and retried
  (``store/connections._retry_busy``).
- ``tokend_signing_key_age_seconds``: seconds since the current signing key was created
  (computed at the scrape; alert when older than the rotation schedule).
- ``tokend_events_webhook_deliveries_total{outcome}``: the events webhook's work
  (``TOKEND_EVENTS_WEBHOOK``, ``tokend.web.webhook``): ``delivered`` (a 2xx), ``retried``
  (each attempt after an event's first), ``given_up`` (every attempt failed; skipped).
- ``tokend_process_start_time_seconds``: each live worker's start, Unix time (with workers,
  one series per worker, labelled ``pid``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client import values as _values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format (every Prometheus since 2.0 reads it); the names fit it as they are.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OTHER = "other"

# 1-100 ms resolved (a refresh takes 1-5 ms; a sign-in's Argon2 ~100 ms), then the tail.
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
           0.5, 1.0, 2.5)  # fmt: skip

# Decided once, as prometheus_client decided it on import (``values.ValueClass``).
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

_pid = os.getpid()


def _process_id() -> int:
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if MULTIPROCESS:
    # prometheus_client's multiprocess values ask for the process id at every ``inc`` and
    # ``observe``, to notice a fork (the child must write files of its own): a system call
    # each, four per refresh, half of what the metrics cost a request in multiprocess mode
    # (~10 µs, ~5 µs with the id read once; issue 14). The id is read once per process and
    # again in every child ``os.fork`` makes (Python's fork hooks; a worker started by
    # multiprocessing's spawn, as uvicorn's are, is a fresh interpreter anyway). Set before
    # the first metric below is made: each one takes ``ValueClass`` when it is made.
    os.register_at_fork(after_in_child=_forked)
    _values.ValueClass = _values.MultiProcessValue(_process_id)  # type: ignore[no-untyped-call]

# One process or many: the same samples (no `_created` series in either).
disable_created_metrics()  # type: ignore[no-untyped-call]

TOKEN_REQUESTS = Counter(
    "tokend_token_requests", "Token endpoint requests by grant type and outcome.",
    ["grant_type", "outcome"],
)  # fmt: skip
REQUEST_DURATION = Histogram(
    "tokend_http_request_duration_seconds", "Time to answer a request, by endpoint.",
    ["endpoint"], buckets=BUCKETS,
)  # fmt: skip
RESPONSES = Counter(
    "tokend_http_responses", "Answers by endpoint and HTTP status code.", ["endpoint", "code"]
)
REUSE_DETECTIONS = Counter(
    "tokend_refresh_reuse_detections", "Spent refresh tokens presented again (family revoked)."
)
FAMILIES_REVOKED = Counter(
    "tokend_families_revoked", "Token families revoked by the server, by reason.", ["reason"]
)
THROTTLED = Counter(
    "tokend_throttled_requests", "Requests refused by the abuse limits (429).", ["endpoint"]
)
SECURITY_EVENTS = Counter(
    "tokend_security_events", "Security events committed to the trail, by kind.", ["kind"]
)
DATABASE_ERRORS = Counter(
    "tokend_database_errors", "Database failures (answered temporarily_unavailable).",
    ["operation"],
)  # fmt: skip
BUSY_RETRIES = Counter("tokend_sqlite_busy_retries", "SQLITE_BUSY answers waited out and retried.")
WEBHOOK_DELIVERIES = Counter(
    "tokend_events_webhook_deliveries", "Events webhook attempts by outcome.", ["outcome"]
)
WEBHOOK_OUTCOMES = ("delivered", "retried", "given_up")
PROCESS_START = Gauge(
    "tokend_process_start_time_seconds", "Start time of the process, Unix time.",
    multiprocess_mode="liveall",
)  # fmt: skip
PROCESS_START.set(time.time())

# token_families.revoked_reason values the server writes (CLI revocations run elsewhere).
REVOCATION_REASONS = frozenset(
    {"refresh_token_reuse", "authorization_code_replay", "client", "user", "admin"}
)


class TokenRequests:
    """``tokend_token_requests_total``, its children bound once per (grant type, outcome):
    on the hot path a set lookup, a dict lookup and the child's ``inc``. A grant type the
    server does not know is ``other`` before anything is stored, so no request grows the
    cache; outcomes are the OAuth error codes of the code (class attributes)."""

    __slots__ = ("_children", "_known")

    def __init__(self, grant_types: Iterable[str]) -> None:
        self._known = frozenset(grant_types)
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, grant_type: str | None, outcome: str) -> None:
        gt = grant_type if grant_type is not None and grant_type in self._known else OTHER
        child = self._children.get((gt, outcome))
        if child is None:
            child = self._children[gt, outcome] = TOKEN_REQUESTS.labels(gt, outcome)
        child.inc()


def _reason(reason: str) -> str:
    return reason if reason in REVOCATION_REASONS else OTHER


def family_revoked(reason: str) -> Callable[[], None]:
    """What to count once a revocation for ``reason`` has committed."""
    return FAMILIES_REVOKED.labels(_reason(str(reason))).inc


def families_revoked(reason: str, n: int) -> None:
    """Count ``n`` revocations for ``reason`` that have committed."""
    if n > 0:
        FAMILIES_REVOKED.labels(_reason(reason)).inc(n)


def event_committed(kind: str, known: Iterable[str]) -> Callable[[], None]:
    """What to count once an event of ``kind`` (one of ``known``, else ``other``) has
    committed: the trail's counter, and the reuse counter for a reuse."""
    kind = str(kind)
    label = kind if kind in known else OTHER
    child = SECURITY_EVENTS.labels(label)
    if kind != "refresh_token_reuse":
        return child.inc

    def reuse() -> None:
        child.inc()
        REUSE_DETECTIONS.inc()

    return reuse


def webhook_delivery(outcome: str) -> None:
    """Count an events webhook outcome (one of ``WEBHOOK_OUTCOMES``)."""
    WEBHOOK_DELIVERIES.labels(outcome if outcome in WEBHOOK_OUTCOMES else OTHER).inc()


def database_error(operation: str) -> None:
    DATABASE_ERRORS.labels(operation).inc()


def busy_retry() -> None:
    BUSY_RETRIES.inc()


class _Live:
    """Values computed at the scrape (``tokend_signing_key_age_seconds``)."""

    def __init__(self, key_age: Callable[[], float | None]) -> None:
        self._key_age = key_age

    def collect(self) -> Iterator[Metric]:
        age = self._key_age()
        if age is not None:
            yield GaugeMetricFamily(
                "tokend_signing_key_age_seconds",
                "Seconds since the current signing key was created.",
                value=max(age, 0.0),
            )


class _Default:
    """The process's own registry, as one collector (one process, no multiprocess dir)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(key_age: Callable[[], float | None]) -> bytes:
    """The Prometheus text format of every metric: over every worker's files in
    multiprocess mode, else this process's registry; plus the values of the scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    registry.register(_Live(key_age))
    return generate_latest(registry)


def process_stopped() -> None:
    """Drop this worker's live gauges from the shared directory (call on shutdown)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
