"""Value objects the domain works with. Plain, frozen, slotted: cheap to build on the hot path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client (RFC 6749 §2). Lifetimes left ``None`` fall back to the Policy."""

    client_id: str
    name: str
    public: bool
    secret_hash: bytes | None
    grant_types: frozenset[str]
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    refresh_grace: int | None = None
    access_token_ttl: int | None = None
    refresh_token_ttl: int | None = None
    refresh_idle_ttl: int | None = None
    subject_type: str = "public"
    # RFC 9449 §8: DPoP proofs of this client must carry a current server nonce.
    dpop_nonce_required: bool = False
    # JWS algorithms of this client's access tokens and ID tokens (``jose.SIGNING_ALGS``;
    # OIDC Registration §2 ``id_token_signed_response_alg``). None: the server's default,
    # TOKEND_SIGNING_ALG for access tokens, RS256 for ID tokens.
    access_token_alg: str | None = None
    id_token_alg: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The slice of configuration the domain reads (DESIGN.md, "Settings")."""

    issuer: str
    access_token_ttl: int = 3600
    client_credentials_ttl: int = 86400
    refresh_token_ttl: int = 2_592_000
    refresh_idle_ttl: int = 1_209_600
    refresh_reuse_grace: int = 10
    # Grace-window retries answered per spent token; one more is taken for reuse.
    refresh_grace_retries: int = 10
    # Events anyone can trigger are one row per key per window, with a count.
    event_aggregation_window: float = 3600.0
    audience: str | None = None
    # RFC 9449 §8: every client's DPoP proofs must carry a server nonce (TOKEND_DPOP_NONCE=on).
    dpop_nonce: bool = False

    @property
    def access_token_audience(self) -> str:
        """The ``aud`` of the access tokens we mint (RFC 9068 §3), and so the audience our
        endpoints require of one (§4): ``audience`` if configured, else the issuer."""
        return self.audience or self.issuer

    def access_ttl(self, client: Client) -> int:
        return (
            client.access_token_ttl
            if client.access_token_ttl is not None
            else self.access_token_ttl
        )

    def family_ttl(self, client: Client) -> int:
        ttl = client.refresh_token_ttl
        return ttl if ttl is not None else self.refresh_token_ttl

    def idle_ttl(self, client: Client) -> int:
        ttl = client.refresh_idle_ttl
        return ttl if ttl is not None else self.refresh_idle_ttl

    def grace(self, client: Client) -> int:
        return (
            client.refresh_grace if client.refresh_grace is not None else self.refresh_reuse_grace
        )

    def dpop_nonce_required(self, client: Client) -> bool:
        """Whether ``client``'s DPoP proofs must carry a server nonce: for every client when
        the deployment says so, else as the client's registration says."""
        return self.dpop_nonce or client.dpop_nonce_required


@dataclass(frozen=True, slots=True)
class Family:
    """One authorization (grant) and every refresh token rotated from it."""

    id: str
    client_id: str
    user_id: str
    subject: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    auth_time: float | None = None
    revoked_at: float | None = None
    # RFC 9449 §5: the JWK thumbprint a public client's refresh tokens are bound to.
    dpop_jkt: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRefreshToken:
    token_hash: bytes
    family: Family
    created_at: float
    expires_at: float
    spent_at: float | None = None
    successor_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoredCode:
    """An authorization code as stored (the code itself only as its hash)."""

    code_hash: bytes
    client_id: str
    user_id: str
    subject: str
    redirect_uri: str
    scopes: tuple[str, ...]
    nonce: str | None
    code_challenge: str | None
    auth_time: float
    created_at: float
    expires_at: float
    consumed_at: float | None = None
    family_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What the client presented to authenticate (RFC 6749 §2.3), already parsed from HTTP."""

    method: AuthMethod
    client_id: str | None
    client_secret: str | None = None


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A DPoP proof (RFC 9449) that passed ``tokend.core.dpop.ProofVerifier``: the RFC 7638
    thumbprint of its key, its row of the replay cache (§11.1: a hash of jti, htm and htu,
    kept until the proof could no longer be accepted anyway), and whether it carried a
    currently valid server nonce (§8; whether one is required is the caller's to decide)."""

    jkt: str
    replay_hash: bytes
    replay_until: float
    nonce_ok: bool = False


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A token endpoint request after HTTP parsing: single-valued, non-empty parameters,
    and the request's checked DPoP proof, if it sent one."""

    params: Mapping[str, str]
    credentials: ClientCredentials
    dpop: DPoPProof | None = None
    # The request's source address as the web layer judged it (for the security events).
    address: str | None = None


@dataclass(slots=True)
class TokenResponse:
    """RFC 6749 §5.1 successful response (the spec's field order)."""

    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    id_token: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
        }
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
        out["scope"] = self.scope
        if self.id_token is not None:
            out["id_token"] = self.id_token
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    kind: str
    at: float
    client_id: str | None = None
    family_id: str | None = None
    user_id: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)
    # The source address of the request that caused it (``TOKEND_TRUSTED_PROXIES`` applied
    # by the web layer); None for the CLI.
    address: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    """A person who signs in. ``password_hash`` is an Argon2id PHC string."""

    id: str
    username: str
    password_hash: str
    email: str | None = None
    email_verified: bool = False
    given_name: str | None = None
    family_name: str | None = None
    phone_number: str | None = None
    phone_number_verified: bool = False
    picture: str | None = None
