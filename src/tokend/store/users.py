"""Users: the admin CRUD the CLI uses, and UserInfo's read of a family with its user.
(Browser sessions and consents are ``tokend.store.accounts``.)"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from tokend.core.errors import AlreadyExists
from tokend.core.models import Family, User
from tokend.store.accounts import end_sessions
from tokend.store.connections import Database
from tokend.store.schema import users
from tokend.store.statements import USER_COLUMNS, family_and_user_from_row, user_from_row


class Users(Database):
    def create_user(self, user: User, *, now: float) -> None:
        values = {f: getattr(user, f) for f in User.__slots__}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users), {**values, "created_at": now, "updated_at": now})
        except IntegrityError as exc:
            raise AlreadyExists(user.username) from exc

    def get_user_by_username(self, username: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(select(*USER_COLUMNS).where(users.c.username == username)).first()
        return None if row is None else user_from_row(row)

    def get_user(self, user_id: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(select(*USER_COLUMNS).where(users.c.id == user_id)).first()
        return None if row is None else user_from_row(row)

    def get_family_and_user(self, family_id: str) -> tuple[Family, User | None] | None:
        """The family (revoked or not) and its user (None if deleted), in one read at
        driver level (the UserInfo endpoint's hot path); None for an unknown family."""
        row = self._read_row(self._q.get_family_user, {"fid": family_id})
        return None if row is None else family_and_user_from_row(row)

    def update_user(self, username: str, changes: dict[str, Any], *, now: float) -> User | None:
        """Set the given fields (any of ``User``'s but ``id`` and ``username``) of the user;
        the updated user, or None if there is no such user. A new password ends every
        browser session of the user in the same transaction (``accounts.end_sessions``):
        whoever signed in with the old one, or stole a session cookie, is signed out."""
        unknown = set(changes) - (set(User.__slots__) - {"id", "username"})
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        where = users.c.username == username
        with self.engine.begin() as conn:
            if conn.execute(update(users).where(where).values(**changes, updated_at=now)).rowcount:
                user = user_from_row(conn.execute(select(*USER_COLUMNS).where(where)).one())
                if "password_hash" in changes:
                    end_sessions(conn, user.id, now=now)
                return user
        return None
