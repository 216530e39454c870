"""tokend.logs: the request id taken or made, the JSON line, the access log's path, and the
``X-Request-Id`` header on every kind of response of the app (in-process).

A real server's lines, JSON and without a secret, are tests/integration/test_log_secrets.py.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import logging.config
import os
import re
import subprocess
import sys
import threading
from datetime import datetime

import pytest

from tokend.logs import (
    REQUEST_ID,
    AccessPath,
    JsonFormatter,
    TextContext,
    log_config,
    request_id_of,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


def _rid(value: bytes) -> str:
    return request_id_of([(b"accept", b"*/*"), (b"x-request-id", value)])


@pytest.mark.parametrize(
    "value", [b"a", b"req-1.2_3", b"A" * 64, b"0af7651916cd43dd8448eb211c80319c"]
)
def test_a_well_formed_request_id_is_kept(value: bytes) -> None:
    assert _rid(value) == value.decode()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"A" * 65,
        b"abc def",
        b"abc\r\nSet-Cookie: x=1",  # header injection
        b'x"}\n{"level": "critical"',  # a forged log line
        b"caf\xc3\xa9",
        b"a/b",
        b"a;b",
    ],
)
def test_an_ill_formed_request_id_is_replaced_never_echoed(value: bytes) -> None:
    rid = _rid(value)
    assert HEX32.fullmatch(rid), rid


def test_without_a_request_id_one_is_made_and_each_differs() -> None:
    ids = {request_id_of([]) for _ in range(100)}
    assert len(ids) == 100 and all(HEX32.fullmatch(i) for i in ids)


def test_only_the_first_request_id_header_counts() -> None:
    assert request_id_of([(b"x-request-id", b"first"), (b"x-request-id", b"second")]) == "first"
    bad_first = request_id_of([(b"x-request-id", b"bad id"), (b"x-request-id", b"second")])
    assert HEX32.fullmatch(bad_first)


# -- the JSON line ------------------------------------------------------------------------------


def _record(msg: str, *args: object, **kwargs: object) -> logging.LogRecord:
    logger = logging.getLogger("tokend.test")
    exc_info = kwargs.pop("exc_info", None)
    return logger.makeRecord(
        "tokend.test", logging.WARNING, __file__, 1, msg, args, exc_info, extra=kwargs or None
    )


def _json_line(record: logging.LogRecord, request_id: str | None = None) -> dict[str, object]:
    def fmt() -> str:
        if request_id is not None:
            REQUEST_ID.set(request_id)
        return JsonFormatter().format(record)

    line = contextvars.copy_context().run(fmt)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_json_line_has_time_level_logger_message() -> None:
    line = _json_line(_record("family %s revoked\nsecond line", "f1"))
    assert set(line) == {"time", "level", "logger", "message"}  # no request, no event
    assert line["level"] == "warning" and line["logger"] == "tokend.test"
    assert line["message"] == "family f1 revoked\nsecond line"
    time = str(line["time"])
    assert time.endswith("Z")
    parsed = datetime.fromisoformat(time.replace("Z", "+00:00"))
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_a_json_line_has_the_request_id_and_the_event() -> None:
    event = {"type": "refresh_token_reuse", "count": 2, "detail": {"a": [1]}, "at": object()}
    line = _json_line(_record("reuse", event=event), request_id="req-7")
    assert line["request_id"] == "req-7"
    assert isinstance(line["event"], dict)
    assert line["event"]["type"] == "refresh_token_reuse" and line["event"]["count"] == 2
    assert line["event"]["detail"] == {"a": [1]}
    assert line["event"]["at"].startswith("<object")  # not JSON: written as str()


def test_a_json_line_carries_the_traceback_as_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", exc_info=sys.exc_info())
    line = _json_line(record)
    assert str(line["exception"]).startswith("Traceback") and "ValueError: boom" in str(
        line["exception"]
    )


def test_the_access_log_never_prints_the_query_string() -> None:
    args = ("127.0.0.1:5000", "GET", "/auth/v2/authorize?state=s3cret&code_challenge=x", "1.1", 302)
    access = '%s - "%s %s HTTP/%s" %d'
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, access, args, None)
    assert AccessPath().filter(record)
    line = _json_line(record)
    assert "s3cret" not in json.dumps(line)
    assert line["message"] == '127.0.0.1:5000 - "GET /auth/v2/authorize HTTP/1.1" 302'
    assert line["http"] == {
        "client": "127.0.0.1:5000",
        "method": "GET",
        "path": "/auth/v2/authorize",
        "status": 302,
    }


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_configuration_writes_every_logger_in_the_format(fmt: str) -> None:
    """``log_config`` applied: tokend's, uvicorn's and Python warnings' lines, with the
    request id in both formats, the query cut in both."""
    err, out = io.StringIO(), io.StringIO()
    config = log_config(fmt, "info")  # type: ignore[arg-type]
    for name, stream in (("root", err), ("uvicorn", err), ("access", out)):
        config["handlers"][name]["stream"] = stream
    saved = logging.root.handlers[:], sys.excepthook, threading.excepthook
    logging.config.dictConfig(config)
    try:

        def emit() -> None:
            REQUEST_ID.set("rid-1")
            logging.getLogger("tokend.security").warning("reuse", extra={"event": {"type": "x"}})
            logging.getLogger("uvicorn.error").info("uvicorn says")
            logging.getLogger("uvicorn.access").info(
                '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/p?q=secret", "1.1", 200
            )

        contextvars.copy_context().run(emit)
        import warnings

        warnings.warn("careful", DeprecationWarning, stacklevel=1)
        try:
            raise LookupError("nobody caught me")
        except LookupError:
            sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
    finally:
        logging.captureWarnings(False)
        logging.root.handlers[:], sys.excepthook, threading.excepthook = saved
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers = []
    err_lines, out_lines = err.getvalue().splitlines(), out.getvalue().splitlines()
    assert len(out_lines) == 1 and "secret" not in out.getvalue()
    if fmt == "json":
        assert len(err_lines) == 4, err_lines  # the warning's source line is in its message
        parsed = [json.loads(line) for line in err_lines + out_lines]
        assert [p["logger"] for p in parsed] == [
            "tokend.security",
            "uvicorn.error",
            "py.warnings",
            "tokend.process",
            "uvicorn.access",
        ]
        assert [p.get("request_id") for p in parsed] == ["rid-1", "rid-1", None, None, "rid-1"]
        assert parsed[3]["level"] == "critical" and parsed[3]["message"] == "uncaught exception"
        assert "LookupError: nobody caught me" in parsed[3]["exception"]
        assert parsed[0]["event"] == {"type": "x"}
        assert parsed[4]["http"]["path"] == "/p"
    else:
        assert err_lines[0].endswith("tokend.security: reuse request_id=rid-1")
        assert err_lines[1].endswith("uvicorn says request_id=rid-1")
        assert "DeprecationWarning: careful" in err_lines[2]
        assert out_lines[0].endswith('"GET /p HTTP/1.1" 200 OK request_id=rid-1')


def test_text_context_is_empty_outside_a_request() -> None:
    record = _record("plain")
    contextvars.copy_context().run(TextContext().filter, record)
    assert record.context == ""  # type: ignore[attr-defined]


def test_serve_reports_a_failed_start_as_a_json_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`tokend serve` that cannot start (no secret key for PostgreSQL): one JSON error line,
    exit status 1; not click's ``Error: ...``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEND_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokend.cli",
            "serve",
            "--database-url",
            "postgresql://u@127.0.0.1:1/x",
        ],
        env={**env, "TOKEND_LOG_FORMAT": "json"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and out.stdout == ""
    (line,) = [json.loads(x) for x in out.stderr.splitlines()]
    assert line["level"] == "error" and line["logger"] == "tokend.serve"
    assert line["message"].startswith("TOKEND_SECRET_KEY or TOKEND_SECRET_KEY_FILE is required")
