"""Storage for the browser side of sign-in: sessions, remembered consents, and the account
page's view of a user's token families. SQLAlchemy Core; none of it is on the token hot path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from tokend.core.errors import TemporarilyUnavailable
from tokend.store.schema import (
    browser_sessions,
    clients,
    consents,
    refresh_tokens,
    token_families,
    users,
)


@dataclass(frozen=True, slots=True)
class BrowserSession:
    user_id: str
    username: str
    auth_time: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class FamilyView:
    """One row of the account page: an application the user granted access to."""

    family_id: str
    client_id: str
    client_name: str
    scope: str
    granted_at: float
    last_used_at: float
    expires_at: float


class AccountStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _conn(self, *, write: bool) -> Iterator[Connection]:
        try:
            if write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect().execution_options(tokend_read=True) as conn:
                    yield conn
        except OperationalError as exc:
            raise TemporarilyUnavailable(debug=str(exc.orig)) from exc

    # -- sessions --------------------------------------------------------------------------

    def create_session(
        self, id_hash: bytes, *, user_id: str, auth_time: float, now: float, ttl: float
    ) -> None:
        with self._conn(write=True) as conn:
            conn.execute(
                insert(browser_sessions),
                {
                    "id_hash": id_hash,
                    "user_id": user_id,
                    "auth_time": auth_time,
                    "created_at": now,
                    "expires_at": now + ttl,
                },
            )

    def get_session(self, id_hash: bytes, *, now: float) -> BrowserSession | None:
        s = browser_sessions.c
        with self._conn(write=False) as conn:
            row = conn.execute(
                select(s.user_id, users.c.username, s.auth_time, s.expires_at)
                .select_from(browser_sessions.join(users))
                .where(s.id_hash == id_hash, s.expires_at > now)
            ).first()
        return None if row is None else BrowserSession(*row)

    def delete_session(self, id_hash: bytes) -> None:
        with self._conn(write=True) as conn:
            conn.execute(delete(browser_sessions).where(browser_sessions.c.id_hash == id_hash))

    def delete_expired_sessions(self, *, now: float) -> int:
        with self._conn(write=True) as conn:
            return conn.execute(
                delete(browser_sessions).where(browser_sessions.c.expires_at <= now)
            ).rowcount

    # -- consents --------------------------------------------------------------------------

    def get_consent(self, user_id: str, client_id: str) -> frozenset[str] | None:
        c = consents.c
        with self._conn(write=False) as conn:
            scope = conn.execute(
                select(c.scope).where(c.user_id == user_id, c.client_id == client_id)
            ).scalar()
        return None if scope is None else frozenset(scope.split())

    def save_consent(
        self, user_id: str, client_id: str, scopes: tuple[str, ...], *, now: float
    ) -> None:
        """Remember the grant; scopes granted before stay granted (union)."""
        c = consents.c
        where = (c.user_id == user_id, c.client_id == client_id)
        with self._conn(write=True) as conn:
            old = conn.execute(select(c.scope).where(*where)).scalar()
            if old is None:
                try:
                    conn.execute(
                        insert(consents),
                        {
                            "user_id": user_id,
                            "client_id": client_id,
                            "scope": " ".join(scopes),
                            "granted_at": now,
                        },
                    )
                    return
                except IntegrityError:  # a concurrent first consent; merge below
                    old = conn.execute(select(c.scope).where(*where)).scalar() or ""
            merged = list(dict.fromkeys([*old.split(), *scopes]))
            conn.execute(
                update(consents).where(*where).values(scope=" ".join(merged), granted_at=now)
            )

    # -- the account page ------------------------------------------------------------------

    def active_families(self, user_id: str, *, now: float) -> list[FamilyView]:
        f, rt = token_families.c, refresh_tokens.c
        last_used = select(func.max(rt.created_at)).where(rt.family_id == f.id).scalar_subquery()
        with self._conn(write=False) as conn:
            rows = conn.execute(
                select(
                    f.id,
                    f.client_id,
                    clients.c.name,
                    f.scope,
                    f.created_at,
                    func.coalesce(last_used, f.created_at),
                    f.expires_at,
                )
                .select_from(token_families.join(clients))
                .where(f.user_id == user_id, f.revoked_at.is_(None), f.expires_at > now)
                .order_by(f.created_at.desc())
            ).all()
        return [FamilyView(*r) for r in rows]

    def revoke_user_family(self, user_id: str, family_id: str, *, now: float) -> bool:
        """Revoke one of *this user's* families (never another user's)."""
        f = token_families.c
        with self._conn(write=True) as conn:
            result = conn.execute(
                update(token_families)
                .where(f.id == family_id, f.user_id == user_id, f.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason="user")
            )
            return result.rowcount == 1
