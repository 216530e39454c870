"""The README's first minute, done literally: serve an empty database, follow the printed
next steps with the real CLI, and refresh with curl exactly as in the spec."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.postgres import free_port

pytestmark = pytest.mark.timeout(120)


def tokend(*args: str, cwd, stdin: str | None = None) -> str:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sys.executable, "-m", "tokend.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_empty_database_prints_next_steps_that_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEND_")}
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokend.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        printed = log.read_text()
        assert "no clients yet" in printed
        assert "clients create" in printed and "tokens issue" in printed
        assert f"curl -s {base}/auth/v2/token" in printed
        # The embedded default: SQLite beside us, and its secret file with mode 0600.
        assert (tmp_path / "tokend.db").exists()
        assert (tmp_path / "tokend.db.secret").stat().st_mode & 0o777 == 0o600

        client = json.loads(
            tokend("clients", "create", "--name", "demo", "--scope", "openid offline email",
                   "--json", cwd=tmp_path)
        )  # fmt: skip
        tokend("users", "create", "alice", "--password-stdin", cwd=tmp_path, stdin="s3cret pw\n")
        issued = json.loads(
            tokend("tokens", "issue", "--client-id", client["client_id"], "--user", "alice",
                   "--scope", "openid offline", cwd=tmp_path)
        )  # fmt: skip
        assert issued["refresh_token"].startswith("tkd_rt_")

        curl = shutil.which("curl")
        assert curl, "curl is part of the quick start"
        # The spec's example request, byte for byte in shape: Basic auth + form body.
        step4 = next(line for line in printed.splitlines() if "curl -s" in line)
        assert re.search(r"-u 'CLIENT_ID:CLIENT_SECRET'", step4)
        out = subprocess.run(
            [curl, "-s", "-w", "\n%{http_code}", f"{base}/auth/v2/token",
             "-u", f"{client['client_id']}:{client['client_secret']}",
             "-d", "grant_type=refresh_token", "-d", f"refresh_token={issued['refresh_token']}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        body, status = out.rsplit("\n", 1)
        assert status == "200", body
        refreshed = json.loads(body)
        assert refreshed["token_type"] == "Bearer"
        assert refreshed["refresh_token"] != issued["refresh_token"]
        assert set(refreshed) >= {"access_token", "expires_in", "refresh_token", "id_token"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
