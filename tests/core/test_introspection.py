"""``tokend.core.introspection`` (RFC 7662) over the in-memory world: the response of each
kind of active token, ``{"active": false}`` alone for everything else, and who may ask."""

from __future__ import annotations

from dataclasses import replace

import jwt
import pytest

from tests.core.memory_store import FakeSigner
from tests.core.status_store import SignerVerifier, StatusStore
from tests.core.world import DAY, ISSUER, World
from tokend.core.bearer import AccessToken
from tokend.core.errors import InvalidClient, InvalidRequest
from tokend.core.introspection import (
    IntrospectionService,
    access_token_response,
    refresh_token_response,
)
from tokend.core.models import ClientCredentials, Family, StoredRefreshToken
from tokend.core.secrets import new_refresh_token

INACTIVE = {"active": False}
HINTS = [None, "refresh_token", "access_token", "whatever"]


@pytest.fixture
def setup(world: World, signer: FakeSigner) -> tuple[World, StatusStore, IntrospectionService]:
    store = StatusStore(world.store)
    service = IntrospectionService(
        store=store, verifier=SignerVerifier(signer), policy=world.policy, clock=world.clock
    )
    return world, store, service


def ask(
    world: World, service: IntrospectionService, token: str, hint: str | None = None, *, by=None
) -> dict:
    params = {"token": token} if hint is None else {"token": token, "token_type_hint": hint}
    return service.introspect((by or world.other).credentials(), params)


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# -- the pure response builders ------------------------------------------------------------------

FAMILY = Family("fam-1", "web", "user-1", "alice", ("openid", "offline"), 1000.0, 5000.0)
STORED = StoredRefreshToken(b"h" * 32, FAMILY, 2000.5, 3000.9)


def test_refresh_token_response() -> None:
    assert refresh_token_response(STORED, issuer=ISSUER, now=2500.0) == {
        "active": True,
        "iss": ISSUER,
        "sub": "alice",
        "client_id": "web",
        "scope": "openid offline",
        "exp": 3000,
        "iat": 2000,
        "sid": "fam-1",
        "token_type": "refresh_token",
    }
    # exp: the earlier of the token's idle expiry and its family's absolute expiry.
    late = replace(STORED, expires_at=9000.0)
    assert refresh_token_response(late, issuer=ISSUER, now=2500.0)["exp"] == 5000
    assert refresh_token_response(late, issuer=ISSUER, now=4999.9) is not None
    assert refresh_token_response(late, issuer=ISSUER, now=5000.0) is None
    assert refresh_token_response(STORED, issuer=ISSUER, now=3000.8) is not None
    assert refresh_token_response(STORED, issuer=ISSUER, now=3000.9) is None
    # A DPoP-bound family (RFC 9449 §5): the binding shows as cnf.jkt.
    bound = replace(STORED, family=replace(FAMILY, dpop_jkt="thumb"))
    assert refresh_token_response(bound, issuer=ISSUER, now=2500.0)["cnf"] == {"jkt": "thumb"}


@pytest.mark.parametrize(
    "change",
    [
        {"spent_at": 2100.0},
        {"family": replace(FAMILY, revoked_at=2100.0)},
    ],
    ids=["spent", "family revoked"],
)
def test_refresh_token_response_inactive(change) -> None:
    assert refresh_token_response(replace(STORED, **change), issuer=ISSUER, now=2500.0) is None


def test_access_token_response() -> None:
    token = AccessToken("alice", "web", ("openid", "email"), "fam-1", 1_800_000_900.0)
    jwt_claims = {
        "iss": ISSUER, "sub": "alice", "aud": ISSUER, "exp": 1_800_000_900,
        "iat": 1_800_000_000, "jti": "j1", "client_id": "web", "scope": "openid  email",
        "auth_time": 1_799_999_000, "sid": "fam-1", "extra": "not copied",
    }  # fmt: skip
    assert access_token_response(jwt_claims, token) == {
        "active": True,
        "iss": ISSUER,
        "sub": "alice",
        "aud": ISSUER,
        "client_id": "web",
        "scope": "openid email",
        "exp": 1_800_000_900,
        "iat": 1_800_000_000,
        "auth_time": 1_799_999_000,
        "jti": "j1",
        "sid": "fam-1",
        "token_type": "Bearer",
    }
    bound = access_token_response({**jwt_claims, "cnf": {"jkt": "thumb"}}, token)
    assert bound["token_type"] == "DPoP" and bound["cnf"] == {"jkt": "thumb"}
    cc = access_token_response(jwt_claims, replace(token, family_id=None))
    assert "sid" not in cc


# -- the service -------------------------------------------------------------------------------


@pytest.mark.parametrize("hint", HINTS)
def test_active_access_token(setup, hint) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline email", auth_time=world.clock.now() - 60)
    c = claims(tokens.access_token)
    expected = {
        "active": True,
        "iss": ISSUER,
        "sub": "alice",
        "aud": ISSUER,
        "client_id": "web",
        "scope": "openid offline email",
        "exp": c["exp"],
        "iat": c["iat"],
        "auth_time": c["auth_time"],
        "jti": c["jti"],
        "sid": c["sid"],
        "token_type": "Bearer",
    }
    # Any confidential client may ask (a resource server), the token's own client too.
    assert ask(world, service, tokens.access_token, hint) == expected
    assert ask(world, service, tokens.access_token, hint, by=world.web) == expected
    assert store.write_transactions == 0


@pytest.mark.parametrize("hint", HINTS)
def test_active_refresh_token(setup, hint) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline")
    sid = claims(tokens.access_token)["sid"]
    now = world.clock.now()
    assert ask(world, service, tokens.refresh_token, hint) == {
        "active": True,
        "iss": ISSUER,
        "sub": "alice",
        "client_id": "web",
        "scope": "openid offline",
        "exp": int(now + 7 * DAY),  # idle expiry (World's policy) before the family's 30 days
        "iat": int(now),
        "sid": sid,
        "token_type": "refresh_token",
    }
    assert store.write_transactions == 0  # a plain read: never the refresh grant's row lock


def test_client_credentials_token(setup) -> None:
    world, _, service = setup
    cc = world.token(world.web, {"grant_type": "client_credentials", "scope": "api:read"})
    got = ask(world, service, cc.access_token)
    assert got["active"] is True and got["sub"] == "web" and got["scope"] == "api:read"
    assert "sid" not in got
    del world.store.clients["web"]  # a deleted client's tokens die with it
    assert ask(world, service, cc.access_token) == INACTIVE


def test_refresh_after_rotation_spent_is_inactive(setup) -> None:
    world, _, service = setup
    first = world.start(scope="openid offline")
    world.clock.advance(100)
    second = world.refresh(first.refresh_token)
    # Spent, even inside the grace window where it could still be retried.
    assert ask(world, service, first.refresh_token) == INACTIVE
    got = ask(world, service, second.refresh_token)
    assert got["iat"] == int(world.clock.now())
    # Both access tokens are active: the family lives.
    assert ask(world, service, first.access_token)["active"] is True
    assert ask(world, service, second.access_token)["active"] is True


def test_revoked_or_missing_family_makes_everything_inactive(setup) -> None:
    world, _, service = setup
    tokens = world.start(scope="openid offline")
    sid = claims(tokens.access_token)["sid"]
    world.store.revoke(sid, at=world.clock.now())
    assert ask(world, service, tokens.access_token) == INACTIVE
    assert ask(world, service, tokens.refresh_token) == INACTIVE
    other = world.start(scope="openid offline")
    del world.store.state.families[claims(other.access_token)["sid"]]  # e.g. gc'd
    assert ask(world, service, other.access_token) == INACTIVE


def test_deny_listed_access_token(setup) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline")
    sibling = world.refresh(tokens.refresh_token)
    store.revoke_access_token(
        claims(tokens.access_token)["jti"], client_id="web", at=0, expires_at=0
    )
    assert ask(world, service, tokens.access_token) == INACTIVE
    assert ask(world, service, sibling.access_token)["active"] is True


def test_expiry_follows_the_clock(setup) -> None:
    world, _, service = setup
    tokens = world.start(scope="openid offline")
    world.clock.advance(world.policy.access_token_ttl - 1)
    assert ask(world, service, tokens.access_token)["active"] is True
    world.clock.advance(1)
    assert ask(world, service, tokens.access_token) == INACTIVE
    assert ask(world, service, tokens.refresh_token)["active"] is True
    world.clock.advance(7 * DAY - world.policy.access_token_ttl)  # the idle expiry
    assert ask(world, service, tokens.refresh_token) == INACTIVE


def test_dpop_bound_tokens(setup, signer) -> None:
    world, store, service = setup
    tokens = world.start(world.spa, scope="openid offline")
    c = claims(tokens.access_token)
    store.dpop_jkt[c["sid"]] = "thumbprint"
    bound = signer.sign_access_token({**c, "cnf": {"jkt": "thumbprint"}})
    got = ask(world, service, bound)
    assert (got["token_type"], got["cnf"]) == ("DPoP", {"jkt": "thumbprint"})
    assert ask(world, service, tokens.refresh_token)["cnf"] == {"jkt": "thumbprint"}


def test_a_token_must_agree_with_its_family(setup, signer) -> None:
    """Signed with our key but naming another client or subject than its family."""
    world, _, service = setup
    c = claims(world.start(scope="openid offline").access_token)
    assert ask(world, service, signer.sign_access_token(c))["active"] is True
    for change in ({"sub": "mallory"}, {"client_id": "other"}):
        assert ask(world, service, signer.sign_access_token({**c, **change})) == INACTIVE


@pytest.mark.parametrize("hint", HINTS)
def test_anything_else_is_inactive_and_nothing_more(setup, signer, hint) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline")
    c = claims(tokens.access_token)
    head, payload, sig = tokens.access_token.split(".")
    flipped = "A" if sig[10] != "A" else "B"
    candidates = [
        "garbage",
        "a.b.c",
        tokens.access_token[:-2],
        ".".join([head, payload, sig[:10] + flipped + sig[11:]]),
        tokens.id_token or "",  # an ID token is no access token
        FakeSigner().sign_access_token(c),  # another key
        signer.sign_access_token({**c, "iss": "https://elsewhere.test"}),
        signer.sign_access_token({**c, "aud": "https://api.test"}),
        jwt.encode(c, key=None, algorithm="none", headers={"typ": "at+jwt"}),
        new_refresh_token(),
        tokens.refresh_token[:-1] + ("A" if tokens.refresh_token[-1] != "A" else "B"),
    ]
    assert all(candidates)
    peeks = store.peeks
    for token in candidates:
        assert ask(world, service, token, hint) == INACTIVE, token
    assert store.peeks == peeks + 1  # only the well-formed refresh token was looked up


def test_who_may_ask(setup) -> None:
    world, _, service = setup
    tokens = world.start(scope="openid offline")
    params = {"token": tokens.access_token}
    for credentials in (
        world.spa.credentials(),  # a public client cannot authenticate
        ClientCredentials("client_secret_basic", "web", "wrong"),
        ClientCredentials("client_secret_basic", "nobody", "x"),
        ClientCredentials("none", "web"),
        ClientCredentials("none", None),
    ):
        with pytest.raises(InvalidClient):
            service.introspect(credentials, params)
    assert service.introspect(world.web.credentials("client_secret_post"), params)["active"]
    with pytest.raises(InvalidRequest, match="token"):
        service.introspect(world.web.credentials(), {"token_type_hint": "access_token"})
