"""The composition root: settings in, wired service out. Used by the web app and the CLI.

This is the one module outside ``tokend.store`` that names a concrete store class
(``SqlStore``, ``AccountStore``; tests/test_architecture.py checks it). What it hands out is
typed by Protocols: each service declares the storage it needs (``core.ports.Store``,
``core.throttle.CounterStore``, ``core.accounts.AccountStorage``, ``keys.storage.KeyStorage``,
...), and ``AdminStore`` below is what the web app's lifecycle and the CLI reach directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import OperationalError

from tokend.config import GC_EVENT_RETENTION, GC_RETENTION, Settings
from tokend.core.accounts import Accounts
from tokend.core.authorization import CodeIssuer
from tokend.core.clock import Clock, SystemClock
from tokend.core.device import DeviceFlow
from tokend.core.dpop import DPoPNonces, ProofVerifier
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.grants import Grant
from tokend.core.grants.authorization_code import AuthorizationCodeGrant
from tokend.core.grants.client_credentials import ClientCredentialsGrant
from tokend.core.grants.device_code import DeviceCodeGrant
from tokend.core.grants.refresh_token import RefreshTokenGrant
from tokend.core.introspection import IntrospectionService
from tokend.core.issuance import FamilyIssuer
from tokend.core.minting import TokenMinter
from tokend.core.models import Client, Policy, SecurityEvent, User
from tokend.core.ports import Store
from tokend.core.revocation import RevocationService
from tokend.core.service import TokenService
from tokend.core.subjects import Subjects
from tokend.core.throttle import Throttle
from tokend.core.userinfo import UserInfoService
from tokend.dburl import is_sqlite
from tokend.keys.material import derive
from tokend.keys.ring import KeyRing
from tokend.keys.storage import KeyStorage
from tokend.store import SqlStore
from tokend.store.accounts import AccountStore
from tokend.store.engine import create_db_engine, create_hot_engine, migrate

# Re-exported for the server's sweep (tokend.web.sweep), which may not import store/.
from tokend.store.leases import new_holder_id as new_holder_id
from tokend.store.maintenance import GC_BATCH as GC_BATCH


class AdminStore(Store, KeyStorage, Protocol):
    """The database as the runtime's users reach it outside the services: the web app's
    lifecycle (health, the client cache, SQLite checkpoints), the userinfo endpoint's DPoP
    replay cache, and the CLI's administration of clients, users, families and garbage."""

    def ping(self) -> None: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...
    def start_checkpointer(self, **options: Any) -> bool: ...
    def enable_client_cache(self) -> None: ...
    def refresh_client_cache(self) -> bool: ...
    def invalidate_client_cache(self) -> None: ...
    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool: ...
    def create_client(self, client: Client, *, now: float) -> None: ...
    def list_clients(self) -> list[Client]: ...
    def count_clients(self) -> int: ...
    def signing_algs_in_use(self) -> frozenset[str]: ...
    def delete_client(self, client_id: str) -> bool: ...
    def set_client_secret(
        self,
        client_id: str,
        secret_hash: bytes,
        *,
        now: float,
        event: SecurityEvent | None = None,
    ) -> bool: ...
    def update_client(
        self, client_id: str, changes: dict[str, Any], *, now: float
    ) -> Client | None: ...
    def create_user(self, user: User, *, now: float) -> None: ...
    def get_user_by_username(self, username: str) -> User | None: ...
    def update_user(self, username: str, changes: dict[str, Any], *, now: float) -> User | None: ...
    def revoke_families(
        self,
        *,
        now: float,
        reason: str,
        user_id: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
        event: SecurityEvent | None = None,
    ) -> int: ...
    def list_events(
        self,
        kind: str | None = None,
        *,
        kinds: Sequence[str] = (),
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, object]]: ...
    def gc(
        self,
        *,
        now: float,
        retention: float,
        event_retention: float | None = None,
        batch: int = ...,
        keep_going: Callable[[], bool] | None = None,
    ) -> dict[str, int]: ...
    def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool: ...
    def release_lease(self, name: str, holder: str) -> bool: ...
    # The events webhook's cursor (store/cursors.py).
    def start_cursor(self, name: str, *, now: float) -> int: ...
    def move_cursor(self, name: str, position: int, *, expected: int, now: float) -> bool: ...
    def events_after(self, position: int, *, limit: int) -> list[dict[str, Any]]: ...
    def newest_event_id(self) -> int: ...


class UserRevocation(Protocol):
    def revoke_user(
        self, user_id: str, *, now: float, reason: str, event: SecurityEvent | None = None
    ) -> tuple[int, int]:
        """Revoke every family of the user and end their browser sessions (one transaction,
        with ``event``); returns (families revoked, sessions ended)."""
        ...


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    store: AdminStore
    keys: KeyRing
    service: TokenService
    issuer: FamilyIssuer
    clock: Clock
    subjects: Subjects
    codes: CodeIssuer
    accounts: Accounts
    dpop: ProofVerifier
    throttle: Throttle
    # The services behind the web endpoints other than the token endpoint (``service``).
    introspection: IntrospectionService
    revocation: RevocationService
    userinfo: UserInfoService
    # RFC 8628 device authorizations and the login page's cross-device sign-in.
    device: DeviceFlow

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.settings.database_url)

    def close(self) -> None:
        self.store.close()

    async def aclose(self) -> None:
        """Close what belongs to the event loop (the asyncpg engine's connections), then
        everything (a server's lifespan)."""
        await self.store.aclose()
        self.close()


def build_runtime(
    settings: Settings, *, clock: Clock | None = None, prepare: bool = False
) -> Runtime:
    """Wire everything. With ``prepare``, also migrate and make missing signing keys (what
    `tokend serve` does once before starting workers); otherwise just load the key ring."""
    clock = clock or SystemClock()
    secret = settings.resolve_secret_key()
    engine = create_db_engine(settings.database_url, pool_size=settings.db_pool_size)
    # PostgreSQL: the endpoints' engine (asyncpg on the event loop; tokend.web.offload)
    hot = create_hot_engine(settings.database_url, pool_size=settings.db_pool_size)
    store = SqlStore(engine, hot=hot)
    if prepare:
        migrate(engine)
    keys = KeyRing(
        store,
        master_secret=secret,
        clock=clock,
        access_token_alg=settings.signing_alg,
        retention=settings.key_retention,
    )
    if prepare:
        keys.ensure(store.signing_algs_in_use())  # the clients' algorithms too
    else:
        keys.load()
    policy = settings.policy()
    minter = TokenMinter(keys, policy)
    subjects = Subjects(derive(secret, "pairwise-subject"))
    issuer = FamilyIssuer(store=store, minter=minter, policy=policy)
    grants: list[Grant] = [
        AuthorizationCodeGrant(store=store, issuer=issuer),
        RefreshTokenGrant(
            store=store,
            minter=minter,
            policy=policy,
            derivation_key=derive(secret, "refresh-token-successor"),
        ),
        ClientCredentialsGrant(store=store, minter=minter, policy=policy),
        DeviceCodeGrant(store=store, issuer=issuer, subjects=subjects),
    ]
    return Runtime(
        settings=settings,
        policy=policy,
        store=store,
        keys=keys,
        service=TokenService(store=store, grants=grants, clock=clock, policy=policy),
        issuer=issuer,
        clock=clock,
        subjects=subjects,
        codes=CodeIssuer(store),
        accounts=Accounts(
            AccountStore(store.engines),
            users=store,
            clock=clock,
            session_ttl=settings.session_ttl,
        ),
        # Nonces always exist (a client may require them whatever TOKEND_DPOP_NONCE says);
        # whether a proof needs one is decided where the client is known.
        dpop=ProofVerifier(
            window=settings.dpop_proof_window, nonces=DPoPNonces(derive(secret, "dpop-nonce"))
        ),
        throttle=Throttle(store=store, policy=settings.throttle_policy(), clock=clock),
        introspection=IntrospectionService(store=store, verifier=keys, policy=policy, clock=clock),
        revocation=RevocationService(
            store=store,
            verifier=keys,
            policy=policy,
            clock=clock,
            event_window=settings.event_aggregation_window,
        ),
        userinfo=UserInfoService(verifier=keys, store=store, policy=policy, clock=clock),
        device=DeviceFlow(
            store,
            clock=clock,
            user_code_key=derive(secret, "device-user-code"),
            ttl=settings.device_code_ttl,
        ),
    )


def collect_garbage(
    rt: Runtime,
    *,
    retention: float = GC_RETENTION,
    event_retention: float = GC_EVENT_RETENTION,
    batch: int = GC_BATCH,
    keep_going: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """What `tokend gc` and the server's sweep (``TOKEND_GC_INTERVAL``) delete, in batches
    (``SqlStore.gc``), and the signing keys retired past their retention."""
    now = rt.clock.now()
    out = rt.store.gc(
        now=now,
        retention=retention,
        event_retention=event_retention,
        batch=batch,
        keep_going=keep_going,
    )
    out["signing_keys"] = rt.store.delete_keys_retired_before(now - rt.keys.retention)
    return out


# -- for the CLI's commands that need no secret key ----------------------------------------


@dataclass
class Storage:
    """The database alone, its schema up to date: what the admin commands that need no
    secret key (clients, users, revocation) work on."""

    store: AdminStore
    accounts: UserRevocation

    def close(self) -> None:
        self.store.close()


def open_storage(database_url: str) -> Storage:
    """Migrate the database at ``database_url`` and open its stores."""
    engine = create_db_engine(database_url)
    migrate(engine)
    return Storage(store=SqlStore(engine), accounts=AccountStore(engine))


def migrate_database(database_url: str) -> None:
    """Bring the schema of the database at ``database_url`` up to date."""
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def database_unavailable(exc: BaseException) -> str | None:
    """What went wrong, if ``exc`` says the database cannot be reached or used; else None."""
    if isinstance(exc, OperationalError):
        return str(exc.orig)
    if isinstance(exc, TemporarilyUnavailable):
        return str(exc.debug)
    return None
