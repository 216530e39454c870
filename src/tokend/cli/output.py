"""How the commands print: results to stdout, as one JSON object per line (or, for
``clients create`` without ``--json``, one ``key: value`` line per field); messages and
errors to stderr. `tokend serve` with ``TOKEND_LOG_FORMAT=json`` makes its messages and
errors log records instead (``reported_as_log_records``), so that each is a JSON line."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, TypeVar

import click

from tokend.runtime import database_unavailable

T = TypeVar("T")

SECRET_SHOWN_ONCE = "tokend: store the client secret now; it cannot be shown again."


def emit(obj: dict[str, Any]) -> None:
    """One result: a JSON object on one line of stdout."""
    click.echo(json.dumps(obj, separators=(", ", ": ")))


def emit_fields(obj: dict[str, Any]) -> None:
    """One result for people: ``key: value`` per line, a list as its space-separated items."""
    for key, value in obj.items():
        click.echo(f"{key}: {value if not isinstance(value, list) else ' '.join(value)}")


def say(message: str) -> None:
    """A message for the operator, on stderr (or a log record: ``reported_as_log_records``)."""
    if _records is not None:
        _records.info(message.removeprefix("tokend: ").strip())
    else:
        click.echo(message, err=True)


def warn(message: str) -> None:
    """A warning for the operator: ``tokend: WARNING: message`` on stderr, or a record."""
    if _records is not None:
        _records.warning(message)
    else:
        click.echo(f"tokend: WARNING: {message}", err=True)


_records: logging.Logger | None = None


@contextlib.contextmanager
def reported_as_log_records(enabled: bool) -> Iterator[None]:
    """When ``enabled``, for the rest of the process: ``say`` and ``warn`` write records of
    the ``tokend.serve`` logger, and what would end the command with click's ``Error: ...``
    inside this block (a missing secret key, an unreachable database) is an error record
    and exit status 1 (anything else goes on to ``sys.excepthook``, which logs it)."""
    global _records
    if not enabled:
        yield
        return
    _records = log = logging.getLogger("tokend.serve")
    try:
        yield
    except click.ClickException as exc:
        log.error(exc.format_message())
        sys.exit(exc.exit_code)
    except Exception as exc:
        detail = database_unavailable(exc)
        if detail is None:
            raise
        log.error("database unavailable: %s", detail)
        sys.exit(1)


def found(value: T | None, missing: str) -> T:
    """``value``, or the command ends (exit status 1) saying ``missing``."""
    if value is None:
        raise click.ClickException(missing)
    return value
