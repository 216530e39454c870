"""The UserInfo domain (core/userinfo.py): which claims each scope selects, in Didit's shape
and OIDC Core §5.4's, never null; and ``UserInfoService``'s rules over the in-memory world
(a user's live, unexpired access token of an ``openid`` grant)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from tests.core.memory_store import FakeSigner
from tests.core.world import World
from tokend.core.bearer import InsufficientScope, InvalidToken
from tokend.core.models import Family
from tokend.core.userinfo import UserInfoService, userinfo_claims


@dataclass(frozen=True)
class Profile:
    email: str | None = None
    email_verified: bool = False
    given_name: str | None = None
    family_name: str | None = None
    phone_number: str | None = None
    phone_number_verified: bool = False
    picture: str | None = None


ALICE = Profile(
    email="alice@example.com",
    email_verified=True,
    given_name="Alice",
    family_name="Liddell",
    phone_number="+441234567890",
    phone_number_verified=False,
    picture="https://img.example/alice.png",
)
NAMES = {"names", "given_name", "family_name", "name"}
EMAIL = {"email", "email_verified"}
PHONE = {"phone", "phone_number", "phone_number_verified"}


# -- claim mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "keys"),
    [
        ("openid", set()),
        ("openid offline", set()),
        ("openid names", NAMES),
        ("openid picture", {"picture"}),
        ("openid profile", NAMES | {"picture"}),
        ("openid email", EMAIL),
        ("openid phone", PHONE),
        ("openid email phone", EMAIL | PHONE),
        ("openid profile names picture email phone user_id", NAMES | {"picture"} | EMAIL | PHONE),
    ],
)
def test_scope_selects_claims(scope: str, keys: set[str]) -> None:
    claims = userinfo_claims("sub-1", scope.split(), ALICE)
    assert set(claims) == {"sub"} | keys
    assert claims["sub"] == "sub-1"


def test_claim_values() -> None:
    claims = userinfo_claims("sub-1", ("openid", "profile", "email", "phone"), ALICE)
    assert claims == {
        "sub": "sub-1",
        # Didit's objects
        "names": {
            "first_name": "Alice",
            "family_name": "Liddell",
            "full_name": "Alice Liddell",
            "is_verified": False,
        },
        "email": {"email": "alice@example.com", "is_verified": True, "is_primary": True},
        "phone": {"phone_number": "+441234567890", "is_verified": False, "is_primary": True},
        "picture": "https://img.example/alice.png",
        # OIDC Core §5.4
        "given_name": "Alice",
        "family_name": "Liddell",
        "name": "Alice Liddell",
        "email_verified": True,
        "phone_number": "+441234567890",
        "phone_number_verified": False,
    }


def test_verified_flags_follow_the_profile() -> None:
    flipped = Profile(email="a@b.example", phone_number="+1555", phone_number_verified=True)
    claims = userinfo_claims("s", ("email", "phone"), flipped)
    assert claims["email"]["is_verified"] is False and claims["email_verified"] is False
    assert claims["phone"]["is_verified"] is True and claims["phone_number_verified"] is True


def _nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_nulls(v) for v in value.values())
    return value is None


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (Profile(), {"sub": "s"}),
        (
            Profile(given_name="Alice"),
            {
                "sub": "s",
                "names": {"first_name": "Alice", "full_name": "Alice", "is_verified": False},
                "given_name": "Alice",
                "name": "Alice",
            },
        ),
        (
            Profile(family_name="Liddell"),
            {
                "sub": "s",
                "names": {"family_name": "Liddell", "full_name": "Liddell", "is_verified": False},
                "family_name": "Liddell",
                "name": "Liddell",
            },
        ),
        (Profile(email_verified=True, phone_number_verified=True), {"sub": "s"}),
    ],
    ids=["empty", "given-only", "family-only", "flags-without-values"],
)
def test_unknown_values_are_left_out(profile: Profile, expected: dict[str, Any]) -> None:
    """OIDC Core §5.3.2: an unknown claim is omitted, not null."""
    claims = userinfo_claims("s", ("profile", "names", "picture", "email", "phone"), profile)
    assert claims == expected
    assert not _nulls(claims)


# -- UserInfoService over the in-memory world --------------------------------------------------


class Verifier:
    """``TokenVerifier`` over the FakeSigner's key, checking the signature only."""

    def __init__(self, signer: FakeSigner) -> None:
        self._key = signer.public_key
        self.calls = 0

    def verify(self, token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        self.calls += 1
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise InvalidToken() from None
        return jwt.get_unverified_header(token), claims


class Store:
    """``UserInfoStore`` over the world's families and a dict of users; counts reads."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.users: dict[str, Profile] = {"user-1": ALICE}
        self.reads = 0
        self.revoked_jtis: set[str] = set()
        self.deny_list_reads = 0

    def get_family_and_user(self, family_id: str) -> tuple[Family, Profile | None] | None:
        self.reads += 1
        family = self.world.store.state.families.get(family_id)
        return None if family is None else (family, self.users.get(family.user_id))

    def is_access_token_revoked(self, jti: str) -> bool:
        self.deny_list_reads += 1
        return jti in self.revoked_jtis


@pytest.fixture
def setup(world: World, signer: FakeSigner) -> tuple[World, Store, UserInfoService]:
    store = Store(world)
    service = UserInfoService(
        verifier=Verifier(signer), store=store, policy=world.policy, clock=world.clock
    )
    return world, store, service


def sid_of(world: World, access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["sid"]


def test_userinfo_of_a_live_token(setup) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid email", user_id="user-1", subject="pairwise-sub")
    assert service.userinfo(tokens.access_token) == {
        "sub": "pairwise-sub",  # the token's (family's) subject, not the user id
        "email": {"email": "alice@example.com", "is_verified": True, "is_primary": True},
        "email_verified": True,
    }
    assert store.reads == 1  # one family read per request
    assert store.deny_list_reads == 1  # and one deny-list lookup (RFC 7009)
    # A refreshed, narrowed token serves only its own scope.
    first = world.start(scope="openid offline email phone", user_id="user-1")
    refreshed = world.refresh(first.refresh_token, scope="openid phone")
    assert set(service.userinfo(refreshed.access_token)) == {"sub"} | PHONE


def test_expiry_follows_the_clock(setup) -> None:
    world, _, service = setup
    tokens = world.start(scope="openid", user_id="user-1")
    world.clock.advance(world.policy.access_token_ttl - 1)
    assert service.userinfo(tokens.access_token)["sub"] == "alice"
    world.clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        service.userinfo(tokens.access_token)


def test_revoked_or_missing_family(setup) -> None:
    world, _, service = setup
    tokens = world.start(scope="openid offline", user_id="user-1")
    sid = sid_of(world, tokens.access_token)
    service.userinfo(tokens.access_token)
    world.store.revoke(sid, at=world.clock.now())
    with pytest.raises(InvalidToken, match="revoked"):
        service.userinfo(tokens.access_token)
    other = world.start(scope="openid", user_id="user-1")
    del world.store.state.families[sid_of(world, other.access_token)]  # e.g. gc'd
    with pytest.raises(InvalidToken):
        service.userinfo(other.access_token)


def test_deny_listed_token_is_refused(setup) -> None:
    """An access token revoked at the revocation endpoint (RFC 7009) is refused by its jti,
    while its family, and the family's other access tokens, stay valid."""
    world, store, service = setup
    tokens = world.start(scope="openid offline", user_id="user-1")
    sibling = world.refresh(tokens.refresh_token)
    jti = jwt.decode(tokens.access_token, options={"verify_signature": False})["jti"]
    service.userinfo(tokens.access_token)
    store.revoked_jtis.add(jti)
    with pytest.raises(InvalidToken, match="revoked"):
        service.userinfo(tokens.access_token)
    assert service.userinfo(sibling.access_token)["sub"] == "alice"
    # An expired token is refused for its expiry, without a deny-list lookup.
    reads = store.deny_list_reads
    world.clock.advance(world.policy.access_token_ttl)
    with pytest.raises(InvalidToken, match="expired"):
        service.userinfo(tokens.access_token)
    assert store.deny_list_reads == reads


def test_client_credentials_token_is_not_a_user_token(setup) -> None:
    world, _, service = setup
    cc = world.token(world.web, {"grant_type": "client_credentials"})
    with pytest.raises(InvalidToken, match="user"):
        service.userinfo(cc.access_token)


def test_without_openid_is_insufficient_scope(setup) -> None:
    world, _, service = setup
    tokens = world.start(scope="email offline", user_id="user-1")
    with pytest.raises(InsufficientScope) as info:
        service.userinfo(tokens.access_token)
    assert info.value.scope == "openid"


def test_deleted_user(setup) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid", user_id="user-1")
    del store.users["user-1"]
    with pytest.raises(InvalidToken, match="user"):
        service.userinfo(tokens.access_token)


def test_token_must_agree_with_its_family(setup, signer: FakeSigner) -> None:
    """A token naming another client or subject than its family (never minted by us, but
    signed with our key) is refused."""
    world, _, service = setup
    tokens = world.start(scope="openid", user_id="user-1")
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert service.userinfo(signer.sign_access_token(claims))["sub"] == "alice"
    for change in ({"sub": "mallory"}, {"client_id": world.other.client_id}):
        with pytest.raises(InvalidToken):
            service.userinfo(signer.sign_access_token({**claims, **change}))


def test_claims_are_checked_after_the_signature(setup, signer: FakeSigner) -> None:
    world, _, service = setup
    tokens = world.start(scope="openid", user_id="user-1")
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    with pytest.raises(InvalidToken):
        service.userinfo(signer.sign_id_token(claims))  # typ JWT: not an access token
    with pytest.raises(InvalidToken):
        service.userinfo(signer.sign_access_token({**claims, "iss": "https://evil.test"}))
    with pytest.raises(InvalidToken):
        service.userinfo(signer.sign_access_token({**claims, "aud": "https://api.test"}))
    head, payload, signature = tokens.access_token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    with pytest.raises(InvalidToken):  # the verifier refuses it
        service.userinfo(".".join([head, payload, signature[:10] + flipped + signature[11:]]))


def test_custom_audience(make_world, signer: FakeSigner) -> None:
    world = make_world(audience="https://api.test")
    store = Store(world)
    service = UserInfoService(
        verifier=Verifier(signer), store=store, policy=world.policy, clock=world.clock
    )
    tokens = world.start(scope="openid", user_id="user-1")
    assert service.userinfo(tokens.access_token) == {"sub": "alice"}
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    with pytest.raises(InvalidToken, match="audience"):
        service.userinfo(signer.sign_access_token({**claims, "aud": world.policy.issuer}))
