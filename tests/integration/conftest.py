from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import SECRET_KEY
from tokend.config import Settings
from tokend.core.clock import SystemClock
from tokend.runtime import Runtime, build_runtime


@pytest.fixture
def live_rt(db_url: str) -> Iterator[Runtime]:
    """A runtime on the wall clock, sharing the database and secret with a real server."""
    runtime = build_runtime(
        Settings(database_url=db_url, secret_key=SECRET_KEY), clock=SystemClock(), prepare=True
    )
    yield runtime
    runtime.close()


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"TOKEND_SECRET_KEY": SECRET_KEY}
