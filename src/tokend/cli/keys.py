"""``tokend keys``: rotate and list the signing keys."""

from __future__ import annotations

import click

from tokend.cli.database import database_option, runtime
from tokend.cli.output import emit
from tokend.keys import SUPPORTED_ALGS


@click.group()
def keys() -> None:
    """Manage signing keys."""


@keys.command("rotate")
@database_option
@click.option("--alg", type=click.Choice(SUPPORTED_ALGS), help="Defaults to TOKEND_SIGNING_ALG.")
def keys_rotate(database_url: str, alg: str | None) -> None:
    """Make a new current key of one algorithm (TOKEND_SIGNING_ALG's, or --alg: each
    algorithm in use, the default's and the clients', has its own); the previous key of
    that algorithm stays published until the tokens it signed have expired. Running
    servers pick it up within seconds."""
    with runtime(database_url) as rt:
        record = rt.keys.rotate(alg or rt.settings.signing_alg)
    emit({"kid": record.kid, "alg": record.alg, "created_at": record.created_at})


@keys.command("list")
@database_option
def keys_list(database_url: str) -> None:
    with runtime(database_url) as rt:
        now = rt.clock.now()
        for rec in rt.store.list_keys():
            if rec.retired_at is None:
                status = "current"
            elif rec.retired_at > now - rt.keys.retention:
                status = "retired (published)"
            else:
                status = "expired"
            emit(
                {
                    "kid": rec.kid,
                    "alg": rec.alg,
                    "status": status,
                    "created_at": rec.created_at,
                    "retired_at": rec.retired_at,
                }
            )
