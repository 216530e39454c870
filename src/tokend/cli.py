"""The ``tokend`` command (DESIGN.md, "CLI contract"). JSON goes to stdout, one object per
line; messages go to stderr. The only module that imports click."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click

from tokend.config import DEFAULT_DATABASE_URL, MissingSecretKey, Settings
from tokend.core.clock import SystemClock
from tokend.core.errors import AlreadyExists, InvalidScope, TemporarilyUnavailable
from tokend.core.models import Client, User
from tokend.core.scopes import parse_scope
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret, new_id
from tokend.core.subjects import PUBLIC, SUBJECT_TYPES, check_subject_type
from tokend.keys.ring import SUPPORTED_ALGS
from tokend.runtime import Runtime, build_runtime
from tokend.store import SqlStore
from tokend.store.accounts import AccountStore
from tokend.store.engine import create_db_engine, migrate

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")


def emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, separators=(", ", ": ")))


def database_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--database-url",
        envvar="TOKEND_DATABASE_URL",
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help="SQLAlchemy URL (sqlite:///path or postgresql://user@host:port/db).",
    )(fn)


def _runtime(database_url: str, **overrides: Any) -> Runtime:
    try:
        return build_runtime(Settings(database_url=database_url, **overrides), prepare=True)
    except MissingSecretKey as exc:
        raise click.ClickException(str(exc)) from None


def _store(database_url: str) -> SqlStore:
    engine = create_db_engine(database_url)
    migrate(engine)
    return SqlStore(engine)


class _Group(click.Group):
    """Database trouble ends a command with one line on stderr, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except (OperationalError, TemporarilyUnavailable) as exc:
            detail = exc.orig if isinstance(exc, OperationalError) else exc.debug
            raise click.ClickException(f"database unavailable: {detail}") from None


@click.group(cls=_Group)
@click.version_option(package_name="tokend")
def main() -> None:
    """tokend: OpenID Connect / OAuth 2.0 token service."""


# -- serve / migrate --------------------------------------------------------------------------


@main.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TOKEND_HOST")
@click.option("--port", default=8000, show_default=True, type=int, envvar="TOKEND_PORT")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), envvar="TOKEND_WORKERS"
)
@click.option("--issuer", envvar="TOKEND_ISSUER", help="Defaults to http://HOST:PORT.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    database_url: str, host: str, port: int, workers: int, issuer: str | None, access_log: bool
) -> None:
    """Migrate, make a signing key if there is none, and serve HTTP."""
    import uvicorn

    from tokend.web.http import LimitedHttpToolsProtocol

    rt = _runtime(database_url, host=host, port=port, issuer=issuer)
    issuer_url = rt.policy.issuer
    for warning in rt.settings.startup_warnings():
        click.echo(f"tokend: WARNING: {warning}", err=True)
    if rt.store.count_clients() == 0:
        _print_next_steps(issuer_url, database_url)
    rt.close()
    os.environ.update(
        TOKEND_DATABASE_URL=database_url,
        TOKEND_HOST=host,
        TOKEND_PORT=str(port),
        TOKEND_ISSUER=issuer_url,
    )
    click.echo(f"tokend: serving {issuer_url} with {workers} worker(s)", err=True)
    uvicorn.run(
        "tokend.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=LimitedHttpToolsProtocol,  # httptools, with bounds on a request's head
        access_log=access_log,
        log_level=os.environ.get("TOKEND_LOG_LEVEL", "info"),
        server_header=False,
        date_header=True,
    )


def _cli_prefix(database_url: str) -> str:
    exe = sys.argv[0]
    cmd = "tokend" if os.path.basename(exe) == exe else shlex.quote(os.path.relpath(exe))
    if database_url != DEFAULT_DATABASE_URL:
        cmd += f" --database-url {shlex.quote(database_url)}"
    return cmd


def _print_next_steps(issuer: str, database_url: str) -> None:
    t = _cli_prefix(database_url).split(" --database-url")
    exe = t[0]
    db = f" --database-url {t[1].strip()}" if len(t) > 1 else ""
    click.echo(
        f"""
This database has no clients yet. Your first refresh, in four steps (another terminal):

  1. Register a client and keep its secret (shown once):
       {exe} clients create{db} --name demo --scope "openid offline email" --json
  2. Create a user:
       printf 'correct horse battery staple' | {exe} users create{db} alice --password-stdin
  3. Mint a token family for them, as if alice had signed in:
       {exe} tokens issue{db} --client-id CLIENT_ID --user alice --scope "openid offline"
  4. Refresh it exactly as in the spec (Basic auth, form body):
       curl -s {issuer}/auth/v2/token -u 'CLIENT_ID:CLIENT_SECRET' \\
            -d grant_type=refresh_token -d refresh_token=REFRESH_TOKEN
""",
        err=True,
    )


@main.command("migrate")
@database_option
def migrate_cmd(database_url: str) -> None:
    """Bring the database schema up to date."""
    migrate(create_db_engine(database_url))
    click.echo("tokend: database is up to date", err=True)


# -- clients ----------------------------------------------------------------------------------


@main.group()
def clients() -> None:
    """Register and manage clients."""


def _validate_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if (
        not parts.scheme
        or parts.fragment
        or (parts.scheme in ("http", "https") and not parts.netloc)
    ):
        raise click.BadParameter(f"{uri!r} must be an absolute URI without a fragment")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise click.BadParameter(f"{uri!r}: plain http is allowed only for loopback (RFC 9700)")
    return uri


def _client_json(
    client: Client, secret: str | None = None, *, full: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {"client_id": client.client_id}
    if secret is not None or not full:
        out["client_secret"] = secret
    out.update(
        grant_types=sorted(client.grant_types),
        redirect_uris=list(client.redirect_uris),
        scope=" ".join(client.scopes),
    )
    if full:
        out.pop("client_secret", None)
        out.update(
            name=client.name,
            public=client.public,
            refresh_grace=client.refresh_grace,
            access_token_ttl=client.access_token_ttl,
            refresh_token_ttl=client.refresh_token_ttl,
            refresh_idle_ttl=client.refresh_idle_ttl,
            subject_type=client.subject_type,
            dpop_nonce_required=client.dpop_nonce_required,
        )
    return out


@clients.command("create")
@database_option
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--grant-type", "grant_types", multiple=True, type=click.Choice(GRANT_TYPES))
@click.option("--scope", default="openid offline", show_default=True)
@click.option("--public", is_flag=True, help="A public client (no secret; PKCE/none auth).")
@click.option(
    "--refresh-grace", type=click.IntRange(0, 300), help="Override TOKEND_REFRESH_REUSE_GRACE."
)
@click.option("--access-token-ttl", type=click.IntRange(1))
@click.option("--refresh-token-ttl", type=click.IntRange(1))
@click.option("--refresh-idle-ttl", type=click.IntRange(1))
@click.option(
    "--subject-type",
    type=click.Choice(SUBJECT_TYPES),
    default=PUBLIC,
    show_default=True,
    help="pairwise: a per-host `sub` (OIDC Core §8.1); the redirect URIs must share one host.",
)
@click.option(
    "--dpop-nonce/--no-dpop-nonce",
    "dpop_nonce",
    default=False,
    show_default=True,
    help="Require a server nonce in this client's DPoP proofs (RFC 9449 §8); "
    "TOKEND_DPOP_NONCE=on requires one of every client.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def clients_create(
    database_url: str,
    name: str,
    redirect_uris: tuple[str, ...],
    grant_types: tuple[str, ...],
    scope: str,
    public: bool,
    refresh_grace: int | None,
    access_token_ttl: int | None,
    refresh_token_ttl: int | None,
    refresh_idle_ttl: int | None,
    subject_type: str,
    dpop_nonce: bool,
    as_json: bool,
) -> None:
    """Register a client. Its secret is shown once and stored only as a hash."""
    grants = frozenset(grant_types or DEFAULT_GRANT_TYPES)
    if public and "client_credentials" in grants:
        raise click.BadParameter(
            "public clients cannot use client_credentials", param_hint="--grant-type"
        )
    try:
        scopes = parse_scope(scope)
    except Exception:
        raise click.BadParameter("malformed scope", param_hint="--scope") from None
    uris = tuple(_validate_redirect_uri(u) for u in redirect_uris)
    try:
        check_subject_type(subject_type, uris)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--subject-type") from None
    secret = None if public else new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name=name,
        public=public,
        secret_hash=None if secret is None else hash_secret(secret),
        grant_types=grants,
        redirect_uris=uris,
        scopes=scopes,
        refresh_grace=refresh_grace,
        access_token_ttl=access_token_ttl,
        refresh_token_ttl=refresh_token_ttl,
        refresh_idle_ttl=refresh_idle_ttl,
        subject_type=subject_type,
        dpop_nonce_required=dpop_nonce,
    )
    _store(database_url).create_client(client, now=SystemClock().now())
    out = _client_json(client, secret)
    if as_json:
        emit(out)
    else:
        for key, value in out.items():
            click.echo(f"{key}: {value if not isinstance(value, list) else ' '.join(value)}")
    if secret is not None:
        click.echo("tokend: store the client secret now; it cannot be shown again.", err=True)


def _get_client(store: SqlStore, client_id: str) -> Client:
    client = store.get_client(client_id)
    if client is None:
        raise click.ClickException(f"no client {client_id!r}")
    return client


@clients.command("list")
@database_option
def clients_list(database_url: str) -> None:
    """One JSON line per client (never a secret)."""
    for client in _store(database_url).list_clients():
        emit(_client_json(client, full=True))


@clients.command("show")
@database_option
@click.argument("client_id")
def clients_show(database_url: str, client_id: str) -> None:
    emit(_client_json(_get_client(_store(database_url), client_id), full=True))


@clients.command("update")
@database_option
@click.argument("client_id")
@click.option(
    "--dpop-nonce/--no-dpop-nonce",
    "dpop_nonce",
    default=None,
    help="Require (or stop requiring) a server nonce in this client's DPoP proofs.",
)
def clients_update(database_url: str, client_id: str, dpop_nonce: bool | None) -> None:
    """Change the given settings of a client; prints the client as `clients show` does."""
    changes: dict[str, Any] = {}
    if dpop_nonce is not None:
        changes["dpop_nonce_required"] = dpop_nonce
    if not changes:
        raise click.UsageError("nothing to update: give at least one setting to change")
    client = _store(database_url).update_client(client_id, changes, now=SystemClock().now())
    if client is None:
        raise click.ClickException(f"no client {client_id!r}")
    emit(_client_json(client, full=True))


@clients.command("delete")
@database_option
@click.argument("client_id")
def clients_delete(database_url: str, client_id: str) -> None:
    """Delete a client and every token family issued to it."""
    if not _store(database_url).delete_client(client_id):
        raise click.ClickException(f"no client {client_id!r}")
    emit({"client_id": client_id, "deleted": True})


@clients.command("rotate-secret")
@database_option
@click.argument("client_id")
def clients_rotate_secret(database_url: str, client_id: str) -> None:
    """Replace a confidential client's secret; running servers stop accepting the old one
    within TOKEND_KEY_REFRESH_INTERVAL seconds (2 by default)."""
    store = _store(database_url)
    client = _get_client(store, client_id)
    if client.public:
        raise click.ClickException("public clients have no secret")
    secret = new_client_secret()
    store.set_client_secret(client_id, hash_secret(secret), now=SystemClock().now())
    emit({"client_id": client_id, "client_secret": secret})
    click.echo("tokend: store the client secret now; it cannot be shown again.", err=True)


# -- users ------------------------------------------------------------------------------------


@main.group()
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
    try:
        _store(database_url).create_user(user, now=SystemClock().now())
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
    user = _store(database_url).update_user(username, changes, now=SystemClock().now())
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    if password_stdin:
        click.echo(f"password changed: every browser session of {username!r} ended", err=True)
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


# -- tokens -----------------------------------------------------------------------------------


@main.group()
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
    rt = _runtime(database_url)
    try:
        client = _get_client(rt.store, client_id)
        user = rt.store.get_user_by_username(username)
        if user is None:
            raise click.ClickException(f"no user {username!r}")
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
    finally:
        rt.close()


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
    store = _store(database_url)
    now = SystemClock().now()
    if username is not None:
        user = store.get_user_by_username(username)
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        # Everything the user holds: their families and their browser sessions, at once (a
        # stolen session cookie would otherwise mint a new family a second later).
        n, sessions = AccountStore(store.engine).revoke_user(user.id, now=now, reason="admin")
        click.echo(f"ended {sessions} browser session(s) of {username!r}", err=True)
    else:
        n = store.revoke_families(now=now, reason="admin", client_id=client_id, family_id=family_id)
    emit({"revoked_families": n})


# -- keys -------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage signing keys."""


@keys.command("rotate")
@database_option
@click.option("--alg", type=click.Choice(SUPPORTED_ALGS), help="Defaults to TOKEND_SIGNING_ALG.")
def keys_rotate(database_url: str, alg: str | None) -> None:
    """Make a new current key; the previous key of that algorithm stays published until the
    tokens it signed have expired. Running servers pick it up within seconds."""
    rt = _runtime(database_url)
    try:
        record = rt.keys.rotate(alg or rt.settings.signing_alg)
    finally:
        rt.close()
    emit({"kid": record.kid, "alg": record.alg, "created_at": record.created_at})


@keys.command("list")
@database_option
def keys_list(database_url: str) -> None:
    rt = _runtime(database_url)
    try:
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
    finally:
        rt.close()


# -- gc ---------------------------------------------------------------------------------------


@main.command()
@database_option
@click.option(
    "--retention",
    default=86400,
    show_default=True,
    type=click.IntRange(0),
    help="Seconds to keep expired/revoked data.",
)
@click.option(
    "--event-retention",
    default=90 * 86400,
    show_default=True,
    type=click.IntRange(0),
    help="Seconds to keep security events (the audit trail).",
)
def gc(database_url: str, retention: int, event_retention: int) -> None:
    """Delete expired and revoked data older than the retention period."""
    rt = _runtime(database_url)
    try:
        now = rt.clock.now()
        out = rt.store.gc(now=now, retention=retention, event_retention=event_retention)
        out["signing_keys"] = rt.store.delete_keys_retired_before(now - rt.keys.retention)
    finally:
        rt.close()
    emit(out)


if __name__ == "__main__":
    main()
