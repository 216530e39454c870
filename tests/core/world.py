"""The pure domain wired by hand over the in-memory store: no SQL, no HTTP."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from tests.core.memory_store import FakeSigner, MemoryStore
from tokend.core import pkce
from tokend.core.authorization import AuthorizationRequest, CodeIssuer, validate
from tokend.core.clock import FrozenClock
from tokend.core.grants.authorization_code import AuthorizationCodeGrant
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
REDIRECT_URI = "https://app.example/cb"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
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
        self.cc_grant = ClientCredentialsGrant(
            store=self.store, minter=self.minter, policy=self.policy
        )
        self.service = TokenService(
            store=self.store,
            grants=[self.refresh_grant, self.cc_grant],
            clock=clock,
            policy=self.policy,
        )
        self.issuer = FamilyIssuer(store=self.store, minter=self.minter, policy=self.policy)
        # The sign-in side: codes, and the service with every grant as tokend.runtime wires
        # it (``service`` above keeps the two grants the token-endpoint tests were written for).
        self.codes = CodeIssuer(self.store)
        self.code_grant = AuthorizationCodeGrant(store=self.store, issuer=self.issuer)
        self.full_service = TokenService(
            store=self.store,
            grants=[self.code_grant, self.refresh_grant, self.cc_grant],
            clock=clock,
            policy=self.policy,
        )
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
        redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
        **overrides: Any,
    ) -> Registered:
        secret = None if public else new_client_secret()
        client = Client(
            client_id=client_id,
            name=f"{client_id} client",
            public=public,
            secret_hash=None if secret is None else hash_secret(secret),
            grant_types=grant_types,
            redirect_uris=redirect_uris,
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

    # -- sign-in (authorize, code, exchange) ------------------------------------------------

    def authorize(
        self, reg: Registered | None = None, scope: str = FULL_SCOPE, **params: str | None
    ) -> AuthorizationRequest:
        """A validated authorization request; ``params`` override the defaults (None drops
        one). A public client sends the RFC 7636 Appendix B challenge by default."""
        reg = reg or self.web
        query: dict[str, str | None] = {
            "response_type": "code",
            "client_id": reg.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": "st-1",
            "nonce": "n-1",
        }
        if reg.client.public:
            query |= {"code_challenge": CHALLENGE, "code_challenge_method": pkce.S256}
        query |= params
        pairs = [(k, v) for k, v in query.items() if v is not None]
        return validate(pairs, self.store.get_client)

    def code(
        self,
        request: AuthorizationRequest | None = None,
        *,
        user_id: str = "user-1",
        subject: str = "alice",
        auth_time: float | None = None,
    ) -> str:
        """A code for ``request``, as if the user had signed in (at ``auth_time``) and
        consented now."""
        now = self.clock.now()
        return self.codes.issue(
            request or self.authorize(),
            user_id=user_id,
            subject=subject,
            auth_time=now if auth_time is None else auth_time,
            now=now,
        )

    def exchange(
        self,
        reg: Registered,
        code: str,
        *,
        redirect_uri: str | None = REDIRECT_URI,
        verifier: str | None = None,
        credentials: ClientCredentials | None = None,
    ) -> TokenResponse:
        """``grant_type=authorization_code`` at the token endpoint."""
        params = {"grant_type": "authorization_code", "code": code}
        if redirect_uri is not None:
            params["redirect_uri"] = redirect_uri
        if verifier is not None:
            params["code_verifier"] = verifier
        creds = credentials or reg.credentials()
        return self.full_service.token(TokenRequest(params=params, credentials=creds))

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
