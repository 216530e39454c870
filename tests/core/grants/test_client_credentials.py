"""The client credentials grant (tokend.core.grants.client_credentials, RFC 6749 §4.4)."""

from __future__ import annotations

import pytest

from tests.core.world import World
from tokend.core.errors import InvalidScope, UnauthorizedClient
from tokend.core.models import TokenRequest

CC = {"grant_type": "client_credentials"}


def test_public_client_is_unauthorized_client(world: World) -> None:
    """§4.4: MUST only be used by confidential clients, even if registered with the grant."""
    reg = world.register(
        "public-cc", public=True, grant_types=frozenset({"client_credentials", "refresh_token"})
    )
    with pytest.raises(UnauthorizedClient) as exc:
        world.token(reg, CC)
    assert exc.value.error == "unauthorized_client"
    with pytest.raises(UnauthorizedClient):
        world.cc_grant.handle(reg.client, TokenRequest(CC, reg.credentials()), world.clock.now())


def test_issues_an_access_token_for_the_client_itself(world: World) -> None:
    response = world.token(world.web, CC)
    claims = world.access_claims(response)
    assert claims["sub"] == "web"
    assert claims["client_id"] == "web"
    assert response.refresh_token is None
    assert response.id_token is None
    assert "refresh_token" not in response.to_dict()
    assert "id_token" not in response.to_dict()


def test_lifetime_is_client_credentials_ttl(world: World) -> None:
    ttl = world.policy.client_credentials_ttl
    assert ttl != world.policy.access_token_ttl  # else this test could not tell them apart
    response = world.token(world.web, CC)
    claims = world.access_claims(response)
    assert response.expires_in == ttl
    assert claims["exp"] - claims["iat"] == ttl
    assert claims["iat"] == int(world.clock.now())


def test_touches_no_storage(world: World) -> None:
    world.token(world.web, CC)
    assert world.store.transactions_begun == 0


def test_default_scope_is_the_clients_minus_user_only_scopes(world: World) -> None:
    assert {"openid", "offline", "offline_access"} <= set(world.web.client.scopes)
    response = world.token(world.web, CC)
    assert response.scope == "profile email api:read api:write"
    assert world.access_claims(response)["scope"] == response.scope


@pytest.mark.parametrize(
    ("scope", "expected"),
    [("api:read", "api:read"), ("api:write api:read", "api:write api:read")],
    ids=["one", "two-in-requested-order"],
)
def test_requested_scope_within_the_clients(world: World, scope: str, expected: str) -> None:
    response = world.token(world.web, {**CC, "scope": scope})
    assert response.scope == expected
    assert world.access_claims(response)["scope"] == expected


@pytest.mark.parametrize(
    "scope",
    [
        "openid",
        "offline",
        "offline_access",
        "api:read openid",
        "api:read offline",
        "admin",
        "api:read admin",
        'api:"read"',
    ],
    ids=[
        "openid",
        "offline",
        "offline_access",
        "with-openid",
        "with-offline",
        "not-registered",
        "partly-registered",
        "malformed",
    ],
)
def test_user_only_or_unregistered_scope_is_invalid_scope(world: World, scope: str) -> None:
    with pytest.raises(InvalidScope) as exc:
        world.token(world.web, {**CC, "scope": scope})
    assert exc.value.error == "invalid_scope"
