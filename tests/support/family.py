"""Setting up state on a real runtime, as the server itself would store it: a registered
client, a user, and the first token response of a refresh-token family (what the authorize
step would have issued); and a second runtime on the same database that requires DPoP
nonces of every client (``TOKEND_DPOP_NONCE=on``).

Everything goes through the runtime's own store and issuer: nothing here stands in for a
part of the server. The fixtures in tests/conftest.py (``make_client``, ``user``, ``issue``)
and tests/client/support.py are thin wrappers over these functions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher

from tokend.config import Settings
from tokend.core.models import Client, TokenResponse, User
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret, new_id
from tokend.runtime import Runtime, build_runtime

REDIRECT_URI = "https://app.example/cb"
ALL_GRANTS = ("authorization_code", "refresh_token", "client_credentials")
# A user who cannot sign in (no password verifies against it); for users that only own
# families. Users who sign in on the pages get a real Argon2id hash of ``cheap_password_hash``.
UNUSABLE_PASSWORD_HASH = "$argon2id$unused"
# Argon2id with the smallest cost parameters: the server verifies any valid Argon2 PHC
# string, and the default parameters cost ~50 ms (more on a busy machine) per hash and per
# sign-in. tokend's own hashes keep the default parameters and are tested as such:
# `tokend users create` (tests/test_cli.py verifies its argon2id hash) and the dummy hash
# that every sign-in of an unknown user verifies (tests/web/test_throttle.py).
_CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@dataclass
class RegisteredClient:
    client: Client
    secret: str | None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def basic(self) -> tuple[str, str]:
        assert self.secret is not None
        return (self.client_id, self.secret)


def register_client(
    rt: Runtime,
    *,
    name: str = "test client",
    public: bool = False,
    scopes: str = "openid offline email profile",
    grant_types: tuple[str, ...] = ALL_GRANTS,
    redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
    **overrides: Any,
) -> RegisteredClient:
    """A client stored through ``rt``; a confidential one has a fresh secret. A public client
    never gets client_credentials (tokend refuses to register that)."""
    secret = None if public else new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name=name,
        public=public,
        secret_hash=None if secret is None else hash_secret(secret),
        grant_types=frozenset(g for g in grant_types if not (public and g == "client_credentials")),
        redirect_uris=redirect_uris,
        scopes=tuple(scopes.split()),
        **overrides,
    )
    rt.store.create_client(client, now=rt.clock.now())
    return RegisteredClient(client, secret)


def cheap_password_hash(password: str) -> str:
    return _CHEAP.hash(password)


def register_user(
    rt: Runtime,
    *,
    username: str | None = None,
    password_hash: str = UNUSABLE_PASSWORD_HASH,
    **profile: Any,
) -> User:
    """A user stored through ``rt`` (a unique username unless one is given)."""
    user = User(
        id=new_id(),
        username=username or f"user{new_id()[:8]}",
        password_hash=password_hash,
        **profile,
    )
    rt.store.create_user(user, now=rt.clock.now())
    return user


def start_family(
    rt: Runtime,
    reg: RegisteredClient,
    user: User,
    scopes: str = "openid offline",
    *,
    now: float | None = None,
) -> TokenResponse:
    """The first token response of a new family, as if ``user`` had completed the authorize
    step for ``reg`` (the server's own issuer, subject as the client's subject type says)."""
    return rt.issuer.issue(
        client=reg.client,
        user_id=user.id,
        subject=rt.subjects.subject(reg.client, user.id),
        scopes=tuple(scopes.split()),
        now=rt.clock.now() if now is None else now,
    )


@dataclass
class Family:
    """A registered client, its user, and the first token response of their family."""

    reg: RegisteredClient
    user: User
    first: TokenResponse

    @property
    def client(self) -> Client:
        return self.reg.client

    @property
    def auth(self) -> tuple[str, str]:
        """HTTP Basic credentials of the (confidential) client."""
        return self.reg.basic

    @property
    def refresh_token(self) -> str:
        assert self.first.refresh_token is not None
        return self.first.refresh_token


def first_family(
    rt: Runtime,
    *,
    scopes: str = "openid offline",
    client_scopes: str = "openid offline",
    grant_types: tuple[str, ...] = ("refresh_token",),
    redirect_uris: tuple[str, ...] = (),
    user: User | None = None,
    **client: Any,
) -> Family:
    """Client + user + first family in one step: by default a confidential client that may
    only refresh (scopes openid and offline, no redirect URIs), a new user who cannot sign
    in, and a family of ``scopes``. ``client`` goes to :func:`register_client`."""
    reg = register_client(
        rt,
        scopes=client_scopes,
        grant_types=grant_types,
        redirect_uris=redirect_uris,
        **client,
    )
    owner = user or register_user(rt)
    return Family(reg, owner, start_family(rt, reg, owner, scopes))


@contextmanager
def nonce_runtime(rt: Runtime) -> Iterator[Runtime]:
    """A second runtime on ``rt``'s database, secret, issuer and clock that requires a
    server nonce in every DPoP proof (``TOKEND_DPOP_NONCE=on``, RFC 9449 §8); closed on
    exit. ``rt`` has made the keys already, so this one only loads them."""
    settings = Settings(
        database_url=rt.settings.database_url,
        secret_key=rt.settings.secret_key,
        issuer=rt.settings.issuer,
        dpop_nonce="on",
    )
    runtime = build_runtime(settings, clock=rt.clock)
    try:
        yield runtime
    finally:
        runtime.close()
