"""The ``tokend`` command (DESIGN.md, "CLI contract"). JSON goes to stdout, one object per
line; messages go to stderr. The only package that imports click.

One module per command group: ``serve`` (and its first-run hints), ``clients``, ``users``,
``tokens``, ``keys``, ``maintenance`` (migrate, gc), ``events`` (the security event trail);
``output`` prints, ``database`` opens
the database through ``tokend.runtime`` (the CLI imports no store).
"""

from __future__ import annotations

from typing import Any

import click

from tokend.cli.clients import clients
from tokend.cli.events import events
from tokend.cli.keys import keys
from tokend.cli.maintenance import gc, migrate_cmd
from tokend.cli.serve import serve
from tokend.cli.tokens import tokens
from tokend.cli.users import users
from tokend.runtime import database_unavailable


class _Group(click.Group):
    """Database trouble ends a command with one line on stderr, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            detail = database_unavailable(exc)
            if detail is None:
                raise
            raise click.ClickException(f"database unavailable: {detail}") from None


@click.group(cls=_Group)
@click.version_option(package_name="tokend")
def main() -> None:
    """tokend: OpenID Connect / OAuth 2.0 token service."""


for command in (serve, migrate_cmd, clients, users, tokens, keys, gc, events):
    main.add_command(command)

__all__ = ["main"]
