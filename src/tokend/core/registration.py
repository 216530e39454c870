"""Client registration (RFC 6749 §2): the rules a client's settings must meet before it is
stored, and the client (with its one-time secret) that a valid request makes.

Pure: the caller passes the requested values, stores the result and shows the secret once.
Every refusal is a ``RegistrationError`` whose message is for the operator and whose
``field`` names the setting at fault, so a front end can point at its own option.

The rules, in the order they are checked:

- lifetimes: a reuse grace of 0 to ``MAX_REFRESH_GRACE`` seconds, token lifetimes of at
  least one second;
- grant types: known ones only (``GRANT_TYPES``; none given means
  ``DEFAULT_GRANT_TYPES``), and a public client cannot use ``client_credentials`` (RFC 6749
  §4.4: that grant is the client authenticating as itself, which a public client cannot);
  the device grant (RFC 8628) may be a public client's (a TV app, a CLI: §3.1 "public
  clients [...] identified by client_id") and needs no redirect URI;
- scope: well-formed (RFC 6749 §3.3, ``core.scopes.parse_scope``);
- redirect URIs (RFC 6749 §3.1.2): absolute, without a fragment, with a host if the scheme
  is http(s); plain http only on a loopback host (RFC 9700 §2.1, RFC 8252 §7.3); private-use
  schemes such as ``com.example.app:/cb`` (RFC 8252 §7.1) are accepted;
- subject type (OIDC Core §8): a known one, and a pairwise client's redirect URIs share one
  host (``core.subjects.check_subject_type``);
- signing algorithms of the access tokens and ID tokens (OIDC Registration §2
  ``id_token_signed_response_alg``): one of ``jose.SIGNING_ALGS`` (RS256, PS256, ES256,
  EdDSA) or none given (the server's default); never ``none`` (an unsigned token: RFC 9068
  §2.1 forbids it for access tokens, and OIDC Core §2 allows it for ID tokens only on
  request, which tokend does not take: anyone could then mint them) nor HS* (a MAC keyed
  with the client secret verifies, and so forges, with the same secret, which tokend keeps
  only as a hash).

Updates (``client_changes``) and secret rotation (``new_secret``) have rules of their own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from tokend.core.device import DEVICE_CODE_GRANT
from tokend.core.errors import InvalidScope
from tokend.core.jose import SIGNING_ALGS
from tokend.core.models import Client
from tokend.core.scopes import parse_scope
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret
from tokend.core.subjects import PUBLIC, check_subject_type

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT)
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
DEFAULT_SCOPE = "openid offline"
MAX_REFRESH_GRACE = 300  # seconds; TOKEND_REFRESH_REUSE_GRACE's per-client override
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class RegistrationError(ValueError):
    """A client setting breaks a registration rule. ``field`` is the ``Client`` attribute
    at fault (``grant_types``, ``scopes``, ``redirect_uris``, ``subject_type``, ...), or
    None when the request as a whole is at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NothingToChange(RegistrationError):
    """An update that names no setting to change."""


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """What an operator asks for. Lifetimes left ``None`` fall back to the Policy."""

    name: str
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()  # none: DEFAULT_GRANT_TYPES
    scope: str = DEFAULT_SCOPE
    public: bool = False
    refresh_grace: int | None = None
    access_token_ttl: int | None = None
    refresh_token_ttl: int | None = None
    refresh_idle_ttl: int | None = None
    subject_type: str = PUBLIC
    dpop_nonce_required: bool = False
    access_token_alg: str | None = None  # None: TOKEND_SIGNING_ALG
    id_token_alg: str | None = None  # None: RS256


@dataclass(frozen=True, slots=True)
class NewClient:
    """A registered client and its secret in plaintext (None for a public client): to be
    shown once; only ``client.secret_hash`` is stored."""

    client: Client
    secret: str | None


def register_client(request: ClientRegistration) -> NewClient:
    """A new client (fresh id, fresh secret unless public) meeting every rule, or
    ``RegistrationError`` for the first rule the request breaks."""
    check_lifetimes(
        refresh_grace=request.refresh_grace,
        access_token_ttl=request.access_token_ttl,
        refresh_token_ttl=request.refresh_token_ttl,
        refresh_idle_ttl=request.refresh_idle_ttl,
    )
    grants = check_grant_types(request.grant_types, public=request.public)
    scopes = registered_scope(request.scope)
    uris = tuple(check_redirect_uri(uri) for uri in request.redirect_uris)
    try:
        check_subject_type(request.subject_type, uris)
    except ValueError as exc:
        raise RegistrationError(str(exc), field="subject_type") from None
    access_token_alg = check_signing_alg(request.access_token_alg, field="access_token_alg")
    id_token_alg = check_signing_alg(request.id_token_alg, field="id_token_alg")
    secret = None if request.public else new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name=request.name,
        public=request.public,
        secret_hash=None if secret is None else hash_secret(secret),
        grant_types=grants,
        redirect_uris=uris,
        scopes=scopes,
        refresh_grace=request.refresh_grace,
        access_token_ttl=request.access_token_ttl,
        refresh_token_ttl=request.refresh_token_ttl,
        refresh_idle_ttl=request.refresh_idle_ttl,
        subject_type=request.subject_type,
        dpop_nonce_required=request.dpop_nonce_required,
        access_token_alg=access_token_alg,
        id_token_alg=id_token_alg,
    )
    return NewClient(client=client, secret=secret)


def check_lifetimes(
    *,
    refresh_grace: int | None,
    access_token_ttl: int | None,
    refresh_token_ttl: int | None,
    refresh_idle_ttl: int | None,
) -> None:
    if refresh_grace is not None and not 0 <= refresh_grace <= MAX_REFRESH_GRACE:
        raise RegistrationError(
            f"the refresh grace must be 0 to {MAX_REFRESH_GRACE} seconds", field="refresh_grace"
        )
    for field, ttl in (
        ("access_token_ttl", access_token_ttl),
        ("refresh_token_ttl", refresh_token_ttl),
        ("refresh_idle_ttl", refresh_idle_ttl),
    ):
        if ttl is not None and ttl < 1:
            raise RegistrationError(f"{field} must be at least 1 second", field=field)


def check_grant_types(grant_types: Collection[str], *, public: bool) -> frozenset[str]:
    """The grant types to register (``DEFAULT_GRANT_TYPES`` if none are given)."""
    grants = frozenset(grant_types or DEFAULT_GRANT_TYPES)
    unknown = grants.difference(GRANT_TYPES)
    if unknown:
        raise RegistrationError(
            f"unknown grant type {', '.join(sorted(unknown))}", field="grant_types"
        )
    if public and "client_credentials" in grants:
        raise RegistrationError("public clients cannot use client_credentials", field="grant_types")
    return grants


def registered_scope(scope: str) -> tuple[str, ...]:
    """The client's scope values (RFC 6749 §3.3 syntax), unique, in the order given."""
    try:
        return parse_scope(scope)
    except InvalidScope:
        raise RegistrationError("malformed scope", field="scopes") from None


def check_signing_alg(alg: str | None, *, field: str) -> str | None:
    """``alg`` if tokend signs with it (``SIGNING_ALGS``), or None (the server's default).
    Spelled as JWA spells it (RFC 7518 §3.1): ``rs256`` is not ``RS256``."""
    if alg is not None and alg not in SIGNING_ALGS:
        raise RegistrationError(
            f"unsupported signing algorithm {alg!r}; choose one of {', '.join(SIGNING_ALGS)}",
            field=field,
        )
    return alg


def check_redirect_uri(uri: str) -> str:
    """``uri`` if it may be registered (RFC 6749 §3.1.2, RFC 9700 §2.1)."""
    parts = urlsplit(uri)
    if (
        not parts.scheme
        or parts.fragment
        or (parts.scheme in ("http", "https") and not parts.netloc)
    ):
        raise RegistrationError(
            f"{uri!r} must be an absolute URI without a fragment", field="redirect_uris"
        )
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise RegistrationError(
            f"{uri!r}: plain http is allowed only for loopback (RFC 9700)", field="redirect_uris"
        )
    return uri


# ``client_changes``'s way of saying "back to the server's default" for an algorithm.
SERVER_DEFAULT = "default"


def client_changes(
    *,
    dpop_nonce_required: bool | None = None,
    grant_types: Collection[str] = (),
    public: bool = False,
    access_token_alg: str | None = None,
    id_token_alg: str | None = None,
) -> dict[str, object]:
    """The settings to change on a registered client (the given ones only), or
    ``NothingToChange`` if none is given. ``grant_types`` (if any) replace the client's, by
    the registration rules (``public``: the client's kind). An algorithm given as
    ``SERVER_DEFAULT`` goes back to the server's default (stored as None). Tokens already
    issued keep verifying until they expire: the old algorithm's key stays in the JWKS."""
    changes: dict[str, object] = {}
    if dpop_nonce_required is not None:
        changes["dpop_nonce_required"] = dpop_nonce_required
    if grant_types:
        changes["grant_types"] = check_grant_types(grant_types, public=public)
    for field, alg in (("access_token_alg", access_token_alg), ("id_token_alg", id_token_alg)):
        if alg is not None:
            changes[field] = None if alg == SERVER_DEFAULT else check_signing_alg(alg, field=field)
    if not changes:
        raise NothingToChange("nothing to update: give at least one setting to change")
    return changes


def new_secret(client: Client) -> tuple[str, bytes]:
    """A fresh secret for a confidential client: (plaintext, to show once; hash, to store)."""
    if client.public:
        raise RegistrationError("public clients have no secret", field="secret_hash")
    secret = new_client_secret()
    return secret, hash_secret(secret)
