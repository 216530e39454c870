"""Starting a token family (tokend.core.issuance): the end of a successful authorization."""

from __future__ import annotations

import pytest

from tests.core.world import DAY, World, expected_at_hash

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("scope", "grant_types", "gets_refresh_token"),
    [
        ("openid offline", {"authorization_code", "refresh_token"}, True),
        ("openid offline_access", {"authorization_code", "refresh_token"}, True),
        ("openid email", {"authorization_code", "refresh_token"}, False),
        ("openid offline", {"authorization_code"}, False),
    ],
    ids=["offline", "offline_access", "no-offline-scope", "client-without-refresh-grant"],
)
def test_refresh_token_only_for_offline_and_the_refresh_grant(
    world: World, scope: str, grant_types: set[str], gets_refresh_token: bool
) -> None:
    reg = world.register("c", grant_types=frozenset(grant_types))
    response = world.start(reg, scope)
    assert (response.refresh_token is not None) is gets_refresh_token
    (family,) = world.store.state.families.values()  # a family either way
    assert len(world.store.tokens_of_family(family.id)) == int(gets_refresh_token)


def test_family_and_first_token_lifetimes(world: World) -> None:
    response = world.start()
    assert response.refresh_token is not None
    family = world.store.family_of(response.refresh_token)
    assert family.created_at == T0
    assert family.expires_at == T0 + 30 * DAY
    assert family.revoked_at is None
    assert family.auth_time == T0  # defaults to now
    row = world.store.token(response.refresh_token)
    assert row is not None
    assert (row.created_at, row.expires_at, row.spent_at) == (T0, T0 + 7 * DAY, None)


def test_first_token_expiry_capped_by_a_short_family(world: World) -> None:
    reg = world.register("short", refresh_token_ttl=3600, refresh_idle_ttl=7200)
    response = world.start(reg)
    assert response.refresh_token is not None
    assert world.store.token(response.refresh_token).expires_at == T0 + 3600


def test_family_records_the_grant(world: World) -> None:
    response = world.start(scope="openid offline email", user_id="u-42", subject="pairwise-x")
    assert response.refresh_token is not None
    family = world.store.family_of(response.refresh_token)
    assert family.client_id == "web"
    assert family.user_id == "u-42"
    assert family.subject == "pairwise-x"
    assert family.scopes == ("openid", "offline", "email")


def test_id_token_carries_nonce_and_auth_time(world: World) -> None:
    response = world.start(auth_time=T0 - 10, nonce="n-123")
    claims = world.id_claims(response, "web")
    assert claims["nonce"] == "n-123"
    assert claims["auth_time"] == int(T0 - 10)
    assert claims["at_hash"] == expected_at_hash(response.access_token)
    assert world.access_claims(response)["sid"] == claims["sid"]
