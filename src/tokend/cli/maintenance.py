"""Upkeep of the database: ``tokend migrate`` and ``tokend gc``."""

from __future__ import annotations

import click

from tokend.cli.database import database_option, runtime
from tokend.cli.output import emit, say
from tokend.config import GC_EVENT_RETENTION, GC_RETENTION
from tokend.runtime import collect_garbage, migrate_database


@click.command("migrate")
@database_option
def migrate_cmd(database_url: str) -> None:
    """Bring the database schema up to date."""
    migrate_database(database_url)
    say("tokend: database is up to date")


@click.command()
@database_option
@click.option(
    "--retention",
    default=GC_RETENTION,
    show_default=True,
    type=click.IntRange(0),
    help="Seconds to keep expired/revoked data.",
)
@click.option(
    "--event-retention",
    default=GC_EVENT_RETENTION,
    show_default=True,
    type=click.IntRange(0),
    help="Seconds to keep security events (the audit trail).",
)
def gc(database_url: str, retention: int, event_retention: int) -> None:
    """Delete expired and revoked data older than the retention period."""
    with runtime(database_url) as rt:
        out = collect_garbage(rt, retention=retention, event_retention=event_retention)
    emit(out)
