from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tokend.runtime import Runtime
from tokend.web.app import create_app


@pytest.fixture
def http(rt: Runtime) -> Iterator[TestClient]:
    """The ASGI app in-process (real routing, parsing and storage; no socket)."""
    app = create_app(rt.settings, runtime=rt)
    with TestClient(app, base_url="https://issuer.test", raise_server_exceptions=False) as client:
        yield client
