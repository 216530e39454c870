"""``tokend tokens``: mint token families as if a user had signed in, and revoke them."""

from __future__ import annotations

from dataclasses import replace

import click

from tokend.cli.database import database_option, runtime, storage
from tokend.cli.output import emit, found, say
from tokend.core.clock import SystemClock
from tokend.core.errors import InvalidScope
from tokend.core.events import EventKind
from tokend.core.models import SecurityEvent
from tokend.core.scopes import parse_scope


@click.group()
def tokens() -> None:
    """Mint and revoke token families."""


@tokens.command("issue")
@database_option
@click.option("--client-id", required=True)
@click.option("--user", "username", required=True)
@click.option("--scope", help="Defaults to the client's registered scope.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 1_000_000))
def tokens_issue(
    database_url: str, client_id: str, username: str, scope: str | None, count: int
) -> None:
    """Mint COUNT families as if USER had signed in; one token response per line."""
    with runtime(database_url) as rt:
        client = found(rt.store.get_client(client_id), f"no client {client_id!r}")
        user = found(rt.store.get_user_by_username(username), f"no user {username!r}")
        try:
            scopes = parse_scope(scope) if scope else client.scopes
        except InvalidScope:
            raise click.BadParameter("malformed scope", param_hint="--scope") from None
        extra = [s for s in scopes if s not in client.scopes]
        if extra:
            raise click.ClickException(f"scope not allowed for this client: {' '.join(extra)}")
        try:
            subject = rt.subjects.subject(client, user.id)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        for _ in range(count):
            now = rt.clock.now()
            resp = rt.issuer.issue(
                client=client, user_id=user.id, subject=subject, scopes=scopes, now=now
            )
            emit(resp.to_dict())


@tokens.command("revoke")
@database_option
@click.option("--user", "username")
@click.option("--client-id")
@click.option("--family", "family_id")
def tokens_revoke(
    database_url: str, username: str | None, client_id: str | None, family_id: str | None
) -> None:
    """Revoke every family of a user, of a client, or one family (and their access tokens);
    --user also signs the user out of every browser session."""
    if sum(x is not None for x in (username, client_id, family_id)) != 1:
        raise click.UsageError("give exactly one of --user, --client-id, --family")
    now = SystemClock().now()
    # The security event, recorded in the revocation's transaction with how many it ended;
    # the CLI has no source address.
    selector = {"user": username} if username is not None else {}
    event = SecurityEvent(
        EventKind.TOKENS_REVOKED_BY_ADMIN,
        now,
        client_id=client_id,
        family_id=family_id,
        detail=selector,
    )
    with storage(database_url) as db:
        if username is not None:
            user = found(db.store.get_user_by_username(username), f"no user {username!r}")
            # Everything the user holds: their families and their browser sessions, at once (a
            # stolen session cookie would otherwise mint a new family a second later).
            n, sessions = db.accounts.revoke_user(
                user.id, now=now, reason="admin", event=replace(event, user_id=user.id)
            )
            say(f"ended {sessions} browser session(s) of {username!r}")
        else:
            n = db.store.revoke_families(
                now=now, reason="admin", client_id=client_id, family_id=family_id, event=event
            )
    emit({"revoked_families": n})
