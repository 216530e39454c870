"""The authorization code grant (tokend.core.grants.authorization_code): RFC 6749 §4.1.3, RFC
7636 §4.6, OIDC Core §3.1.3, RFC 9700 §2.1.1 and §4.1.2's replay rule. Time only moves by
FrozenClock.advance."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.world import (
    CHALLENGE,
    DAY,
    FULL_SCOPE,
    REDIRECT_URI,
    VERIFIER,
    World,
    expected_at_hash,
)
from tokend.core import pkce
from tokend.core.authorization import CODE_PREFIX
from tokend.core.errors import InvalidClient, InvalidGrant, InvalidRequest, UnauthorizedClient
from tokend.core.events import EventKind
from tokend.core.models import ClientCredentials, TokenRequest, TokenResponse
from tokend.core.secrets import hash_secret

T0 = 1_800_000_000.0
OTHER_VERIFIER = "x" * 43


def invalid_grant(world: World, *args: Any, **kwargs: Any) -> InvalidGrant:
    with pytest.raises(InvalidGrant) as exc:
        world.exchange(*args, **kwargs)
    assert exc.value.error == "invalid_grant"
    assert exc.value.status_code == 400
    return exc.value


def assert_unchanged(world: World, before: Any) -> None:
    """Nothing was issued or consumed: same codes, families and tokens as ``before``."""
    after = world.store.snapshot()
    assert after.codes == before.codes
    assert after.families == before.families
    assert after.tokens == before.tokens
    assert after.events == before.events


# -- the happy path -----------------------------------------------------------------------------


def test_exchange_issues_tokens_of_the_grant(world: World) -> None:
    code = world.code(world.authorize(scope="openid offline email"), user_id="u-1", subject="s-1")
    response = world.exchange(world.web, code)
    assert response.token_type == "Bearer"
    assert response.expires_in == 15 * 60
    assert response.scope == "openid offline email"
    assert response.refresh_token is not None and response.id_token is not None
    claims = world.access_claims(response)
    assert claims["sub"] == "s-1"
    assert claims["client_id"] == "web"
    assert claims["scope"] == "openid offline email"
    family = world.store.family_of(response.refresh_token)
    assert claims["sid"] == family.id
    assert (family.client_id, family.user_id, family.subject) == ("web", "u-1", "s-1")
    assert family.scopes == ("openid", "offline", "email")
    assert family.created_at == T0 and family.expires_at == T0 + 30 * DAY


def test_the_code_records_the_family_it_started(world: World) -> None:
    code = world.code()
    response = world.exchange(world.web, code)
    assert response.refresh_token is not None
    stored = world.store.state.codes[hash_secret(code)]
    assert stored.consumed_at == T0
    assert stored.family_id == world.store.family_of(response.refresh_token).id


def test_id_token_claims(world: World) -> None:
    # The user signed in ten minutes before consenting; auth_time is the sign-in.
    req = world.authorize(scope="openid offline", nonce="n-0S6_WzA2Mj")
    code = world.code(req, subject="alice", auth_time=T0 - 600)
    world.clock.advance(5)
    response = world.exchange(world.web, code)
    claims = world.id_claims(response, "web")  # verifies signature, aud=web, iss
    assert claims["aud"] == "web"
    assert claims["iss"] == "https://issuer.test"
    assert claims["sub"] == "alice"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["auth_time"] == int(T0 - 600)
    assert claims["iat"] == int(T0 + 5)
    assert claims["exp"] == int(T0 + 5) + 15 * 60
    assert claims["at_hash"] == expected_at_hash(response.access_token)
    assert response.refresh_token is not None
    assert claims["sid"] == world.store.family_of(response.refresh_token).id
    assert world.access_claims(response)["auth_time"] == int(T0 - 600)


def test_id_token_without_nonce_when_none_was_sent(world: World) -> None:
    response = world.exchange(world.web, world.code(world.authorize(nonce=None)))
    assert "nonce" not in world.id_claims(response, "web")


def test_each_code_gets_its_own_nonce(world: World) -> None:
    a = world.code(world.authorize(nonce="first"))
    b = world.code(world.authorize(nonce="second"))
    assert world.id_claims(world.exchange(world.web, b), "web")["nonce"] == "second"
    assert world.id_claims(world.exchange(world.web, a), "web")["nonce"] == "first"


@pytest.mark.parametrize(
    ("scope", "gets_refresh_token"),
    [
        ("openid offline", True),
        ("openid offline_access", True),
        ("openid email", False),
        ("openid", False),
    ],
)
def test_refresh_token_only_with_offline(
    world: World, scope: str, gets_refresh_token: bool
) -> None:
    response = world.exchange(world.web, world.code(world.authorize(scope=scope)))
    assert (response.refresh_token is not None) is gets_refresh_token
    assert response.id_token is not None
    assert response.scope == scope


def test_no_refresh_token_for_a_client_without_the_refresh_grant(world: World) -> None:
    reg = world.register("code-only", grant_types=frozenset({"authorization_code"}))
    response = world.exchange(reg, world.code(world.authorize(reg, "openid offline")))
    assert response.refresh_token is None
    assert response.id_token is not None


def test_the_refresh_token_works(world: World) -> None:
    response = world.exchange(world.web, world.code(world.authorize(scope=FULL_SCOPE)))
    assert response.refresh_token is not None
    world.clock.advance(60)
    refreshed = world.refresh(response.refresh_token)
    assert refreshed.refresh_token is not None
    assert world.access_claims(refreshed)["sid"] == world.access_claims(response)["sid"]


def test_client_must_be_allowed_the_grant(world: World) -> None:
    code = world.code()
    reg = world.register("cc-only", grant_types=frozenset({"client_credentials"}))
    before = world.store.snapshot()
    with pytest.raises(UnauthorizedClient):
        world.exchange(reg, code)
    assert_unchanged(world, before)


def test_client_must_authenticate(world: World) -> None:
    code = world.code()
    before = world.store.snapshot()
    with pytest.raises(InvalidClient):
        world.exchange(
            world.web, code, credentials=ClientCredentials("client_secret_basic", "web", "nope")
        )
    with pytest.raises(InvalidClient):  # a confidential client cannot pass as public
        world.exchange(world.web, code, credentials=ClientCredentials("none", "web"))
    assert_unchanged(world, before)
    assert world.exchange(world.web, code).access_token


# -- single use and replay ----------------------------------------------------------------------


def test_a_code_works_once(world: World) -> None:
    code = world.code()
    world.exchange(world.web, code)
    err = invalid_grant(world, world.web, code)
    assert "code" in err.description


def test_replay_revokes_the_family_and_records_an_event(world: World) -> None:
    code = world.code(user_id="u-7")
    first = world.exchange(world.web, code)
    assert first.refresh_token is not None
    family = world.store.family_of(first.refresh_token)
    world.clock.advance(30)
    invalid_grant(world, world.web, code)
    revoked = world.store.family(family.id)
    assert revoked.revoked_at == T0 + 30
    assert world.store.state.revocation_reasons[family.id] == EventKind.AUTHORIZATION_CODE_REPLAY
    (event,) = world.store.events(EventKind.AUTHORIZATION_CODE_REPLAY)
    assert event.at == T0 + 30
    assert event.client_id == "web"
    assert event.family_id == family.id
    assert event.user_id == "u-7"
    assert event.detail == {"consumed_at": T0}
    # Everything issued from the first exchange is dead.
    with pytest.raises(InvalidGrant):
        world.refresh(first.refresh_token)


def test_replay_revokes_the_tokens_rotated_since(world: World) -> None:
    code = world.code()
    first = world.exchange(world.web, code)
    assert first.refresh_token is not None
    rotated = world.refresh(first.refresh_token)
    assert rotated.refresh_token is not None
    world.clock.advance(20)
    invalid_grant(world, world.web, code)
    with pytest.raises(InvalidGrant):
        world.refresh(rotated.refresh_token)


def test_replay_after_the_code_expired_still_revokes(world: World) -> None:
    code = world.code()
    first = world.exchange(world.web, code)
    assert first.refresh_token is not None
    world.clock.advance(3600)
    invalid_grant(world, world.web, code)
    assert world.store.family_of(first.refresh_token).revoked_at == T0 + 3600


def test_replay_leaves_other_families_alone(world: World) -> None:
    mine, other = world.code(), world.code(user_id="user-2")
    first = world.exchange(world.web, mine)
    second = world.exchange(world.web, other)
    invalid_grant(world, world.web, mine)
    assert second.refresh_token is not None and first.refresh_token is not None
    assert world.store.family_of(second.refresh_token).revoked_at is None
    assert world.refresh(second.refresh_token).refresh_token


def test_replay_of_a_code_without_refresh_token_still_revokes_its_family(world: World) -> None:
    code = world.code(world.authorize(scope="openid email"))
    first = world.exchange(world.web, code)
    sid = world.access_claims(first)["sid"]
    invalid_grant(world, world.web, code)
    assert world.store.family(sid).revoked_at == T0
    assert len(world.store.events(EventKind.AUTHORIZATION_CODE_REPLAY)) == 1


def test_replay_by_another_client_reveals_nothing_and_revokes_nothing(world: World) -> None:
    code = world.code()
    first = world.exchange(world.web, code)
    assert first.refresh_token is not None
    invalid_grant(world, world.other, code)
    assert world.store.family_of(first.refresh_token).revoked_at is None
    assert world.store.events(EventKind.AUTHORIZATION_CODE_REPLAY) == []


# -- lifetime -----------------------------------------------------------------------------------


def test_code_is_valid_for_just_under_60_seconds(world: World) -> None:
    code = world.code()
    world.clock.advance(59.999)
    assert world.exchange(world.web, code).access_token


@pytest.mark.parametrize("age", [60, 61, 3600])
def test_code_expires_after_60_seconds(world: World, age: float) -> None:
    code = world.code()
    world.clock.advance(age)
    before = world.store.snapshot()
    invalid_grant(world, world.web, code)
    assert_unchanged(world, before)  # not consumed, no family, no replay event


# -- bindings -----------------------------------------------------------------------------------


def test_code_is_bound_to_its_client(world: World) -> None:
    code = world.code()
    before = world.store.snapshot()
    invalid_grant(world, world.other, code)
    assert_unchanged(world, before)
    # Another client presenting a stolen code cannot burn it for its owner.
    assert world.exchange(world.web, code).access_token


def test_code_of_a_public_client_is_bound_to_it(world: World) -> None:
    code = world.code(world.authorize(world.spa))
    spa2 = world.register(
        "spa2", public=True, grant_types=frozenset({"authorization_code", "refresh_token"})
    )
    invalid_grant(world, spa2, code, verifier=VERIFIER)
    assert world.exchange(world.spa, code, verifier=VERIFIER).access_token


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/cb/",
        "https://APP.example/cb",
        "https://app.example/CB",
        "https://app.example/cb?x=1",
        "https://app.example/cb#",
        "https://app.example/other",
    ],
    ids=["trailing-slash", "host-case", "path-case", "extra-query", "fragment", "other-path"],
)
def test_code_is_bound_to_the_redirect_uri(world: World, redirect_uri: str) -> None:
    code = world.code()
    before = world.store.snapshot()
    err = invalid_grant(world, world.web, code, redirect_uri=redirect_uri)
    assert "redirect_uri" in err.description
    assert_unchanged(world, before)


def test_code_is_bound_to_the_registered_uri_it_was_issued_for(world: World) -> None:
    other_uri = "https://app.example/second"
    reg = world.register("two", redirect_uris=(REDIRECT_URI, other_uri))
    code = world.code(world.authorize(reg, redirect_uri=other_uri))
    invalid_grant(world, reg, code, redirect_uri=REDIRECT_URI)  # registered, but not this code's
    assert world.exchange(reg, code, redirect_uri=other_uri).access_token


def test_redirect_uri_is_required(world: World) -> None:
    code = world.code()
    with pytest.raises(InvalidRequest):
        world.exchange(world.web, code, redirect_uri=None)
    assert world.exchange(world.web, code).access_token


def test_code_is_required(world: World) -> None:
    params = {"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI}
    with pytest.raises(InvalidRequest):
        world.full_service.token(TokenRequest(params, world.spa.credentials()))


@pytest.mark.parametrize(
    "code",
    [
        "tkd_ac_" + "A" * 43,
        "not-a-code",
        "tkd_rt_" + "A" * 43,
        CODE_PREFIX + "x" * 200,
    ],
    ids=["unknown", "no-prefix", "refresh-token-prefix", "too-long"],
)
def test_unknown_or_malformed_code(world: World, code: str) -> None:
    world.code()
    before = world.store.snapshot()
    invalid_grant(world, world.web, code)
    assert_unchanged(world, before)


# -- PKCE ---------------------------------------------------------------------------------------


def test_public_client_with_the_right_verifier(world: World) -> None:
    code = world.code(world.authorize(world.spa, "openid offline"))
    response = world.exchange(world.spa, code, verifier=VERIFIER)
    assert response.refresh_token is not None
    assert world.id_claims(response, "spa")["aud"] == "spa"


@pytest.mark.parametrize(
    "verifier",
    [None, OTHER_VERIFIER, CHALLENGE, VERIFIER[:42], VERIFIER + "=", VERIFIER.upper()],
    ids=["missing", "other", "the-challenge-itself", "short", "padded", "case"],
)
@pytest.mark.parametrize("client", ["spa", "web"])
def test_verifier_must_match_the_challenge(world: World, client: str, verifier: str | None) -> None:
    reg = world.spa if client == "spa" else world.web
    code = world.code(world.authorize(reg, code_challenge=CHALLENGE, code_challenge_method="S256"))
    before = world.store.snapshot()
    err = invalid_grant(world, reg, code, verifier=verifier)
    assert "code_verifier" in err.description
    assert_unchanged(world, before)


def test_verifier_for_a_code_issued_without_challenge_is_refused(world: World) -> None:
    # PKCE downgrade (RFC 9700 §2.1.1): an attacker's code injected without a challenge must
    # not be accepted when the client sends a verifier.
    code = world.code(world.authorize(world.web))
    before = world.store.snapshot()
    invalid_grant(world, world.web, code, verifier=VERIFIER)
    assert_unchanged(world, before)
    assert world.exchange(world.web, code).access_token  # without one it works


def test_a_challenge_of_another_verifier(world: World) -> None:
    verifier = "M25iVXpKU3puUjFaYWg3T1NDTDQtcW1ROUY5YXlwalNoc0hhakxifmZHag"
    challenge = pkce.s256(verifier)
    req = world.authorize(world.spa, code_challenge=challenge)
    invalid_grant(world, world.spa, world.code(req), verifier=VERIFIER)
    assert world.exchange(world.spa, world.code(req), verifier=verifier).access_token


def test_failed_exchange_does_not_consume_the_code(world: World) -> None:
    code = world.code(world.authorize(world.spa))
    invalid_grant(world, world.spa, code, verifier=OTHER_VERIFIER)
    response: TokenResponse = world.exchange(world.spa, code, verifier=VERIFIER)
    assert response.access_token
    assert world.store.events(EventKind.AUTHORIZATION_CODE_REPLAY) == []
