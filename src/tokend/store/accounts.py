"""Storage for the browser side of sign-in: sessions, remembered consents, and the account
page's view of a user's token families. SQLAlchemy Core; none of it is on the token hot path.
``AccountStore`` implements ``tokend.core.accounts.AccountStorage`` (the accounts service's
Protocol), and a little more for the CLI and maintenance (``revoke_user``,
``delete_expired_sessions``).

What ends what (each in one transaction):
- ``end_user_sessions`` (sign out everywhere; and, through ``end_sessions``, a password change
  and ``tokens revoke --user``): every browser session of the user, and the authorization
  codes they were given that no client has exchanged yet (a code minted from a stolen
  session a second before must not become a refresh token a second after).
- ``revoke_user_family`` (Revoke on /account): the family, and the consent of its client, so
  the application must ask again; ``withdraw_consent``: the consent and every family of the
  client for this user.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from tokend import metrics
from tokend.core.accounts import BrowserSession, ConsentView, FamilyView
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.models import SecurityEvent
from tokend.store.connections import Engines, unavailable
from tokend.store.events import recording
from tokend.store.schema import (
    authorization_codes,
    browser_sessions,
    clients,
    consents,
    refresh_tokens,
    token_families,
    users,
)


def end_sessions(conn: Connection, user_id: str, *, now: float) -> int:
    """Within the caller's transaction: delete every browser session of the user and expire
    the user's authorization codes not yet exchanged; the number of sessions ended."""
    _expire_codes(conn, user_id, now=now)
    return conn.execute(
        delete(browser_sessions).where(browser_sessions.c.user_id == user_id)
    ).rowcount


def _expire_codes(
    conn: Connection, user_id: str, *, now: float, client_id: str | None = None
) -> None:
    ac = authorization_codes.c
    where = [ac.user_id == user_id, ac.consumed_at.is_(None), ac.expires_at > now]
    if client_id is not None:
        where.append(ac.client_id == client_id)
    conn.execute(update(authorization_codes).where(*where).values(expires_at=now))


class AccountStore:
    """Over an engine, or the store's ``Engines`` (a PostgreSQL server's: asyncpg inside
    greenlets, ``tokend.store.connections``)."""

    def __init__(self, engines: Engine | Engines) -> None:
        self._engines = engines if isinstance(engines, Engines) else Engines(engines)

    @property
    def engine(self) -> Engine:
        return self._engines.current()

    @contextmanager
    def _conn(self, *, write: bool) -> Iterator[Connection]:
        try:
            if write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect().execution_options(tokend_read=True) as conn:
                    yield conn
        except DBAPIError as exc:
            if not unavailable(exc):
                raise
            metrics.database_error("transaction" if write else "read")
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

    def end_user_sessions(
        self, user_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> int:
        """Sign the user out everywhere (see ``end_sessions``); ``event`` recorded with it."""
        with recording(self._conn(write=True)) as trail:
            ended = end_sessions(trail.conn, user_id, now=now)
            trail.record(event, detail={"sessions": ended})
            return ended

    def revoke_user(
        self, user_id: str, *, now: float, reason: str, event: SecurityEvent | None = None
    ) -> tuple[int, int]:
        """Everything the user holds, at once: their token families and browser sessions;
        (families revoked, sessions ended). ``event`` is recorded with the counts."""
        f = token_families.c
        with recording(self._conn(write=True)) as trail:
            families = trail.conn.execute(
                update(token_families)
                .where(f.user_id == user_id, f.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            ).rowcount
            sessions = end_sessions(trail.conn, user_id, now=now)
            trail.record(event, detail={"families": families, "sessions": sessions})
            return families, sessions

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

    def list_consents(self, user_id: str) -> list[ConsentView]:
        c = consents.c
        with self._conn(write=False) as conn:
            rows = conn.execute(
                select(c.client_id, clients.c.name, c.scope, c.granted_at)
                .select_from(consents.join(clients))
                .where(c.user_id == user_id)
                .order_by(c.granted_at.desc(), c.client_id)
            ).all()
        return [ConsentView(cid, name, tuple(scope.split()), at) for cid, name, scope, at in rows]

    def withdraw_consent(
        self, user_id: str, client_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> bool:
        """Forget what the user allowed the client, and take back what it was given: every
        family of the client for this user, and the codes not yet exchanged. False if there
        was no such consent (nothing is changed, nor ``event`` recorded, then)."""
        c, f = consents.c, token_families.c
        with recording(self._conn(write=True)) as trail:
            conn = trail.conn
            deleted = conn.execute(
                delete(consents).where(c.user_id == user_id, c.client_id == client_id)
            ).rowcount
            if not deleted:
                return False
            families = conn.execute(
                update(token_families)
                .where(f.user_id == user_id, f.client_id == client_id, f.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason="user")
            ).rowcount
            _expire_codes(conn, user_id, now=now, client_id=client_id)
            trail.record(event, detail={"families": families})
        metrics.families_revoked("user", families)  # committed
        return True

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

    def revoke_user_family(
        self, user_id: str, family_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> bool:
        """Revoke one of *this user's* families (never another user's), and withdraw the
        consent of its client: the application signed out must ask again before it gets
        another code (OIDC Core §11: offline access rests on that consent). ``event`` (with
        the family's client filled in) is recorded if the family was live."""
        f = token_families.c
        with recording(self._conn(write=True)) as trail:
            conn = trail.conn
            client_id = conn.execute(
                select(f.client_id).where(f.id == family_id, f.user_id == user_id)
            ).scalar()
            if client_id is None:
                return False
            result = conn.execute(
                update(token_families)
                .where(f.id == family_id, f.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason="user")
            )
            conn.execute(
                delete(consents).where(
                    consents.c.user_id == user_id, consents.c.client_id == client_id
                )
            )
            _expire_codes(conn, user_id, now=now, client_id=client_id)
            if result.rowcount == 1:
                trail.record(event, client_id=client_id)
        metrics.families_revoked("user", result.rowcount)  # committed
        return result.rowcount == 1
