"""``X-Request-Id`` (tokend.logs) on every kind of response of the app, in-process: the
API, documents, pages, errors, 404 and 405, the direct token route; and a request's log
lines carry it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.web.helpers import TOKEN, basic
from tokend.logs import REQUEST_ID
from tokend.runtime import Runtime

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """The records of tokend's loggers, with the request id as the formatter saw it."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record.request_id = REQUEST_ID.get()
            seen.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("tokend")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_every_response_returns_the_request_id(
    http: TestClient, make_client, logged: list[logging.LogRecord]
) -> None:  # type: ignore[no-untyped-def]
    wrong = basic(make_client().client_id, "not-the-secret")
    cases = [
        ("GET", "/healthz", {}, 200),
        ("GET", "/.well-known/openid-configuration", {}, 200),
        ("GET", "/nowhere", {}, 404),
        ("DELETE", "/auth/jwks", {}, 405),
        ("GET", "/auth/v2/authorize", {}, 400),  # an error page
        ("POST", TOKEN, {"data": {"grant_type": "client_credentials"}, "headers": wrong}, 401),
        ("GET", TOKEN, {}, 405),  # the router, on the direct route's path
    ]
    for method, path, kwargs, status in cases:
        headers = dict(kwargs.pop("headers", {}))  # type: ignore[call-overload]
        made = http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert made.status_code == status, (path, made.text)
        assert HEX32.fullmatch(made.headers["x-request-id"]), path
        kept = http.request(method, path, headers={**headers, "X-Request-Id": "trace-42"}, **kwargs)  # type: ignore[arg-type]
        assert kept.headers.get_list("x-request-id") == ["trace-42"], path
        forged = http.request(
            method,
            path,
            headers={**headers, "X-Request-Id": "a b"},
            **kwargs,  # type: ignore[arg-type]
        )
        assert HEX32.fullmatch(forged.headers["x-request-id"]), path


def test_the_log_lines_of_a_request_carry_its_id(
    http: TestClient, rt: Runtime, make_client, logged: list[logging.LogRecord], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """An error inside the direct token route: its log line and its 500 share the id."""
    creds = basic(*make_client().basic)

    def failure(*args: object) -> None:
        raise RuntimeError("storage failed")

    monkeypatch.setattr(rt.store, "get_client", failure)
    r = http.post(TOKEN, data={"grant_type": "client_credentials"},
                  headers={**creds, "X-Request-Id": "failing-1"})  # fmt: skip
    assert r.status_code == 500 and r.headers["x-request-id"] == "failing-1"
    (record,) = [r for r in logged if r.getMessage().startswith("unhandled error")]
    assert record.request_id == "failing-1"  # type: ignore[attr-defined]
    assert REQUEST_ID.get() is None  # not leaked into the test's own context
