"""Token minting (tokend.core.minting): RFC 9068 access tokens, OIDC ID tokens, at_hash."""

from __future__ import annotations

import base64

import jwt
import pytest

from tests.core.memory_store import FakeSigner
from tests.core.world import ISSUER, World, expected_at_hash
from tokend.core.minting import TokenMinter, at_hash
from tokend.core.models import Policy, TokenResponse

NOW = 1_800_000_000.75  # fractional on purpose: JWT times are whole seconds


def mint(world: World, **kwargs: object) -> TokenResponse:
    args: dict[str, object] = {
        "client": world.web.client,
        "subject": "alice",
        "scopes": ("openid", "email"),
        "now": NOW,
        "ttl": 900,
    }
    args.update(kwargs)
    return world.minter.respond(**args)  # type: ignore[arg-type]


def test_access_token_has_the_rfc9068_claims(world: World) -> None:
    response = mint(world, family_id="fam-1", auth_time=NOW - 50.5)
    claims = world.access_claims(response)  # verifies signature, iss and aud
    assert claims == {
        "iss": ISSUER,
        "sub": "alice",
        "aud": ISSUER,
        "exp": 1_800_000_000 + 900,
        "iat": 1_800_000_000,
        "jti": claims["jti"],
        "client_id": "web",
        "scope": "openid email",
        "auth_time": 1_799_999_950,
        "sid": "fam-1",
    }
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_access_token_header_is_at_jwt_with_kid(world: World, signer: FakeSigner) -> None:
    header = jwt.get_unverified_header(mint(world).access_token)
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": signer.kid}


def test_optional_claims_absent_when_not_given(world: World) -> None:
    claims = world.access_claims(mint(world))
    assert "auth_time" not in claims
    assert "sid" not in claims
    assert "nonce" not in claims


def test_jti_is_unique(world: World) -> None:
    jtis = {world.access_claims(mint(world))["jti"] for _ in range(100)}
    assert len(jtis) == 100


def test_audience_comes_from_policy(signer: FakeSigner, world: World) -> None:
    policy = Policy(issuer=ISSUER, audience="https://api.example")
    response = TokenMinter(signer, policy).respond(
        client=world.web.client, subject="alice", scopes=("email",), now=NOW, ttl=60
    )
    claims = signer.decode(response.access_token, audience="https://api.example", issuer=ISSUER)
    assert claims["aud"] == "https://api.example"


def test_response_fields(world: World) -> None:
    response = mint(world, refresh_token="tkd_rt_x", ttl=1234)
    assert response.token_type == "Bearer"
    assert response.expires_in == 1234
    assert response.scope == "openid email"
    assert response.refresh_token == "tkd_rt_x"
    assert list(response.to_dict()) == [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
    ]


@pytest.mark.parametrize(
    ("scopes", "with_id_token", "expected"),
    [
        (("openid", "email"), True, True),
        (("email",), True, False),
        (("openid", "email"), False, False),
    ],
    ids=["openid-and-asked", "no-openid", "not-asked"],
)
def test_id_token_only_with_openid_when_asked(
    world: World, scopes: tuple[str, ...], with_id_token: bool, expected: bool
) -> None:
    response = mint(world, scopes=scopes, with_id_token=with_id_token)
    assert (response.id_token is not None) is expected
    assert ("id_token" in response.to_dict()) is expected


def test_id_token_claims(world: World, signer: FakeSigner) -> None:
    response = mint(
        world, with_id_token=True, auth_time=NOW - 100, nonce="n-0S6_WzA2Mj", family_id="fam-1"
    )
    assert response.id_token is not None
    header = jwt.get_unverified_header(response.id_token)
    assert header["alg"] == "RS256"
    assert header["kid"] == signer.kid
    assert header["typ"] != "at+jwt"  # an ID token must not pass for an access token
    claims = world.id_claims(response, "web")  # aud is the client (OIDC Core §2)
    assert claims == {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "web",
        "exp": 1_800_000_000 + world.policy.access_ttl(world.web.client),
        "iat": 1_800_000_000,
        "at_hash": expected_at_hash(response.access_token),
        "auth_time": 1_799_999_900,
        "nonce": "n-0S6_WzA2Mj",
        "sid": "fam-1",
    }


def test_id_token_has_no_nonce_unless_given(world: World) -> None:
    claims = world.id_claims(mint(world, with_id_token=True), "web")
    assert "nonce" not in claims
    assert "auth_time" not in claims


@pytest.mark.parametrize(
    "token",
    ["a", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "x" * 1000],
    ids=["short", "jwt-like", "long"],
)
def test_at_hash_is_left_half_of_sha256_base64url(token: str) -> None:
    value = at_hash(token)
    assert value == expected_at_hash(token)
    assert len(value) == 22  # 16 bytes, unpadded
    assert "=" not in value


def test_at_hash_known_vector() -> None:
    # sha256("a") = ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb
    left = bytes.fromhex("ca978112ca1bbdcafac231b39a23dc4d")
    assert at_hash("a") == base64.urlsafe_b64encode(left).decode().rstrip("=")
    assert at_hash("a") == "ypeBEsobvcr6wjGzmiPcTQ"


@pytest.mark.parametrize(
    ("alg", "hash_name"),
    [("RS256", "sha256"), ("PS256", "sha256"), ("ES256", "sha256"), ("EdDSA", "sha512")],
)
def test_at_hash_uses_the_id_tokens_algorithm(alg: str, hash_name: str) -> None:
    """OIDC Core §3.1.3.6; EdDSA (Ed25519) with SHA-512 as node-oidc-provider does."""
    import hashlib

    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzIn0.c2ln"
    digest = hashlib.new(hash_name, token.encode()).digest()
    expected = base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")
    assert at_hash(token, alg) == expected
    with pytest.raises(ValueError):
        at_hash(token, "HS256")


@pytest.mark.parametrize("alg", ["PS256", "ES256", "EdDSA"])
def test_client_algorithms_sign_both_tokens(world: World, alg: str) -> None:
    import dataclasses

    client = dataclasses.replace(world.web.client, access_token_alg=alg, id_token_alg=alg)
    minter = TokenMinter(world.signer, world.policy)
    response = minter.respond(
        client=client, subject="s", scopes=("openid",), now=1000, ttl=60, with_id_token=True
    )
    assert response.id_token is not None
    assert jwt.get_unverified_header(response.access_token)["alg"] == alg
    assert jwt.get_unverified_header(response.id_token)["alg"] == alg
    claims = world.signer.decode(response.id_token, audience=client.client_id, issuer=ISSUER)
    assert claims["at_hash"] == at_hash(response.access_token, alg)
