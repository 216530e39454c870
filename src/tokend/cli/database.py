"""The ``--database-url`` option every command takes, and the two ways a command opens the
database, both through ``tokend.runtime``: the whole runtime (needs the secret key: keys,
tokens, gc, serve) or the storage alone (clients, users, revocation)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from tokend.config import DEFAULT_DATABASE_URL, MissingSecretKey, Settings
from tokend.runtime import Runtime, Storage, build_runtime, open_storage


def database_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--database-url",
        envvar="TOKEND_DATABASE_URL",
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help="SQLAlchemy URL (sqlite:///path or postgresql://user@host:port/db).",
    )(fn)


@contextmanager
def runtime(database_url: str, **overrides: Any) -> Iterator[Runtime]:
    """The runtime, prepared as `tokend serve` prepares it (migrated, a signing key made if
    there is none); closed on leaving."""
    try:
        rt = build_runtime(Settings(database_url=database_url, **overrides), prepare=True)
    except MissingSecretKey as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield rt
    finally:
        rt.close()


@contextmanager
def storage(database_url: str) -> Iterator[Storage]:
    """The stores alone, migrated; closed on leaving."""
    opened = open_storage(database_url)
    try:
        yield opened
    finally:
        opened.close()
