"""In-memory reference implementation of the accounts service's storage
(``tokend.core.accounts.AccountStorage`` and ``UserDirectory``), for its unit tests.

It keeps the contract the SQL store keeps (``tokend.store.accounts``): sessions by id hash
and live only before their expiry; consent as a union of scopes; withdrawing a consent
revokes the client's families of the user, revoking a family forgets its client's consent;
both, and ending a user's sessions, expire the codes not yet exchanged (recorded in
``expired_codes`` as (user, client or None for all, at)).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tokend.core.accounts import BrowserSession, ConsentView, FamilyView
from tokend.core.models import SecurityEvent, User


@dataclass(frozen=True)
class SessionRow:
    user_id: str
    auth_time: float
    expires_at: float


@dataclass(frozen=True)
class FamilyRow:
    family_id: str
    user_id: str
    client_id: str
    scope: str
    granted_at: float
    expires_at: float
    revoked_at: float | None = None


class MemoryAccounts:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}  # by username
        self.client_names: dict[str, str] = {}
        self.sessions: dict[bytes, SessionRow] = {}
        self.consents: dict[tuple[str, str], ConsentView] = {}
        self.families: dict[str, FamilyRow] = {}
        self.expired_codes: list[tuple[str, str | None, float]] = []
        self.events: list[SecurityEvent] = []  # recorded with the change they describe

    # -- set-up helpers for tests ----------------------------------------------------------

    def add_user(self, user: User) -> None:
        self.users[user.username] = user

    def add_family(self, row: FamilyRow, client_name: str = "App") -> None:
        self.client_names.setdefault(row.client_id, client_name)
        self.families[row.family_id] = row

    # -- UserDirectory ---------------------------------------------------------------------

    def get_user_by_username(self, username: str) -> User | None:
        return self.users.get(username)

    # -- AccountStorage --------------------------------------------------------------------

    def create_session(
        self, id_hash: bytes, *, user_id: str, auth_time: float, now: float, ttl: float
    ) -> None:
        assert id_hash not in self.sessions  # a primary key
        self.sessions[id_hash] = SessionRow(user_id, auth_time, now + ttl)

    def get_session(self, id_hash: bytes, *, now: float) -> BrowserSession | None:
        row = self.sessions.get(id_hash)
        if row is None or row.expires_at <= now:
            return None
        username = next(u.username for u in self.users.values() if u.id == row.user_id)
        return BrowserSession(row.user_id, username, row.auth_time, row.expires_at)

    def delete_session(self, id_hash: bytes) -> None:
        self.sessions.pop(id_hash, None)

    def end_user_sessions(
        self, user_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> int:
        self.expired_codes.append((user_id, None, now))
        ended = [h for h, row in self.sessions.items() if row.user_id == user_id]
        for h in ended:
            del self.sessions[h]
        if event is not None:
            self.events.append(replace(event, detail={**event.detail, "sessions": len(ended)}))
        return len(ended)

    def get_consent(self, user_id: str, client_id: str) -> frozenset[str] | None:
        consent = self.consents.get((user_id, client_id))
        return None if consent is None else frozenset(consent.scopes)

    def save_consent(
        self, user_id: str, client_id: str, scopes: tuple[str, ...], *, now: float
    ) -> None:
        old = self.consents.get((user_id, client_id))
        merged = tuple(dict.fromkeys([*(old.scopes if old else ()), *scopes]))
        name = self.client_names.get(client_id, client_id)
        self.consents[(user_id, client_id)] = ConsentView(client_id, name, merged, now)

    def list_consents(self, user_id: str) -> list[ConsentView]:
        mine = [c for (uid, _), c in self.consents.items() if uid == user_id]
        return sorted(mine, key=lambda c: (-c.granted_at, c.client_id))

    def withdraw_consent(
        self, user_id: str, client_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> bool:
        if self.consents.pop((user_id, client_id), None) is None:
            return False
        revoked = 0
        for f in list(self.families.values()):
            if f.user_id == user_id and f.client_id == client_id and f.revoked_at is None:
                self.families[f.family_id] = replace(f, revoked_at=now)
                revoked += 1
        self.expired_codes.append((user_id, client_id, now))
        if event is not None:
            self.events.append(replace(event, detail={**event.detail, "families": revoked}))
        return True

    def active_families(self, user_id: str, *, now: float) -> list[FamilyView]:
        live = [
            f
            for f in self.families.values()
            if f.user_id == user_id and f.revoked_at is None and f.expires_at > now
        ]
        live.sort(key=lambda f: -f.granted_at)
        return [
            FamilyView(
                f.family_id,
                f.client_id,
                self.client_names[f.client_id],
                f.scope,
                f.granted_at,
                f.granted_at,
                f.expires_at,
            )
            for f in live
        ]

    def revoke_user_family(
        self, user_id: str, family_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> bool:
        f = self.families.get(family_id)
        if f is None or f.user_id != user_id:
            return False
        self.consents.pop((user_id, f.client_id), None)
        self.expired_codes.append((user_id, f.client_id, now))
        if f.revoked_at is not None:
            return False
        self.families[family_id] = replace(f, revoked_at=now)
        if event is not None:
            self.events.append(replace(event, client_id=f.client_id))
        return True
