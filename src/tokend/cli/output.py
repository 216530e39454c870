"""How the commands print: results to stdout, as one JSON object per line (or, for
``clients create`` without ``--json``, one ``key: value`` line per field); messages and
errors to stderr."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import click

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
    """A message for the operator, on stderr."""
    click.echo(message, err=True)


def found(value: T | None, missing: str) -> T:
    """``value``, or the command ends (exit status 1) saying ``missing``."""
    if value is None:
        raise click.ClickException(missing)
    return value
