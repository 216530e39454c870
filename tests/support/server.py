"""Run the real `tokend serve` on loopback, as a user would, for HTTP integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.postgres import free_port


@contextmanager
def running_server(
    database_url: str,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    output: Path | None = None,
) -> Iterator[str]:
    """``tokend serve`` (``args`` added) on a free port; its stdout and stderr, together, go
    to ``output`` (kept) or a temporary file."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "TOKEND_DATABASE_URL": database_url,
        "TOKEND_ISSUER": base,
        **(env or {}),
    }
    log = open(output, "w+b") if output else tempfile.TemporaryFile()  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokend.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *args,
        ],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                out = log.read().decode(errors="replace")
                raise RuntimeError(f"tokend serve exited with {proc.returncode}:\n{out}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tokend serve did not become healthy in 30 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def storm(bases: list[str], n: int, path: str, **request: Any) -> list[httpx.Response]:
    """``n`` identical POSTs to ``path`` at once, each on its own connection, spread over
    the servers ``bases``; ``request`` goes to ``httpx.Client.post`` (auth, data, headers).
    The connections are opened first, so that the requests really race."""
    barrier = threading.Barrier(n)
    clients = [httpx.Client(base_url=bases[i % len(bases)], timeout=30) for i in range(n)]
    for c in clients:
        c.get("/healthz")

    def one(c: httpx.Client) -> httpx.Response:
        barrier.wait()
        return c.post(path, **request)

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, clients))
    finally:
        for c in clients:
            c.close()
