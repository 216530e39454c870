"""The pure domain wired by hand over the in-memory store: no SQL, no HTTP."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from tests.core.memory_store import FakeSigner, MemoryStore
from tokend.core.clock import FrozenClock
from tokend.core.grants.client_credentials import ClientCredentialsGrant
from tokend.core.grants.refresh_token import RefreshTokenGrant
from tokend.core.issuance import FamilyIssuer
from tokend.core.minting import TokenMinter
from tokend.core.models import (
    AuthMethod,
    Client,
    ClientCredentials,
    Policy,
    TokenRequest,
    TokenResponse,
)
from tokend.core.secrets import hash_secret, new_client_secret
from tokend.core.service import TokenService

ISSUER = "https://issuer.test"
DERIVATION_KEY = b"tokend-test-derivation-key-0123456789abcdef"
MINUTE = 60
HOUR = 3600
DAY = 86400

# Distinct values, so a test catches one lifetime used in place of another.
POLICY_DEFAULTS: dict[str, Any] = {
    "access_token_ttl": 15 * MINUTE,
    "client_credentials_ttl": 2 * HOUR,
    "refresh_token_ttl": 30 * DAY,
    "refresh_idle_ttl": 7 * DAY,
    "refresh_reuse_grace": 10,
}
ALL_GRANTS = frozenset({"authorization_code", "refresh_token", "client_credentials"})
FULL_SCOPE = "openid offline profile email"


def expected_at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6, written out: base64url(left 128 bits of SHA-256(ASCII(token)))."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")


@dataclass(frozen=True)
class Registered:
    """A registered client and its plaintext secret (None for a public client)."""

    client: Client
    secret: str | None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    def credentials(self, method: AuthMethod | None = None) -> ClientCredentials:
        """How this client authenticates: basic if it has a secret, else ``none``."""
        if method is None:
            method = "none" if self.secret is None else "client_secret_basic"
        secret = None if method == "none" else self.secret
        return ClientCredentials(method, self.client_id, secret)


class World:
    """One token service: store, clock, policy, signer, grants, issuer, and three clients.

    ``web`` and ``other`` are confidential clients, ``spa`` a public one.
    """

    def __init__(self, signer: FakeSigner, clock: FrozenClock, **policy: Any) -> None:
        self.signer = signer
        self.clock = clock
        self.policy = Policy(issuer=ISSUER, **{**POLICY_DEFAULTS, **policy})
        self.store = MemoryStore()
        self.minter = TokenMinter(signer, self.policy)
        self.refresh_grant = RefreshTokenGrant(
            store=self.store,
            minter=self.minter,
            policy=self.policy,
            derivation_key=DERIVATION_KEY,
        )
        self.cc_grant = ClientCredentialsGrant(minter=self.minter, policy=self.policy)
        self.service = TokenService(
            store=self.store, grants=[self.refresh_grant, self.cc_grant], clock=clock
        )
        self.issuer = FamilyIssuer(store=self.store, minter=self.minter, policy=self.policy)
        self.web = self.register("web")
        self.other = self.register("other")
        self.spa = self.register(
            "spa", public=True, grant_types=frozenset({"authorization_code", "refresh_token"})
        )

    # -- setup -----------------------------------------------------------------------------

    def register(
        self,
        client_id: str,
        *,
        public: bool = False,
        grant_types: frozenset[str] = ALL_GRANTS,
        scopes: str = FULL_SCOPE + " offline_access api:read api:write",
        **overrides: Any,
    ) -> Registered:
        secret = None if public else new_client_secret()
        client = Client(
            client_id=client_id,
            name=f"{client_id} client",
            public=public,
            secret_hash=None if secret is None else hash_secret(secret),
            grant_types=grant_types,
            redirect_uris=("https://app.example/cb",),
            scopes=tuple(scopes.split()),
            **overrides,
        )
        self.store.add_client(client)
        return Registered(client, secret)

    def start(
        self,
        reg: Registered | None = None,
        scope: str = FULL_SCOPE,
        *,
        user_id: str = "user-1",
        subject: str = "alice",
        auth_time: float | None = None,
        nonce: str | None = None,
    ) -> TokenResponse:
        """A new family, as if the user had just completed the authorize step."""
        return self.issuer.issue(
            client=(reg or self.web).client,
            user_id=user_id,
            subject=subject,
            scopes=tuple(scope.split()),
            now=self.clock.now(),
            auth_time=auth_time,
            nonce=nonce,
        )

    # -- requests --------------------------------------------------------------------------

    def token(
        self,
        reg: Registered,
        params: dict[str, str],
        credentials: ClientCredentials | None = None,
    ) -> TokenResponse:
        """One token endpoint request, as the web layer would hand it to the core."""
        creds = credentials or reg.credentials()
        return self.service.token(TokenRequest(params=params, credentials=creds))

    def refresh(
        self, refresh_token: str, reg: Registered | None = None, *, scope: str | None = None
    ) -> TokenResponse:
        params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope is not None:
            params["scope"] = scope
        return self.token(reg or self.web, params)

    # -- reading tokens --------------------------------------------------------------------

    def access_claims(self, response: TokenResponse) -> dict[str, Any]:
        return self.signer.decode(
            response.access_token,
            audience=self.policy.audience or self.policy.issuer,
            issuer=self.policy.issuer,
        )

    def id_claims(self, response: TokenResponse, client_id: str) -> dict[str, Any]:
        assert response.id_token is not None
        return self.signer.decode(response.id_token, audience=client_id, issuer=ISSUER)
