"""What a database URL (``TOKEND_DATABASE_URL``) says: which backend, which SQLite file.

A leaf module: the settings (``tokend.config``) and the store (``tokend.store.engine``) both
read URLs through it, so the settings need not import the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# libpq connection options asyncpg does not read from a URL (it would send them to the server
# as settings, which refuses them): translated where they have an asyncpg equivalent
# (``connect_timeout``, ``options``' ``-c name=value``), refused at start otherwise.
_LIBPQ_ONLY = frozenset(
    {
        "channel_binding",
        "fallback_application_name",
        "gssencmode",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "load_balance_hosts",
        "requiressl",
        "tcp_user_timeout",
    }
)
HOT_CONNECT_TIMEOUT = 10.0  # seconds; asyncpg's default is 60


def asyncpg_connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """What ``asyncpg.connect`` needs to connect as libpq would with ``url``: the libpq
    form of the URL and the keyword arguments for its options asyncpg takes otherwise.
    ``ValueError`` for an option it cannot honour (named, without the URL's secrets)."""
    u = make_url(normalize_url(url)).set(drivername="postgresql")
    query = dict(u.query)
    kwargs: dict[str, Any] = {"timeout": HOT_CONNECT_TIMEOUT}
    unsupported = sorted(_LIBPQ_ONLY & query.keys())
    if unsupported:
        raise ValueError(
            "TOKEND_DATABASE_URL: the server's PostgreSQL driver (asyncpg) does not support "
            f"the connection option(s) {', '.join(unsupported)}; remove them"
        )
    timeout = query.pop("connect_timeout", None)
    if timeout is not None:
        kwargs["timeout"] = float(timeout if isinstance(timeout, str) else timeout[-1])
    options = query.pop("options", None)
    if options is not None:
        kwargs["server_settings"] = _settings_of(
            options if isinstance(options, str) else " ".join(options)
        )
    dsn = u.set(query=query).render_as_string(hide_password=False)
    return dsn, kwargs


def _settings_of(options: str) -> dict[str, str]:
    """libpq's ``options`` (``-c name=value`` or ``--name=value``, space-separated) as
    server settings."""
    words = options.split()
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            word, i = words[i + 1], i + 1
        elif word.startswith(("-c", "--")):
            word = word[2:]
        else:
            raise ValueError(
                "TOKEND_DATABASE_URL: only -c name=value settings are supported in options"
            )
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ValueError("TOKEND_DATABASE_URL: options: expected -c name=value")
        out[name.replace("-", "_")] = value
        i += 1
    return out
