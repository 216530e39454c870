"""The token endpoint's dispatch (tokend.core.service, RFC 6749 §3.2, §5.2)."""

from __future__ import annotations

import pytest

from tests.core.world import World
from tokend.core.errors import (
    InvalidClient,
    InvalidRequest,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from tokend.core.models import ClientCredentials


def test_grant_types_registered(world: World) -> None:
    assert set(world.service.grant_types) == {"refresh_token", "client_credentials"}


def test_missing_grant_type_is_invalid_request(world: World) -> None:
    with pytest.raises(InvalidRequest) as exc:
        world.token(world.web, {"scope": "email"})
    assert exc.value.error == "invalid_request"


@pytest.mark.parametrize(
    "grant_type",
    [
        "password",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:device_code",
        "REFRESH_TOKEN",
        "refresh_token ",
    ],
    ids=["password", "not-wired-here", "device-code", "case-differs", "trailing-space"],
)
def test_unknown_grant_type_is_unsupported(world: World, grant_type: str) -> None:
    with pytest.raises(UnsupportedGrantType) as exc:
        world.token(world.web, {"grant_type": grant_type})
    assert exc.value.error == "unsupported_grant_type"
    assert exc.value.status_code == 400


def test_grant_not_allowed_for_client_is_unauthorized_client(world: World) -> None:
    reg = world.register("refresh-only", grant_types=frozenset({"refresh_token"}))
    with pytest.raises(UnauthorizedClient) as exc:
        world.token(reg, {"grant_type": "client_credentials"})
    assert exc.value.error == "unauthorized_client"
    assert world.store.transactions_begun == 0


def test_refresh_grant_not_allowed_for_client(world: World) -> None:
    reg = world.register("cc-only", grant_types=frozenset({"client_credentials"}))
    rt = world.start().refresh_token
    assert rt is not None
    before = world.store.snapshot()
    with pytest.raises(UnauthorizedClient):
        world.token(reg, {"grant_type": "refresh_token", "refresh_token": rt})
    assert world.store.snapshot() == before


BAD_CREDENTIALS = [
    ("unknown-client", ClientCredentials("client_secret_basic", "nobody", "tkd_cs_x")),
    ("wrong-secret", ClientCredentials("client_secret_basic", "refresh-only", "tkd_cs_wrong")),
    ("confidential-as-public", ClientCredentials("none", "refresh-only")),
    ("no-credentials", ClientCredentials("none", None)),
]
REQUESTS = [
    ("missing-grant-type", {}),
    ("unknown-grant-type", {"grant_type": "password"}),
    ("grant-not-allowed", {"grant_type": "client_credentials"}),
    ("refresh-missing-token", {"grant_type": "refresh_token"}),
    ("refresh-garbage-token", {"grant_type": "refresh_token", "refresh_token": "garbage"}),
]


@pytest.mark.parametrize(
    "credentials", [c for _, c in BAD_CREDENTIALS], ids=[i for i, _ in BAD_CREDENTIALS]
)
@pytest.mark.parametrize("params", [p for _, p in REQUESTS], ids=[i for i, _ in REQUESTS])
def test_client_authentication_comes_before_the_grant_type(
    world: World, credentials: ClientCredentials, params: dict[str, str]
) -> None:
    reg = world.register("refresh-only", grant_types=frozenset({"refresh_token"}))
    with pytest.raises(InvalidClient) as exc:
        world.token(reg, params, credentials)
    assert exc.value.status_code == 401
    assert world.store.transactions_begun == 0


@pytest.mark.parametrize("params", [p for _, p in REQUESTS], ids=[i for i, _ in REQUESTS])
def test_same_requests_authenticated_fail_on_the_grant(
    world: World, params: dict[str, str]
) -> None:
    """The control group of the test above: with good credentials, each request fails for
    its own reason, so invalid_client there really came from authentication."""
    reg = world.register("refresh-only", grant_types=frozenset({"refresh_token"}))
    with pytest.raises(OAuthError) as exc:
        world.token(reg, params)
    assert exc.value.error != "invalid_client"


def test_service_reads_time_from_its_clock(world: World) -> None:
    world.clock.advance(12_345.6)
    response = world.token(world.web, {"grant_type": "client_credentials"})
    assert world.access_claims(response)["iat"] == int(world.clock.now())
