"""The accounts service (tokend.core.accounts) over the in-memory storage: the password check
gives nothing away about which usernames exist, sessions are stored by hash only and end
with the clock, sign-in replaces the browser's session, and consent and grants end together.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import pytest
from argon2 import PasswordHasher

from tests.core.memory_accounts import FamilyRow, MemoryAccounts
from tokend.core.accounts import Accounts, BrowserSession
from tokend.core.clock import FrozenClock
from tokend.core.models import User

TTL = 12 * 3600
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery staple"


class RecordingHasher(PasswordHasher):
    """A real Argon2 hasher that remembers which hashes it verified against."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


class CountingDirectory(MemoryAccounts):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def get_user_by_username(self, username: str) -> User | None:
        self.lookups += 1
        return super().get_user_by_username(username)


@pytest.fixture
def storage() -> CountingDirectory:
    return CountingDirectory()


@pytest.fixture
def hasher() -> RecordingHasher:
    return RecordingHasher()


@pytest.fixture
def accounts(storage: CountingDirectory, clock: FrozenClock, hasher: RecordingHasher) -> Accounts:
    return Accounts(storage, users=storage, clock=clock, session_ttl=TTL, hasher=hasher)


def make_user(storage: MemoryAccounts, name: str = "alice", password: str = PASSWORD) -> User:
    user = User(id=f"id-{name}", username=name, password_hash=FAST.hash(password))
    storage.add_user(user)
    return user


def sign_in(accounts: Accounts, username: str, password: str) -> User | None:
    return accounts.check_password(accounts.user_named(username), password)


def _parameters(phc: str) -> str:
    """``$argon2id$v=19$m=...,t=...,p=...``: the part of a PHC string that sets the cost."""
    return "$".join(phc.split("$")[:4])


# -- the password check ------------------------------------------------------------------------


def test_the_right_password_signs_the_user_in(accounts: Accounts, storage: Any) -> None:
    user = make_user(storage)
    assert sign_in(accounts, "alice", PASSWORD) == user


def test_unknown_user_and_wrong_password_both_run_argon2(
    accounts: Accounts, storage: Any, hasher: RecordingHasher
) -> None:
    user = make_user(storage)
    assert sign_in(accounts, "alice", "wrong") is None
    assert hasher.verified == [user.password_hash]
    assert sign_in(accounts, "mallory", PASSWORD) is None
    assert len(hasher.verified) == 2
    dummy = hasher.verified[1]
    assert dummy != user.password_hash
    # The dummy costs what a real hash made by `tokend users create` costs.
    assert _parameters(dummy) == _parameters(PasswordHasher().hash("x"))
    assert dummy.startswith("$argon2id$")


def test_an_empty_username_is_not_looked_up_but_still_costs_a_check(
    accounts: Accounts, storage: CountingDirectory, hasher: RecordingHasher
) -> None:
    make_user(storage)
    assert sign_in(accounts, "", PASSWORD) is None
    assert storage.lookups == 0
    assert len(hasher.verified) == 1


def test_a_broken_stored_hash_fails_like_a_wrong_password(accounts: Accounts, storage: Any) -> None:
    storage.add_user(User(id="id-bob", username="bob", password_hash="not an argon2 hash"))
    assert sign_in(accounts, "bob", PASSWORD) is None


# -- browser sessions --------------------------------------------------------------------------


def test_a_session_is_stored_by_hash_and_ends_with_the_clock(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    user = make_user(storage)
    started = clock.now()
    sid = accounts.start_session(user.id)
    assert list(storage.sessions) == [hashlib.sha256(sid.encode()).digest()]
    assert len(sid) >= 43  # 256 random bits, URL-safe
    assert accounts.session(sid) == BrowserSession(user.id, "alice", started, started + TTL)
    clock.advance(TTL - 1)
    assert accounts.session(sid) is not None
    clock.advance(1)
    assert accounts.session(sid) is None


def test_sign_in_replaces_the_browser_session(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    user = make_user(storage)
    old = accounts.start_session(user.id)
    clock.advance(60)
    new = accounts.start_session(user.id, replacing=old)
    assert new != old
    assert accounts.session(old) is None
    session = accounts.session(new)
    assert session is not None and session.auth_time == clock.now()
    accounts.end_session(new)
    assert accounts.session(new) is None and storage.sessions == {}


def test_sign_out_everywhere_ends_only_that_users_sessions(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    alice, bob = make_user(storage), make_user(storage, "bob")
    mine = [accounts.start_session(alice.id) for _ in range(3)]
    theirs = accounts.start_session(bob.id)
    assert accounts.sign_out_everywhere(alice.id) == 3
    assert [accounts.session(s) for s in mine] == [None, None, None]
    assert accounts.session(theirs) is not None
    assert storage.expired_codes == [(alice.id, None, clock.now())]


# -- consent and grants ------------------------------------------------------------------------


def family(fid: str, user: User, client_id: str, at: float) -> FamilyRow:
    return FamilyRow(fid, user.id, client_id, "openid offline", at, at + 30 * 86400)


def test_consent_is_remembered_as_a_union_at_the_clocks_time(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    user = make_user(storage)
    assert accounts.consent(user.id, "app") is None
    accounts.save_consent(user.id, "app", ("openid", "email"))
    clock.advance(10)
    accounts.save_consent(user.id, "app", ("offline",))
    assert accounts.consent(user.id, "app") == {"openid", "email", "offline"}
    [view] = accounts.consents(user.id)
    assert view.granted_at == clock.now()


def test_withdrawing_consent_ends_the_grant(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    user = make_user(storage)
    storage.add_family(family("f1", user, "app", clock.now()))
    storage.add_family(family("f2", user, "other", clock.now()))
    accounts.save_consent(user.id, "app", ("openid", "offline"))
    clock.advance(5)
    assert accounts.withdraw_consent(user.id, "app")
    assert accounts.consent(user.id, "app") is None
    assert [f.family_id for f in accounts.active_families(user.id)] == ["f2"]
    assert storage.families["f1"].revoked_at == clock.now()
    assert not accounts.withdraw_consent(user.id, "app")  # nothing left to withdraw


def test_revoking_a_family_takes_back_its_consent_and_never_another_users(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    alice, bob = make_user(storage), make_user(storage, "bob")
    storage.add_family(family("f-alice", alice, "app", clock.now()))
    accounts.save_consent(alice.id, "app", ("openid",))
    assert not accounts.revoke_family(bob.id, "f-alice")
    assert [f.family_id for f in accounts.active_families(alice.id)] == ["f-alice"]
    assert accounts.revoke_family(alice.id, "f-alice")
    assert accounts.active_families(alice.id) == []
    assert accounts.consent(alice.id, "app") is None


def test_active_families_are_judged_at_the_clocks_time(
    accounts: Accounts, storage: MemoryAccounts, clock: FrozenClock
) -> None:
    user = make_user(storage)
    storage.add_family(family("f1", user, "app", clock.now()))
    assert len(accounts.active_families(user.id)) == 1
    clock.advance(30 * 86400)
    assert accounts.active_families(user.id) == []
