"""The composition root: settings in, wired service out. Used by the web app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from tokend.config import Settings
from tokend.core.authorization import CodeIssuer
from tokend.core.clock import Clock, SystemClock
from tokend.core.dpop import DPoPNonces, ProofVerifier
from tokend.core.grants.authorization_code import AuthorizationCodeGrant
from tokend.core.grants.client_credentials import ClientCredentialsGrant
from tokend.core.grants.refresh_token import RefreshTokenGrant
from tokend.core.issuance import FamilyIssuer
from tokend.core.minting import TokenMinter
from tokend.core.models import Policy
from tokend.core.service import TokenService
from tokend.core.subjects import Subjects
from tokend.core.throttle import Throttle
from tokend.dburl import is_sqlite
from tokend.keys.material import derive
from tokend.keys.ring import KeyRing
from tokend.store import SqlStore
from tokend.store.accounts import AccountStore
from tokend.store.engine import create_db_engine, migrate


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    store: SqlStore
    keys: KeyRing
    service: TokenService
    issuer: FamilyIssuer
    clock: Clock
    subjects: Subjects
    codes: CodeIssuer
    accounts: AccountStore
    dpop: ProofVerifier
    throttle: Throttle

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.settings.database_url)

    def close(self) -> None:
        self.store.close()


def build_runtime(
    settings: Settings, *, clock: Clock | None = None, prepare: bool = False
) -> Runtime:
    """Wire everything. With ``prepare``, also migrate and make missing signing keys (what
    `tokend serve` does once before starting workers); otherwise just load the key ring."""
    clock = clock or SystemClock()
    secret = settings.resolve_secret_key()
    engine = create_db_engine(settings.database_url, pool_size=settings.db_pool_size)
    store = SqlStore(engine)
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
        keys.ensure()
    else:
        keys.load()
    policy = settings.policy()
    minter = TokenMinter(keys, policy)
    subjects = Subjects(derive(secret, "pairwise-subject"))
    issuer = FamilyIssuer(store=store, minter=minter, policy=policy)
    grants = [
        AuthorizationCodeGrant(store=store, issuer=issuer),
        RefreshTokenGrant(
            store=store,
            minter=minter,
            policy=policy,
            derivation_key=derive(secret, "refresh-token-successor"),
        ),
        ClientCredentialsGrant(store=store, minter=minter, policy=policy),
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
        accounts=AccountStore(engine),
        # Nonces always exist (a client may require them whatever TOKEND_DPOP_NONCE says);
        # whether a proof needs one is decided where the client is known.
        dpop=ProofVerifier(
            window=settings.dpop_proof_window, nonces=DPoPNonces(derive(secret, "dpop-nonce"))
        ),
        throttle=Throttle(store=store, policy=settings.throttle_policy(), clock=clock),
    )
