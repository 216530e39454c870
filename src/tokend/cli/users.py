"""``tokend users``: create users and change their profile or password."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click

from tokend.cli.database import database_option, storage
from tokend.cli.output import emit, found, say
from tokend.core.clock import SystemClock
from tokend.core.errors import AlreadyExists
from tokend.core.models import User
from tokend.core.secrets import new_id


@click.group()
def users() -> None:
    """Manage users."""


def _profile_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Printable text; ``--picture`` an absolute http(s) URL, ``--email`` an address."""
    if not value:  # None: not given; "": clear the field (users update)
        return value
    if not value.isprintable() or value != value.strip():
        raise click.BadParameter("must be printable text without outer spaces")
    if param.name == "picture":
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise click.BadParameter(f"{value!r} must be an absolute http(s) URL")
    if param.name == "email":
        local, at, domain = value.rpartition("@")
        if not (at and local and domain) or " " in value:
            raise click.BadParameter(f"{value!r} is not an email address")
    return value


def profile_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The user's profile fields (served by the UserInfo endpoint)."""
    for name, help_ in reversed(
        [
            ("--email", "Email address (scope email)."),
            ("--given-name", "First name (scopes names, profile)."),
            ("--family-name", "Last name (scopes names, profile)."),
            ("--phone-number", "Phone number, E.164 recommended: +14155550100 (scope phone)."),
            ("--picture", "URL of a profile picture (scopes picture, profile)."),
        ]
    ):
        fn = click.option(name, callback=_profile_text, help=help_)(fn)
    return fn


def _read_password() -> str:
    from argon2 import PasswordHasher

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("empty password on stdin")
    return PasswordHasher().hash(password)


@users.command("create")
@database_option
@click.argument("username")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from stdin.")
@profile_options
@click.option("--email-verified", is_flag=True)
@click.option("--phone-verified", is_flag=True)
def users_create(
    database_url: str,
    username: str,
    password_stdin: bool,
    email: str | None,
    given_name: str | None,
    family_name: str | None,
    phone_number: str | None,
    picture: str | None,
    email_verified: bool,
    phone_verified: bool,
) -> None:
    """Create a user; the password (first line of stdin) is stored as an Argon2id hash."""
    if not username.strip() or username != username.strip() or not username.isprintable():
        raise click.BadParameter(
            "must be non-empty printable text without outer spaces", param_hint="USERNAME"
        )
    user = User(
        id=new_id(),
        username=username,
        password_hash=_read_password(),
        email=email or None,
        email_verified=email_verified,
        given_name=given_name or None,
        family_name=family_name or None,
        phone_number=phone_number or None,
        phone_number_verified=phone_verified,
        picture=picture or None,
    )
    with storage(database_url) as db:
        try:
            db.store.create_user(user, now=SystemClock().now())
        except AlreadyExists:
            raise click.ClickException(f"user {username!r} already exists") from None
    emit({"id": user.id, "username": username, "email": user.email})


@users.command("update")
@database_option
@click.argument("username")
@profile_options
@click.option("--email-verified/--no-email-verified", default=None)
@click.option("--phone-verified/--no-phone-verified", default=None)
@click.option("--password-stdin", is_flag=True, help="Read a new password from stdin.")
def users_update(
    database_url: str,
    username: str,
    email_verified: bool | None,
    phone_verified: bool | None,
    password_stdin: bool,
    **profile: str | None,
) -> None:
    """Change the given fields of a user (an empty value clears a field); prints the profile."""
    changes: dict[str, Any] = {k: v or None for k, v in profile.items() if v is not None}
    if email_verified is not None:
        changes["email_verified"] = email_verified
    if phone_verified is not None:
        changes["phone_number_verified"] = phone_verified
    if not changes and not password_stdin:
        raise click.UsageError("nothing to update: give at least one field to change")
    if password_stdin:
        changes["password_hash"] = _read_password()
    with storage(database_url) as db:
        updated = db.store.update_user(username, changes, now=SystemClock().now())
    user = found(updated, f"no user {username!r}")
    if password_stdin:
        say(f"password changed: every browser session of {username!r} ended")
    emit(
        {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "email_verified": user.email_verified,
            "given_name": user.given_name,
            "family_name": user.family_name,
            "phone_number": user.phone_number,
            "phone_number_verified": user.phone_number_verified,
            "picture": user.picture,
        }
    )
