"""The server's log lines (``TOKEND_LOG_FORMAT``) and the request id.

**Request id.** Every HTTP request has one, set by the outermost ASGI layer
(``tokend.web.app._TokendApp.__call__``, ``bind_request``): the request's ``X-Request-Id``
when it is well-formed (1 to 64 characters of ``A-Z a-z 0-9 . _ -``, the first such header
only), else a new one (16 random bytes, hex). An ill-formed id is replaced, never echoed nor
logged: a header value chosen by a client could otherwise split the response's header or
forge log lines. The id is returned in ``X-Request-Id`` on every response (API, pages,
errors, 404/405, the direct token route) and is in every log line written while handling the
request: it lives in the context variable ``REQUEST_ID`` (each request runs in a task of its
own, with its own copy of the context; threads of ``tokend.web.offload`` get a copy too).
A client's id is a correlation handle, taken as given, not an authenticated value.

**Lines.** ``TOKEND_LOG_FORMAT=text`` (the default): uvicorn's lines as uvicorn prints them,
tokend's as ``LEVEL:     logger: message``, both followed by `` request_id=...`` inside a
request (an event's fields are not repeated: its message is the summary for people).
``TOKEND_LOG_FORMAT=json``: every line the server process writes, on stderr (everything)
and stdout (the access log), is one JSON object, written by ``JsonFormatter``::

    {"time": "2026-12-01T04:41:13.123456Z", "level": "warning", "logger": "tokend.security",
     "message": "refresh token reuse: family ... revoked", "request_id": "4f1c...",
     "event": {"type": "refresh_token_reuse", "client_id": "...", "family_id": "..."}}

- ``time``: RFC 3339, UTC, microseconds. ``level``: ``debug`` ``info`` ``warning``
  ``error`` ``critical``. ``logger``: the logger's name (``tokend.*``, ``uvicorn.error``,
  ``uvicorn.access``, ``py.warnings``, ...). ``message``: the formatted message.
- ``request_id``: only on lines written while handling an HTTP request.
- ``event``: only when the log call passes one, as ``extra={"event": {...}}``: a dict of
  JSON values, nested or not (anything else is written as ``str()``). This is how security
  events are logged (``tokend.security``, ``tokend.core.events``): ``type`` names the event,
  the message is its one-line summary for people. Never put a token, secret, code, password
  or cookie in it, nor in a message.
- ``exception``: the traceback, as one string, when the call has ``exc_info`` (uncaught
  exceptions of the process and its threads are logged so, by ``tokend.process``).
- ``http``: on access-log lines (``uvicorn.access``): ``client``, ``method``, ``path``,
  ``status``. The path is printed **without its query string** in both formats: queries
  carry ``state``, ``code_challenge``, ``user_code``, ``login_hint`` (and, sent by a client
  that should not, a token).

``log_config`` is the ``logging.config.dictConfig`` that ``tokend serve`` applies to its own
process and passes to uvicorn (``log_config=``), so that every worker of ``--workers N``
configures itself alike; its root handler (``process_handler``) also routes Python
``warnings`` and uncaught exceptions to the log.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["text", "json"]
LEVELS = ("critical", "error", "warning", "info", "debug")

REQUEST_ID: ContextVar[str | None] = ContextVar("tokend_request_id", default=None)
REQUEST_ID_HEADER = b"x-request-id"
_WELL_FORMED_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

Headers = Iterable[tuple[bytes, bytes]]


def request_id_of(headers: Headers) -> str:
    """The request's id: its first ``X-Request-Id`` if well-formed, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:  # ASGI header names are lower-case
            if _WELL_FORMED_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_bytes(16).hex()


def bind_request(headers: Headers) -> tuple[bytes, bytes]:
    """Set this request's id in ``REQUEST_ID``; the response header that returns it."""
    rid = request_id_of(headers)
    REQUEST_ID.set(rid)
    return (REQUEST_ID_HEADER, rid.encode("ascii"))


# -- the access log: never the query string -----------------------------------------------------


class AccessPath(logging.Filter):
    """uvicorn's access-log records (args: client, method, path with query, HTTP version,
    status), with the query string cut off the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


# -- the two formats ----------------------------------------------------------------------------


def _event_of(record: logging.LogRecord) -> dict[str, Any] | None:
    event = getattr(record, "event", None)
    return event if isinstance(event, dict) else None


class TextContext(logging.Filter):
    """For the text format: ``record.context``, `` request_id=...`` inside a request, else
    empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.context = "" if rid is None else f" request_id={rid}"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            line["request_id"] = rid
        event = _event_of(record)
        if event is not None:
            line["event"] = event
        if record.name == "uvicorn.access":
            args = record.args
            if isinstance(args, tuple) and len(args) == 5:
                client, method, path, _version, status = args
                line["http"] = {"client": client, "method": method, "path": path, "status": status}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


# -- the configuration of a server process ------------------------------------------------------


def process_handler(stream: IO[str]) -> logging.Handler:
    """The root logger's handler (``log_config``): a stream handler that, being built in
    every process that applies the configuration (uvicorn's workers too), also sends Python
    ``warnings`` and uncaught exceptions (of the main thread and of other threads) to the
    log, so that they are lines of the configured format."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return logging.StreamHandler(stream)


_process_log = logging.getLogger("tokend.process")


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    _process_log.critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    _process_log.critical(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def log_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """The ``dictConfig`` of a server process: tokend's and every library's records (the
    root logger) and uvicorn's error log on stderr, uvicorn's access log on stdout, all in
    ``log_format``, at ``level`` (one of ``LEVELS``)."""
    if log_format == "json":
        formatters: dict[str, Any] = {"json": {"()": f"{__name__}.JsonFormatter"}}
        root_fmt = uvicorn_fmt = access_fmt = "json"
    else:
        formatters = {
            "tokend": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(name)s: %(message)s%(context)s",
            },
            "uvicorn": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s%(context)s",
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
                "%(context)s",
            },
        }
        root_fmt, uvicorn_fmt, access_fmt = "tokend", "uvicorn", "access"
    filters = {
        "context": {"()": f"{__name__}.TextContext"},
        "access_path": {"()": f"{__name__}.AccessPath"},
    }
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "filters": filters,
        "handlers": {
            "root": {
                "()": f"{__name__}.process_handler",
                "stream": "ext://sys.stderr",
                "formatter": root_fmt,
                "filters": ["context"],
            },
            "uvicorn": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": uvicorn_fmt,
                "filters": ["context"],
            },
            "access": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": access_fmt,
                "filters": ["access_path", "context"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["uvicorn"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["access"], "level": upper, "propagate": False},
            # Alembic's list of its own plugins, at every start: only when debugging.
            "alembic.runtime.plugins": {"level": upper if upper == "DEBUG" else "WARNING"},
        },
        "root": {"handlers": ["root"], "level": upper},
    }


def configure(log_format: LogFormat, level: str) -> None:
    """Apply ``log_config`` to this process (`tokend serve`, before it opens the database)."""
    import logging.config

    logging.config.dictConfig(log_config(log_format, level))
