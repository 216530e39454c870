"""The SQLAlchemy implementation of the domain's storage Protocols, plus the admin queries
the CLI needs. Core statements built once at import (SQLAlchemy caches their compiled form);
no ORM objects on the hot path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from tokend.core.errors import TemporarilyUnavailable
from tokend.core.models import Client, Family, SecurityEvent, StoredRefreshToken
from tokend.store.schema import (
    clients,
    refresh_tokens,
    security_events,
    signing_keys,
    token_families,
    users,
)


class AlreadyExists(Exception):
    """A unique value (client id, username) is taken."""


@dataclass(frozen=True, slots=True)
class User:
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


@dataclass(frozen=True, slots=True)
class KeyRecord:
    kid: str
    alg: str
    private_key: bytes
    public_jwk: str
    created_at: float
    retired_at: float | None


rt, fam = refresh_tokens.c, token_families.c

_FIND_TOKEN = (
    select(
        rt.token_hash, rt.created_at, rt.expires_at, rt.spent_at, rt.successor_hash,
        fam.id, fam.client_id, fam.user_id, fam.subject, fam.scope,
        fam.created_at, fam.expires_at, fam.auth_time, fam.revoked_at,
    )
    .select_from(refresh_tokens.join(token_families))
    .where(rt.token_hash == bindparam("h"))
    .with_for_update(of=refresh_tokens)
)  # fmt: skip
_SPEND = (
    update(refresh_tokens)
    .where(rt.token_hash == bindparam("h"), rt.spent_at.is_(None))
    .values(spent_at=bindparam("at"), successor_hash=bindparam("succ"))
)
_INSERT_TOKEN = insert(refresh_tokens)
_IS_SPENT = select(rt.spent_at).where(rt.token_hash == bindparam("h"))
_REVOKE_FAMILY = (
    update(token_families)
    .where(fam.id == bindparam("fid"), fam.revoked_at.is_(None))
    .values(revoked_at=bindparam("at"), revoked_reason=bindparam("reason"))
)
_GET_CLIENT = select(clients).where(clients.c.client_id == bindparam("cid"))


def _client_from_row(row) -> Client:  # type: ignore[no-untyped-def]
    return Client(
        client_id=row.client_id,
        name=row.name,
        public=bool(row.public),
        secret_hash=row.secret_hash,
        grant_types=frozenset(row.grant_types.split()),
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        scopes=tuple(row.scope.split()),
        refresh_grace=row.refresh_grace,
        access_token_ttl=row.access_token_ttl,
        refresh_token_ttl=row.refresh_token_ttl,
        refresh_idle_ttl=row.refresh_idle_ttl,
        subject_type=row.subject_type,
    )


class SqlTransaction:
    """``tokend.core.ports.Transaction`` over one SQLAlchemy connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        row = self.conn.execute(_FIND_TOKEN, {"h": token_hash}).first()
        if row is None:
            return None
        (h, created, expires, spent, succ, fid, cid, uid, sub, scope, fcreated, fexp, auth,
         revoked) = row  # fmt: skip
        family = Family(fid, cid, uid, sub, tuple(scope.split()), fcreated, fexp, auth, revoked)
        return StoredRefreshToken(h, family, created, expires, spent, succ)

    def spend_refresh_token(self, token_hash: bytes, *, at: float, successor_hash: bytes) -> bool:
        result = self.conn.execute(_SPEND, {"h": token_hash, "at": at, "succ": successor_hash})
        return result.rowcount == 1

    def insert_refresh_token(
        self, token_hash: bytes, *, family_id: str, created_at: float, expires_at: float
    ) -> None:
        self.conn.execute(
            _INSERT_TOKEN,
            {
                "token_hash": token_hash,
                "family_id": family_id,
                "created_at": created_at,
                "expires_at": expires_at,
            },
        )

    def is_refresh_token_spent(self, token_hash: bytes) -> bool | None:
        row = self.conn.execute(_IS_SPENT, {"h": token_hash}).first()
        return None if row is None else row[0] is not None

    def create_family(self, family: Family) -> None:
        self.conn.execute(
            insert(token_families),
            {
                "id": family.id,
                "client_id": family.client_id,
                "user_id": family.user_id,
                "subject": family.subject,
                "scope": " ".join(family.scopes),
                "created_at": family.created_at,
                "expires_at": family.expires_at,
                "auth_time": family.auth_time,
            },
        )

    def revoke_family(self, family_id: str, *, at: float, reason: str) -> bool:
        result = self.conn.execute(_REVOKE_FAMILY, {"fid": family_id, "at": at, "reason": reason})
        return result.rowcount == 1

    def record_event(self, event: SecurityEvent) -> None:
        self.conn.execute(
            insert(security_events),
            {
                "at": event.at,
                "kind": event.kind,
                "client_id": event.client_id,
                "family_id": event.family_id,
                "user_id": event.user_id,
                "detail": json.dumps(dict(event.detail), sort_keys=True),
            },
        )


class SqlStore:
    """``tokend.core.ports.Store`` and the admin operations, over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        try:
            with self.engine.begin() as conn:
                yield SqlTransaction(conn)
        except OperationalError as exc:
            # Busy timeout exhausted, connection lost: retryable, and never shown raw.
            raise TemporarilyUnavailable(debug=str(exc.orig)) from exc

    # -- clients ---------------------------------------------------------------------------

    def get_client(self, client_id: str) -> Client | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(_GET_CLIENT, {"cid": client_id}).first()
        except OperationalError as exc:
            raise TemporarilyUnavailable(debug=str(exc.orig)) from exc
        return None if row is None else _client_from_row(row)

    def create_client(self, client: Client, *, now: float) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(clients),
                    {
                        "client_id": client.client_id,
                        "name": client.name,
                        "public": client.public,
                        "secret_hash": client.secret_hash,
                        "secret_rotated_at": None if client.public else now,
                        "grant_types": " ".join(sorted(client.grant_types)),
                        "redirect_uris": json.dumps(list(client.redirect_uris)),
                        "scope": " ".join(client.scopes),
                        "refresh_grace": client.refresh_grace,
                        "access_token_ttl": client.access_token_ttl,
                        "refresh_token_ttl": client.refresh_token_ttl,
                        "refresh_idle_ttl": client.refresh_idle_ttl,
                        "subject_type": client.subject_type,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        except IntegrityError as exc:
            raise AlreadyExists(client.client_id) from exc

    def list_clients(self) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(clients).order_by(clients.c.created_at)).all()
        return [_client_from_row(r) for r in rows]

    def count_clients(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(clients)).scalar_one()

    def delete_client(self, client_id: str) -> bool:
        with self.engine.begin() as conn:
            # Families and their refresh tokens go with it (ON DELETE CASCADE).
            return (
                conn.execute(delete(clients).where(clients.c.client_id == client_id)).rowcount == 1
            )

    def set_client_secret(self, client_id: str, secret_hash: bytes, *, now: float) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(clients)
                .where(clients.c.client_id == client_id, clients.c.public.is_(False))
                .values(secret_hash=secret_hash, secret_rotated_at=now, updated_at=now)
            )
            return result.rowcount == 1

    # -- users -----------------------------------------------------------------------------

    def create_user(self, user: User, *, now: float) -> None:
        values = {f: getattr(user, f) for f in User.__slots__}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users), {**values, "created_at": now, "updated_at": now})
        except IntegrityError as exc:
            raise AlreadyExists(user.username) from exc

    def get_user_by_username(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*(users.c[f] for f in User.__slots__)).where(users.c.username == username)
            ).first()
        return None if row is None else User(*row)

    # -- families --------------------------------------------------------------------------

    def revoke_families(
        self,
        *,
        now: float,
        reason: str,
        user_id: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
    ) -> int:
        """Set-based revocation: one UPDATE however many families match."""
        conds = [fam.revoked_at.is_(None)]
        if user_id is not None:
            conds.append(fam.user_id == user_id)
        if client_id is not None:
            conds.append(fam.client_id == client_id)
        if family_id is not None:
            conds.append(fam.id == family_id)
        if len(conds) == 1:
            raise ValueError("revoke_families needs a user, client or family")
        with self.engine.begin() as conn:
            result = conn.execute(
                update(token_families).where(*conds).values(revoked_at=now, revoked_reason=reason)
            )
            return result.rowcount

    def get_family(self, family_id: str) -> Family | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    fam.id, fam.client_id, fam.user_id, fam.subject, fam.scope,
                    fam.created_at, fam.expires_at, fam.auth_time, fam.revoked_at,
                ).where(fam.id == family_id)
            ).first()  # fmt: skip
        if row is None:
            return None
        return Family(row[0], row[1], row[2], row[3], tuple(row[4].split()), *row[5:])

    def list_events(self, kind: str | None = None) -> list[dict[str, object]]:
        stmt = select(security_events).order_by(security_events.c.id)
        if kind is not None:
            stmt = stmt.where(security_events.c.kind == kind)
        with self.engine.connect() as conn:
            return [
                {**row._asdict(), "detail": json.loads(row.detail)}
                for row in conn.execute(stmt).all()
            ]

    def gc(self, *, now: float, retention: float) -> dict[str, int]:
        """Delete what can never be valid again, once it is older than ``retention`` seconds:
        expired or revoked families (with their tokens), spent tokens of live families whose
        grace and reuse-detection value is over, and old security events."""
        cutoff = now - retention
        with self.engine.begin() as conn:
            families = conn.execute(
                delete(token_families).where((fam.expires_at < cutoff) | (fam.revoked_at < cutoff))
            ).rowcount
            tokens = conn.execute(delete(refresh_tokens).where(rt.expires_at < cutoff)).rowcount
            events = conn.execute(
                delete(security_events).where(security_events.c.at < cutoff)
            ).rowcount
        return {"families": families, "refresh_tokens": tokens, "security_events": events}

    # -- signing keys ----------------------------------------------------------------------

    def insert_key(self, record: KeyRecord, *, retire_alg: str | None = None) -> None:
        """Store a new key; retire the previous active keys of ``retire_alg`` in the same
        transaction so that exactly one key per algorithm is current."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Serialise key writers (SQLite: BEGIN IMMEDIATE already does), so that the
                # UPDATE below sees a key another process has just inserted: without it two
                # concurrent first starts leave two current keys of one algorithm.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7424052)")
            if retire_alg is not None:
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.alg == retire_alg, signing_keys.c.retired_at.is_(None))
                    .values(retired_at=record.created_at)
                )
            conn.execute(
                insert(signing_keys),
                {f: getattr(record, f) for f in KeyRecord.__slots__},
            )

    def list_keys(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*(signing_keys.c[f] for f in KeyRecord.__slots__)).order_by(
                    signing_keys.c.created_at
                )
            ).all()
        return [KeyRecord(*r) for r in rows]

    def keys_version(self) -> tuple[int, float]:
        """Cheap fingerprint of the key ring: changes whenever a key is added or retired."""
        with self.engine.connect() as conn:
            n, latest = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.max(func.coalesce(signing_keys.c.retired_at, 0.0)), 0.0)
                    + func.coalesce(func.max(signing_keys.c.created_at), 0.0),
                )
            ).one()
        return int(n), float(latest)

    def delete_keys_retired_before(self, cutoff: float) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                delete(signing_keys).where(signing_keys.c.retired_at < cutoff)
            ).rowcount

    # -- health ----------------------------------------------------------------------------

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
