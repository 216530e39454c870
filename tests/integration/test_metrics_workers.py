"""GET /metrics of a real `tokend serve --workers 2` shows the totals of both workers,
whichever worker a scrape lands on (prometheus_client's multiprocess mode in a private
directory that `tokend serve` makes), with the outcomes, a reuse detection, and no label
that carries a client id, token, secret or address."""

from __future__ import annotations

import http.client
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SECRET_KEY
from tests.integration.test_key_rotation import Worker, connect_to_every_worker
from tests.support.family import first_family
from tests.support.server import running_server
from tokend.config import Settings
from tokend.core.clock import SystemClock
from tokend.runtime import build_runtime

WORKERS = 2
PER_WORKER = 3  # successful refreshes sent to each worker
TOKEN = "/auth/v2/token"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc"),
]


def _post(w: Worker, form: dict[str, str], auth: tuple[str, str]) -> tuple[int, dict[str, str]]:
    status, body = w.request("POST", TOKEN, form, auth)
    return status, body


def _scrape_on(conn: http.client.HTTPConnection) -> str:
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200, body
    return body


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_are_summed_over_every_worker(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'tokend.db'}"
    rt = build_runtime(
        Settings(database_url=db_url, secret_key=SECRET_KEY), clock=SystemClock(), prepare=True
    )
    families = [first_family(rt) for _ in range(WORKERS)]
    reg = families[0].reg
    rt.close()
    env = {"TOKEND_SECRET_KEY": SECRET_KEY, "TOKEND_REFRESH_REUSE_GRACE": "0"}
    with running_server(db_url, workers=WORKERS, env=env) as base:
        workers = connect_to_every_worker(base, WORKERS)
        secrets: list[str] = [reg.secret or "", SECRET_KEY]
        for w, fam in zip(workers, families, strict=True):
            token = fam.refresh_token
            for _ in range(PER_WORKER):
                status, body = _post(w, {"grant_type": "refresh_token", "refresh_token": token},
                                     fam.auth)  # fmt: skip
                assert status == 200, body
                secrets += [token, body["access_token"], body["id_token"]]
                token = body["refresh_token"]
            secrets.append(token)
            # A wrong token on each worker: invalid_grant.
            status, body = _post(w, {"grant_type": "refresh_token", "refresh_token": "rt_no"},
                                 fam.auth)  # fmt: skip
            assert (status, body["error"]) == (400, "invalid_grant")
        # One reuse (on the second worker): the first, long spent, token again.
        w, fam = workers[1], families[1]
        status, body = _post(w, {"grant_type": "refresh_token", "refresh_token": fam.refresh_token},
                             fam.auth)  # fmt: skip
        assert (status, body["error"]) == (400, "invalid_grant")
        secrets += [fam.client.client_id, families[0].client.client_id]

        ok = (("grant_type", "refresh_token"), ("outcome", "success"))
        bad = (("grant_type", "refresh_token"), ("outcome", "invalid_grant"))
        # Scrapes pinned on each worker, and on new connections (any worker).
        port = urlsplit(base).port
        scrapes = [_scrape_on(w.conn) for w in workers]
        for _ in range(4):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            scrapes.append(_scrape_on(conn))
            conn.close()
        for text in scrapes:
            s = _samples(text)
            assert s["tokend_token_requests_total", ok] == WORKERS * PER_WORKER
            assert s["tokend_token_requests_total", bad] == WORKERS + 1
            assert s["tokend_refresh_reuse_detections_total", ()] == 1
            reason = (("reason", "refresh_token_reuse"),)
            assert s["tokend_families_revoked_total", reason] == 1
            kind = (("kind", "refresh_token_reuse"),)
            assert s["tokend_security_events_total", kind] == 1
            n = WORKERS * (PER_WORKER + 1) + 1
            assert s["tokend_http_request_duration_seconds_count", (("endpoint", TOKEN),)] == n
            # Both workers' start times are there, one series each (pid).
            starts = [
                x
                for f in text_string_to_metric_families(text)
                for x in f.samples
                if x.name == "tokend_process_start_time_seconds"
            ]
            assert {x.labels["pid"] for x in starts} == {str(w.pid) for w in workers}
            # No secret, token or client id anywhere in the exposition, let alone a label.
            for secret in secrets:
                assert secret not in text
            labels = {v for f in text_string_to_metric_families(text) for x in f.samples
                      for k, v in x.labels.items() if k != "pid"}  # fmt: skip
            assert not {v for v in labels if "127.0.0.1" in v or len(v) > 40}

        # The directory is the server's own: private, named in no setting.
        dirs = [
            p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("tokend-metrics-*")
            if any(p.glob(f"*_{workers[0].pid}.db"))
        ]  # fmt: skip
        assert len(dirs) == 1
        assert stat.S_IMODE(dirs[0].stat().st_mode) == 0o700
        for w in workers:
            w.conn.close()
    assert not dirs[0].exists()  # removed when the server stopped
