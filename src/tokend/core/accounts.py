"""The person's side of sign-in, free of HTTP and SQL: the password check, browser sessions,
remembered consents, and the account page's view of the access a user has given.

Rules kept here (the pages in ``tokend.web.pages`` only carry them over HTTP):

- **Password check**: Argon2id (``argon2-cffi``). An unknown or empty username is checked
  against a dummy hash of the same cost, so the time taken does not tell which usernames
  exist; a stored hash that is not a valid Argon2 string fails like a wrong password.
  The check is two calls so that each runs where its cost belongs: ``user_named`` is a
  database read, ``check_password`` is ~50 ms of CPU and 64 MiB of memory, which the caller
  runs off its event loop under its own bound (``TOKEND_PASSWORD_HASH_CONCURRENCY``).
- **Browser sessions**: a random 256-bit id that only its holder knows; storage sees its
  SHA-256 only. A sign-in always starts a new session (no fixation) and ends the one it
  replaces. A session lasts ``session_ttl`` seconds from sign-in, by the ``Clock``.
- **Consent**: remembered per (user, client) as the union of the scopes granted; withdrawing
  it, or revoking one of the client's families, also takes back what the client was given
  (the storage does both in one transaction, see ``AccountStorage``).

Time comes from the ``Clock`` passed in; storage through the two narrow Protocols below,
which ``tokend.store`` implements structurally and ``tests/core/memory_accounts.py`` in
memory.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tokend.core.clock import Clock
from tokend.core.events import EventKind
from tokend.core.models import SecurityEvent, User
from tokend.core.secrets import hash_secret

# Verifying against this when the username is unknown costs what a real check costs: the
# default parameters, as `tokend users create` hashes passwords (argon2-cffi's defaults).
_DUMMY_HASH = PasswordHasher().hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """A signed-in browser: whose, since when (OIDC ``auth_time``), and until when."""

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


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A remembered consent: what the user allowed an application, and when."""

    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    granted_at: float


class UserDirectory(Protocol):
    def get_user_by_username(self, username: str) -> User | None:
        """The user with exactly this username, or None."""
        ...


class AccountStorage(Protocol):
    """Sessions by the SHA-256 of their id; consents and families by user."""

    def create_session(
        self, id_hash: bytes, *, user_id: str, auth_time: float, now: float, ttl: float
    ) -> None:
        """Store a session that expires at ``now + ttl``."""
        ...

    def get_session(self, id_hash: bytes, *, now: float) -> BrowserSession | None:
        """The session with this id hash if it expires after ``now``, else None."""
        ...

    def delete_session(self, id_hash: bytes) -> None:
        """Forget the session (nothing if there is none)."""
        ...

    def end_user_sessions(
        self, user_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> int:
        """Delete every session of the user and expire the authorization codes they were
        given that no client has exchanged yet; the number of sessions ended. ``event`` is
        recorded in the same transaction (its detail given the number of sessions)."""
        ...

    def get_consent(self, user_id: str, client_id: str) -> frozenset[str] | None:
        """The scopes the user allowed the client, or None if never asked or withdrawn."""
        ...

    def save_consent(
        self, user_id: str, client_id: str, scopes: tuple[str, ...], *, now: float
    ) -> None:
        """Remember the grant at ``now``; scopes granted before stay granted (union)."""
        ...

    def list_consents(self, user_id: str) -> list[ConsentView]:
        """The user's consents, newest first."""
        ...

    def withdraw_consent(
        self, user_id: str, client_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> bool:
        """Forget the consent and, in the same transaction, revoke every family of the
        client for this user, expire its codes not yet exchanged and record ``event`` (its
        detail given the number of families). False (and nothing changed, no event) if
        there was no such consent."""
        ...

    def active_families(self, user_id: str, *, now: float) -> list[FamilyView]:
        """The user's families neither revoked nor expired at ``now``, newest first."""
        ...

    def revoke_user_family(
        self, user_id: str, family_id: str, *, now: float, event: SecurityEvent | None = None
    ) -> bool:
        """Revoke the family if it is this user's (never another user's) and, in the same
        transaction, forget the consent of its client and expire that client's codes not
        yet exchanged, and record ``event`` (with the family's client) if it was live.
        True if the family was live and is now revoked."""
        ...


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    """Argon2 verification: True only for the right password of a valid hash."""
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class Accounts:
    """The accounts service the pages call (built by ``tokend.runtime``)."""

    def __init__(
        self,
        storage: AccountStorage,
        *,
        users: UserDirectory,
        clock: Clock,
        session_ttl: int,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._storage = storage
        self._users = users
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self.session_ttl = session_ttl

    # -- the password check ----------------------------------------------------------------

    def user_named(self, username: str) -> User | None:
        """The user signing in as ``username`` (a database read; None if no such user)."""
        return self._users.get_user_by_username(username) if username else None

    def check_password(self, user: User | None, password: str) -> User | None:
        """``user`` if ``password`` is theirs, else None; the same Argon2id work when
        ``user`` is None. Slow by design: run it off the event loop, bounded."""
        stored = user.password_hash if user is not None else _DUMMY_HASH
        ok = verify_password(self._hasher, stored, password)
        return user if ok else None

    # -- browser sessions ------------------------------------------------------------------

    def start_session(self, user_id: str, *, replacing: str = "") -> str:
        """Sign the user in: end the browser's session ``replacing`` (if any) and start a
        new one, authenticated now; its id, which only the browser keeps."""
        if replacing:
            self._storage.delete_session(hash_secret(replacing))
        sid = secrets.token_urlsafe(32)
        now = self._clock.now()
        self._storage.create_session(
            hash_secret(sid), user_id=user_id, auth_time=now, now=now, ttl=self.session_ttl
        )
        return sid

    def session(self, sid: str) -> BrowserSession | None:
        """The live session with this id, or None (unknown, ended or expired)."""
        return self._storage.get_session(hash_secret(sid), now=self._clock.now())

    def end_session(self, sid: str) -> None:
        """Sign this browser out."""
        self._storage.delete_session(hash_secret(sid))

    def sign_out_everywhere(self, user_id: str, *, address: str | None = None) -> int:
        """End every browser session of the user (and the codes they were given that no
        client has exchanged yet); the number of sessions ended. The applications keep the
        access the user gave them (OIDC Core §11): see ``revoke_family``. ``address``: the
        request's source address, for the security event."""
        now = self._clock.now()
        event = SecurityEvent(
            EventKind.USER_SIGNED_OUT_EVERYWHERE, now, user_id=user_id, address=address
        )
        return self._storage.end_user_sessions(user_id, now=now, event=event)

    # -- consent ---------------------------------------------------------------------------

    def consent(self, user_id: str, client_id: str) -> frozenset[str] | None:
        """The scopes the user has allowed the client (None: never asked, or withdrawn)."""
        return self._storage.get_consent(user_id, client_id)

    def save_consent(self, user_id: str, client_id: str, scopes: tuple[str, ...]) -> None:
        """The user allows the client ``scopes`` (added to what was allowed before)."""
        self._storage.save_consent(user_id, client_id, scopes, now=self._clock.now())

    def consents(self, user_id: str) -> list[ConsentView]:
        """What the user has allowed which application, newest first."""
        return self._storage.list_consents(user_id)

    def withdraw_consent(self, user_id: str, client_id: str, *, address: str | None = None) -> bool:
        """Forget the consent and revoke what the client holds for the user."""
        now = self._clock.now()
        event = SecurityEvent(
            EventKind.CONSENT_WITHDRAWN, now, client_id=client_id, user_id=user_id, address=address
        )
        return self._storage.withdraw_consent(user_id, client_id, now=now, event=event)

    # -- the applications with access ------------------------------------------------------

    def active_families(self, user_id: str) -> list[FamilyView]:
        """The grants (token families) of the user still live now, newest first."""
        return self._storage.active_families(user_id, now=self._clock.now())

    def revoke_family(self, user_id: str, family_id: str, *, address: str | None = None) -> bool:
        """Revoke one of the user's grants; its client must ask for consent again."""
        now = self._clock.now()
        event = SecurityEvent(
            EventKind.FAMILY_REVOKED_BY_USER,
            now,
            family_id=family_id,
            user_id=user_id,
            address=address,
        )
        return self._storage.revoke_user_family(user_id, family_id, now=now, event=event)
