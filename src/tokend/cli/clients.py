"""``tokend clients``: register, list, show, update, delete clients and rotate their
secrets. The rules a client must meet are the domain's (``tokend.core.registration``);
this module turns options into a request and a refusal into a usage error."""

from __future__ import annotations

from typing import Any

import click

from tokend.cli.database import database_option, storage
from tokend.cli.output import SECRET_SHOWN_ONCE, emit, emit_fields, found, say
from tokend.core.clock import SystemClock
from tokend.core.events import EventKind
from tokend.core.jose import SIGNING_ALGS
from tokend.core.models import Client, SecurityEvent
from tokend.core.registration import (
    DEFAULT_SCOPE,
    GRANT_TYPES,
    MAX_REFRESH_GRACE,
    SERVER_DEFAULT,
    ClientRegistration,
    NothingToChange,
    RegistrationError,
    client_changes,
    new_secret,
    register_client,
)
from tokend.core.subjects import PUBLIC, SUBJECT_TYPES

# The option a refused setting came from. A refused redirect URI names itself in the message
# and has never been given a hint (the message reads "Invalid value: '<uri>' ...").
_OPTIONS = {
    "grant_types": "--grant-type",
    "scopes": "--scope",
    "subject_type": "--subject-type",
    "refresh_grace": "--refresh-grace",
    "access_token_ttl": "--access-token-ttl",
    "refresh_token_ttl": "--refresh-token-ttl",
    "refresh_idle_ttl": "--refresh-idle-ttl",
    "access_token_alg": "--access-token-alg",
    "id_token_alg": "--id-token-alg",
}

_ACCESS_TOKEN_ALG_HELP = (
    "JWS algorithm of this client's access tokens (default: TOKEND_SIGNING_ALG). "
    "Every resource server of the client must accept it."
)
_ID_TOKEN_ALG_HELP = (
    "JWS algorithm of this client's ID tokens (OIDC id_token_signed_response_alg; "
    "default: RS256, what every relying party supports)."
)


def _refused(exc: RegistrationError) -> click.UsageError:
    if isinstance(exc, NothingToChange):
        return click.UsageError(str(exc))
    return click.BadParameter(str(exc), param_hint=_OPTIONS.get(exc.field or ""))


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
    # null: the server's default (TOKEND_SIGNING_ALG; RS256 for ID tokens). The contract's
    # create output names them only when the client was given one.
    for field in ("access_token_alg", "id_token_alg"):
        alg = getattr(client, field)
        if full or alg is not None:
            out[field] = alg
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


def _no_client(client_id: str) -> str:
    return f"no client {client_id!r}"


@click.group()
def clients() -> None:
    """Register and manage clients."""


@clients.command("create")
@database_option
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--grant-type", "grant_types", multiple=True, type=click.Choice(GRANT_TYPES))
@click.option("--scope", default=DEFAULT_SCOPE, show_default=True)
@click.option("--public", is_flag=True, help="A public client (no secret; PKCE/none auth).")
@click.option(
    "--refresh-grace",
    type=click.IntRange(0, MAX_REFRESH_GRACE),
    help="Override TOKEND_REFRESH_REUSE_GRACE.",
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
@click.option("--access-token-alg", type=click.Choice(SIGNING_ALGS), help=_ACCESS_TOKEN_ALG_HELP)
@click.option("--id-token-alg", type=click.Choice(SIGNING_ALGS), help=_ID_TOKEN_ALG_HELP)
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
    access_token_alg: str | None,
    id_token_alg: str | None,
    as_json: bool,
) -> None:
    """Register a client. Its secret is shown once and stored only as a hash."""
    request = ClientRegistration(
        name=name,
        redirect_uris=redirect_uris,
        grant_types=grant_types,
        scope=scope,
        public=public,
        refresh_grace=refresh_grace,
        access_token_ttl=access_token_ttl,
        refresh_token_ttl=refresh_token_ttl,
        refresh_idle_ttl=refresh_idle_ttl,
        subject_type=subject_type,
        dpop_nonce_required=dpop_nonce,
        access_token_alg=access_token_alg,
        id_token_alg=id_token_alg,
    )
    try:
        new = register_client(request)
    except RegistrationError as exc:
        raise _refused(exc) from None
    with storage(database_url) as db:
        db.store.create_client(new.client, now=SystemClock().now())
    out = _client_json(new.client, new.secret)
    if as_json:
        emit(out)
    else:
        emit_fields(out)
    if new.secret is not None:
        say(SECRET_SHOWN_ONCE)


@clients.command("list")
@database_option
def clients_list(database_url: str) -> None:
    """One JSON line per client (never a secret)."""
    with storage(database_url) as db:
        for client in db.store.list_clients():
            emit(_client_json(client, full=True))


@clients.command("show")
@database_option
@click.argument("client_id")
def clients_show(database_url: str, client_id: str) -> None:
    with storage(database_url) as db:
        client = found(db.store.get_client(client_id), _no_client(client_id))
    emit(_client_json(client, full=True))


@clients.command("update")
@database_option
@click.argument("client_id")
@click.option(
    "--dpop-nonce/--no-dpop-nonce",
    "dpop_nonce",
    default=None,
    help="Require (or stop requiring) a server nonce in this client's DPoP proofs.",
)
@click.option(
    "--grant-type",
    "grant_types",
    multiple=True,
    type=click.Choice(GRANT_TYPES),
    help="Replace the client's grant types (repeat the option for several).",
)
@click.option(
    "--access-token-alg",
    type=click.Choice((*SIGNING_ALGS, SERVER_DEFAULT)),
    help=f"{_ACCESS_TOKEN_ALG_HELP} {SERVER_DEFAULT!r}: back to the server's default.",
)
@click.option(
    "--id-token-alg",
    type=click.Choice((*SIGNING_ALGS, SERVER_DEFAULT)),
    help=f"{_ID_TOKEN_ALG_HELP} {SERVER_DEFAULT!r}: back to the server's default.",
)
def clients_update(
    database_url: str,
    client_id: str,
    dpop_nonce: bool | None,
    grant_types: tuple[str, ...],
    access_token_alg: str | None,
    id_token_alg: str | None,
) -> None:
    """Change the given settings of a client; prints the client as `clients show` does.
    A new signing algorithm applies to the tokens issued from then on (running servers
    pick it up within TOKEND_KEY_REFRESH_INTERVAL seconds and make its key if there is
    none); tokens issued before keep verifying until they expire."""
    with storage(database_url) as db:
        current = found(db.store.get_client(client_id), _no_client(client_id))
        try:
            changes = client_changes(
                dpop_nonce_required=dpop_nonce,
                grant_types=grant_types,
                public=current.public,
                access_token_alg=access_token_alg,
                id_token_alg=id_token_alg,
            )
        except RegistrationError as exc:
            raise _refused(exc) from None
        client = db.store.update_client(client_id, changes, now=SystemClock().now())
    emit(_client_json(found(client, _no_client(client_id)), full=True))


@clients.command("delete")
@database_option
@click.argument("client_id")
def clients_delete(database_url: str, client_id: str) -> None:
    """Delete a client and every token family issued to it."""
    with storage(database_url) as db:
        if not db.store.delete_client(client_id):
            raise click.ClickException(_no_client(client_id))
    emit({"client_id": client_id, "deleted": True})


@clients.command("rotate-secret")
@database_option
@click.argument("client_id")
def clients_rotate_secret(database_url: str, client_id: str) -> None:
    """Replace a confidential client's secret; running servers stop accepting the old one
    within TOKEND_KEY_REFRESH_INTERVAL seconds (2 by default)."""
    with storage(database_url) as db:
        client = found(db.store.get_client(client_id), _no_client(client_id))
        try:
            secret, secret_hash = new_secret(client)
        except RegistrationError as exc:
            raise click.ClickException(str(exc)) from None
        now = SystemClock().now()
        db.store.set_client_secret(
            client_id,
            secret_hash,
            now=now,
            event=SecurityEvent(EventKind.CLIENT_SECRET_ROTATED, now, client_id=client_id),
        )
    emit({"client_id": client_id, "client_secret": secret})
    say(SECRET_SHOWN_ONCE)
