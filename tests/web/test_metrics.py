"""GET /metrics in one process (the normal registry): what each metric counts, that only a
committed event counts, TOKEND_METRICS_TOKEN, and that the exposition parses. The sum over
workers is tests/integration/test_metrics_workers.py's."""

from __future__ import annotations

import sqlite3

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import ISSUER
from tests.support.family import first_family
from tests.web.helpers import TOKEN, refresh, unreachable_engines
from tokend.core.events import EventKind
from tokend.core.models import SecurityEvent
from tokend.store.connections import _retry_busy
from tokend.web.app import create_app


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(
    http: TestClient, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = http.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_token_outcomes_duration_and_live_values(rt, http):
    fam = first_family(rt)
    before_ok = value("tokend_token_requests_total", grant_type="refresh_token", outcome="success")
    before_bad = value(
        "tokend_token_requests_total", grant_type="refresh_token", outcome="invalid_grant"
    )
    before_other = value(
        "tokend_token_requests_total", grant_type="other", outcome="unsupported_grant_type"
    )
    before_n = value("tokend_http_request_duration_seconds_count", endpoint=TOKEN)

    assert http.post(TOKEN, data=refresh(fam.refresh_token), auth=fam.auth).status_code == 200
    assert http.post(TOKEN, data=refresh("rt_nope"), auth=fam.auth).status_code == 400
    # An unknown grant type is "other": what a client sends never becomes a label.
    odd = {"grant_type": fam.client.client_id}
    assert http.post(TOKEN, data=odd, auth=fam.auth).status_code == 400

    samples = scrape(http)
    key = "tokend_token_requests_total"
    ok = (("grant_type", "refresh_token"), ("outcome", "success"))
    bad = (("grant_type", "refresh_token"), ("outcome", "invalid_grant"))
    other = (("grant_type", "other"), ("outcome", "unsupported_grant_type"))
    assert samples[key, ok] == before_ok + 1
    assert samples[key, bad] == before_bad + 1
    assert samples[key, other] == before_other + 1
    count = samples["tokend_http_request_duration_seconds_count", (("endpoint", TOKEN),)]
    assert count == before_n + 3
    # The buckets resolve 1-100 ms.
    bounds = {
        float(dict(labels)["le"])
        for (name, labels) in samples
        if name == "tokend_http_request_duration_seconds_bucket"
    }
    assert {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1} <= bounds
    age = samples["tokend_signing_key_age_seconds", ()]
    assert 0 <= age < 3600
    assert samples["tokend_process_start_time_seconds", ()] > 1.6e9
    assert fam.client.client_id not in http.get("/metrics").text


def test_unknown_paths_are_other_and_429_is_throttled(rt, http):
    before = value("tokend_http_responses_total", endpoint="other", code="404")
    assert http.get("/no/such/secret-path").status_code == 404
    assert value("tokend_http_responses_total", endpoint="other", code="404") == before + 1
    assert "secret-path" not in http.get("/metrics").text


def test_only_committed_events_are_counted(rt):
    kind = EventKind.REFRESH_TOKEN_WRONG_CLIENT
    event = SecurityEvent(at=rt.clock.now(), kind=kind, client_id="c", family_id=None,
                          user_id=None, detail={})  # fmt: skip
    before = value("tokend_security_events_total", kind=kind)
    with pytest.raises(RuntimeError), rt.store.transaction() as tx:
        tx.record_event(event)
        raise RuntimeError("rolled back")
    assert value("tokend_security_events_total", kind=kind) == before
    with rt.store.transaction() as tx:
        tx.record_event(event)
    assert value("tokend_security_events_total", kind=kind) == before + 1


def test_metrics_token(rt):
    secret = "metrics-token-0123456789abcdef"
    settings = rt.settings.model_copy(update={"metrics_token": secret})
    with TestClient(create_app(settings, runtime=rt), base_url=ISSUER) as http:
        assert http.get("/metrics").status_code == 401
        wrong = http.get("/metrics", headers={"Authorization": f"Bearer {secret[:-1]}x"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        basic = http.get("/metrics", auth=("metrics", secret))
        assert basic.status_code == 401
        assert "tokend_token_requests" not in wrong.text
        ok = http.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert ok.status_code == 200
        assert "tokend_http_request_duration_seconds" in ok.text


def test_database_errors_and_busy_retries_are_counted(rt, http, monkeypatch, tmp_path):
    engines = unreachable_engines(rt, tmp_path)
    monkeypatch.setattr(rt.store, "engines", engines)
    before = value("tokend_database_errors_total", operation="read")
    assert http.get("/healthz").status_code == 503
    assert value("tokend_database_errors_total", operation="read") == before + 1

    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    answers = iter([busy, busy, None])

    def flaky() -> str:
        exc = next(answers)
        if exc is not None:
            raise exc
        return "done"

    before = value("tokend_sqlite_busy_retries_total")
    assert _retry_busy(flaky) == "done"
    assert value("tokend_sqlite_busy_retries_total") == before + 2


def test_an_answer_is_counted_before_its_last_part_reaches_the_client(rt):
    """A client that has its answer and scrapes next (on any worker) finds it counted: the
    observation happens before the answer's last part is handed to the server."""
    import asyncio

    app = create_app(rt.settings, runtime=rt)
    seen: list[tuple[str, float]] = []

    async def go() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/healthz/live",
            "raw_path": b"/healthz/live", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
        }  # fmt: skip

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            count = value("tokend_http_request_duration_seconds_count", endpoint="/healthz/live")
            seen.append((str(message["type"]), count))

        await app(scope, receive, send)

    before = value("tokend_http_request_duration_seconds_count", endpoint="/healthz/live")
    asyncio.run(go())
    assert seen[0] == ("http.response.start", before)
    assert seen[-1] == ("http.response.body", before + 1)
