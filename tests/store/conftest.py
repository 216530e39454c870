from __future__ import annotations

import itertools
import os

import pytest
from sqlalchemy import text

from tests.conftest import BACKENDS
from tokend.store.engine import create_db_engine

_blank_counter = itertools.count()


@pytest.fixture(params=BACKENDS)
def blank_db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An empty database (no tables at all), unlike ``db_url`` which is copied from a
    migrated template (a file on SQLite, TEMPLATE DATABASE on PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'blank.db'}"
    server = request.getfixturevalue("postgres")
    name = f"blank{os.getpid()}_{next(_blank_counter)}"
    engine = create_db_engine(server.url("postgres"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.url(name)
