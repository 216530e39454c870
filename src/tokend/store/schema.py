"""Tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` are the source of truth for
the database; ``tests/store/test_migrations.py`` checks they match this metadata.

Times are seconds since the epoch (double precision): no time zone work on the hot path.
Secrets (refresh tokens, client secrets) appear only as SHA-256 hashes; private keys only
encrypted (``tokend.keys``); passwords only as Argon2id hashes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

Time = Float(precision=53)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("public", Boolean, nullable=False),
    Column("secret_hash", LargeBinary(32)),
    Column("secret_rotated_at", Time),
    Column("grant_types", Text, nullable=False),  # space-separated
    Column("redirect_uris", Text, nullable=False),  # JSON array
    Column("scope", Text, nullable=False),  # space-separated
    Column("refresh_grace", Integer),
    Column("access_token_ttl", Integer),
    Column("refresh_token_ttl", Integer),
    Column("refresh_idle_ttl", Integer),
    Column("subject_type", String(16), nullable=False),
    # RFC 9449 §8: this client's DPoP proofs must carry a server nonce (TOKEND_DPOP_NONCE=on
    # requires one of every client whatever this says).
    Column("dpop_nonce_required", Boolean, nullable=False, server_default=false()),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    # JWS algorithms of this client's access and ID tokens; NULL: the server's default
    # (TOKEND_SIGNING_ALG; RS256 for ID tokens).
    Column("access_token_alg", String(16)),
    Column("id_token_alg", String(16)),
)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(255), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("email", String(320)),
    Column("email_verified", Boolean, nullable=False),
    Column("given_name", String(200)),
    Column("family_name", String(200)),
    Column("phone_number", String(64)),
    Column("phone_number_verified", Boolean, nullable=False),
    Column("picture", Text),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
)

token_families = Table(
    "token_families",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "client_id",
        String(64),
        ForeignKey("clients.client_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column(
        "user_id",
        String(32),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("subject", String(255), nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
    Column("auth_time", Time),
    Column("revoked_at", Time),
    Column("revoked_reason", String(64)),
    # RFC 9449 §5: a public client's refresh tokens are bound to this DPoP key thumbprint.
    Column("dpop_jkt", String(64)),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column(
        "family_id",
        String(32),
        ForeignKey("token_families.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False),
    Column("spent_at", Time),
    Column("successor_hash", LargeBinary(32)),
    # Grace-window retries answered with this (spent) token's successor: bounded.
    Column("grace_uses", Integer, nullable=False, server_default=text("0")),
)

security_events = Table(
    "security_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Time, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("client_id", String(64)),
    Column("family_id", String(32)),
    Column("user_id", String(32)),
    Column("detail", Text, nullable=False),  # JSON object
    # Occurrences this row stands for: events anyone can trigger are aggregated per window
    # (``abuse_counters.event_id``), so a flood adds to a count, not rows.
    Column("count", Integer, nullable=False, server_default=text("1")),
    Column("address", String(64)),  # the source address of the request, where there was one
    Index("ix_security_events_at", "at"),
    Index("ix_security_events_kind_at", "kind", "at"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("private_key", LargeBinary, nullable=False),  # AES-GCM(nonce || ciphertext) of PKCS#8
    Column("public_jwk", Text, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("retired_at", Time),
)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_hash", LargeBinary(32), primary_key=True),
    Column(
        "client_id",
        String(64),
        ForeignKey("clients.client_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column(
        "user_id",
        String(32),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("subject", String(255), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("nonce", Text),
    Column("code_challenge", String(128)),
    Column("auth_time", Time, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
    Column("consumed_at", Time),
    Column("family_id", String(32)),  # no FK: the family may be gone, the replay rule stays
)

consents = Table(
    "consents",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "client_id",
        String(64),
        ForeignKey("clients.client_id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("scope", Text, nullable=False),
    Column("granted_at", Time, nullable=False),
)

browser_sessions = Table(
    "browser_sessions",
    metadata,
    Column("id_hash", LargeBinary(32), primary_key=True),
    Column(
        "user_id",
        String(32),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("auth_time", Time, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
)

# RFC 7009 §2.2: a revoked access token (a JWT, otherwise valid until ``exp``) is kept on
# this deny list until it would have expired anyway.
revoked_access_tokens = Table(
    "revoked_access_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("revoked_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
)

# RFC 9449 §11.1: DPoP proof ``jti`` replay cache, shared by every process through the
# database (the key is a hash of the jti, bound to htm+htu); rows expire with the proof window.
dpop_proofs = Table(
    "dpop_proofs",
    metadata,
    Column("jti_hash", LargeBinary(32), primary_key=True),
    Column("expires_at", Time, nullable=False, index=True),
)

# Abuse limits (``tokend.core.throttle``), shared by every process: failed authentications
# per (client|username, source address) and per address, and the aggregation windows of
# security events anyone can trigger. Keys are SHA-256 digests; a row is dead once its
# window has ended (``tokend gc`` deletes it).
abuse_counters = Table(
    "abuse_counters",
    metadata,
    Column("key_hash", LargeBinary(32), primary_key=True),
    Column("window_end", Time, nullable=False, index=True),
    Column("hits", Integer, nullable=False),
    Column("event_id", Integer),  # the security_events row counting this window (no FK)
)

# Work that one process of many does at a time (the periodic gc sweep, event delivery): the
# holder of an unexpired lease does it; a crashed holder's lease runs out.
leases = Table(
    "leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Time, nullable=False),
)

# How far a reader of an append-only table has got: the events webhook's position in
# ``security_events`` (the id of the last event delivered; tokend.store.cursors).
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", Time, nullable=False),
)

# RFC 8628 device authorizations, and Didit's cross-device sign-in on the same rows
# (``kind`` = "device" for a device that polls the token endpoint, "browser" for a pending
# browser authorization that a second device completes). Both codes are stored only as
# hashes: ``device_code_hash`` is SHA-256 of a 256-bit secret (the device's, or the waiting
# browser's cookie); ``user_code_hash`` is keyed (the user code has ~35 bits, too few for a
# plain digest). ``request_hash`` binds a "browser" row to the one authorization request it
# was made for. ``status``: pending, approved, denied, redeemed.
device_authorizations = Table(
    "device_authorizations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("device_code_hash", LargeBinary(32), nullable=False, unique=True),
    Column("user_code_hash", LargeBinary(32), nullable=False, unique=True),
    Column(
        "client_id",
        String(64),
        ForeignKey("clients.client_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("kind", String(16), nullable=False),
    Column("scope", Text, nullable=False),
    Column("request_hash", LargeBinary(32)),
    Column("address", String(64)),
    Column("status", String(16), nullable=False),
    Column("interval", Integer, nullable=False),
    Column("last_polled_at", Time),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True),
    Column("auth_time", Time),
    Column("decided_at", Time),
    Column("family_id", String(32)),  # no FK: the family may be gone, the replay rule stays
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
)
