"""What a database URL (``TOKEND_DATABASE_URL``) says: which backend, which SQLite file.

A leaf module: the settings (``tokend.config``) and the store (``tokend.store.engine``) both
read URLs through it, so the settings need not import the store."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """The URL SQLAlchemy is given: a plain ``postgresql://`` gets the psycopg 3 driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The SQLite database file, or None (another backend, or an in-memory database)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)
