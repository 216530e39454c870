"""``tokend events``: the security event trail (``tokend.core.events.EventKind``), oldest
of the selection first, newest last (as a log reads, and as ``tail`` would cut it).

With ``--json``, one object per line with DESIGN.md's fields::

    {"time": "2026-12-01T04:41:14.123Z", "type": "refresh_token_reuse", "client_id": ...,
     "subject": ..., "family_id": ..., "address": ..., "detail": {...}, "count": 1}

``time`` is RFC 3339 in UTC (``Z``), to the millisecond. ``subject`` is the user's id
(tokend's own subject identifier; a pairwise client knows the user by another ``sub``).
``address`` is the request's source address (``TOKEND_TRUSTED_PROXIES`` applied), null for
what an administrator did on the command line. ``count`` is how many occurrences the row
stands for: events anyone can trigger are aggregated, one row per window. No event carries
a token, a secret, a code, a password or a hash of any of them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import click

from tokend.cli.database import database_option, storage
from tokend.cli.output import emit
from tokend.core.clock import SystemClock
from tokend.core.events import EVENT_KINDS, event_object

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000_000
_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: float) -> float:
    """Unix seconds from ``--since``: a duration back from ``now`` (``90s``, ``15m``,
    ``2h``, ``7d``, ``1w``) or an RFC 3339 time with its offset (``2026-12-01T04:00:00Z``).
    ``ValueError`` for anything else (a time without an offset is ambiguous)."""
    text = value.strip()
    m = _DURATION.fullmatch(text)
    if m is not None:
        return now - int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", text):
        raise ValueError(value)
    when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    return when.timestamp()


_COLUMNS = ("time", "type", "client_id", "subject", "family_id", "address", "count", "detail")
_HEADINGS = ("TIME", "TYPE", "CLIENT", "SUBJECT", "FAMILY", "ADDRESS", "COUNT", "DETAIL")


def _cell(value: Any) -> str:
    """A printable cell: what a request put in an event (a client id, a username) could
    hold terminal escapes, so nothing unprintable reaches the operator's terminal."""
    if value is None:
        return "-"
    if isinstance(value, dict):  # json.dumps escapes control and non-ASCII characters
        return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else "-"
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def table(objects: list[dict[str, Any]]) -> list[str]:
    """The events as aligned columns for people (the detail last, unpadded)."""
    rows = [_HEADINGS, *(tuple(_cell(o[c]) for c in _COLUMNS) for o in objects)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    return [
        "  ".join([*(r[i].ljust(widths[i]) for i in range(len(widths))), r[-1]]).rstrip()
        for r in rows
    ]


@click.command()
@database_option
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice(EVENT_KINDS),
    help="Only events of this type (repeat for several).",
)
@click.option(
    "--since",
    help="Only events at or after this: an RFC 3339 time (2026-12-01T04:00:00Z) or a "
    "duration back from now (90s, 15m, 2h, 7d, 1w).",
)
@click.option(
    "--limit",
    default=DEFAULT_LIMIT,
    show_default=True,
    type=click.IntRange(1, MAX_LIMIT),
    help="Show the newest N of the selection.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def events(
    database_url: str, types: tuple[str, ...], since: str | None, limit: int, as_json: bool
) -> None:
    """The security event trail, oldest first and newest last; times in UTC."""
    since_at = None
    if since is not None:
        try:
            since_at = parse_since(since, SystemClock().now())
        except ValueError:
            raise click.BadParameter(
                "expected an RFC 3339 time with its offset (2026-12-01T04:00:00Z) "
                "or a duration (90s, 15m, 2h, 7d, 1w)",
                param_hint="--since",
            ) from None
    with storage(database_url) as db:
        rows = db.store.list_events(kinds=types, since=since_at, limit=limit)
    objects = [event_object(r) for r in rows]
    if as_json:
        for obj in objects:
            emit(obj)
    else:
        for line in table(objects):
            click.echo(line)
