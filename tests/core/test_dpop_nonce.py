"""DPoP server nonces in the domain (RFC 9449 §8; tokend.core.service): required per client
(``Client.dpop_nonce_required``) or for every client (``Policy.dpop_nonce``), checked after
client authentication and the grant type and before the grant, so that a refusal for the
nonce changes nothing: no proof recorded as used, no token spent, no code consumed."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.core.world import REDIRECT_URI, VERIFIER, Registered, World
from tokend.core.errors import (
    InvalidClient,
    InvalidDPoPProof,
    InvalidRequest,
    UnauthorizedClient,
    UnsupportedGrantType,
    UseDPoPNonce,
)
from tokend.core.models import ClientCredentials, DPoPProof, TokenRequest, TokenResponse

JKT = "A" * 43


def proof(*, nonce_ok: bool, replay_hash: bytes | None = None) -> DPoPProof:
    return DPoPProof(JKT, replay_hash or os.urandom(32), 1_800_000_000.0 + 120, nonce_ok)


def token(
    world: World,
    reg: Registered,
    params: dict[str, str],
    dpop: DPoPProof | None,
    credentials: ClientCredentials | None = None,
) -> TokenResponse:
    return world.full_service.token(TokenRequest(params, credentials or reg.credentials(), dpop))


def strict(world: World, name: str = "strict", **kwargs: object) -> Registered:
    return world.register(name, dpop_nonce_required=True, **kwargs)  # type: ignore[arg-type]


def refresh_params(world: World, reg: Registered) -> dict[str, str]:
    refresh_token = world.start(reg).refresh_token
    assert refresh_token is not None
    return {"grant_type": "refresh_token", "refresh_token": refresh_token}


def test_a_client_that_requires_nonces_refuses_a_proof_without_one(world: World) -> None:
    reg = strict(world)
    params = refresh_params(world, reg)
    before = world.store.snapshot()
    begun = world.store.transactions_begun
    refused = proof(nonce_ok=False)
    with pytest.raises(UseDPoPNonce) as exc:
        token(world, reg, params, refused)
    assert exc.value.error == "use_dpop_nonce" and exc.value.status_code == 400
    # Nothing read or written in a transaction: the proof is not recorded, the token unspent.
    assert world.store.transactions_begun == begun
    assert world.store.snapshot() == before
    assert refused.replay_hash not in world.store.snapshot().dpop_proofs
    # The retry (a new proof, with the nonce) is a first attempt; it binds the access token.
    retry = proof(nonce_ok=True)
    response = token(world, reg, params, retry)
    assert response.token_type == "DPoP"
    assert world.access_claims(response)["cnf"] == {"jkt": JKT}
    assert retry.replay_hash in world.store.snapshot().dpop_proofs


def test_even_the_refused_proof_itself_passes_once_nonces_are_not_required(world: World) -> None:
    """The refused proof's jti was not recorded: the same proof, where no nonce is required
    (the client's setting changed), is accepted; then it is a replay."""
    reg = strict(world)
    params = refresh_params(world, reg)
    refused = proof(nonce_ok=False)
    with pytest.raises(UseDPoPNonce):
        token(world, reg, params, refused)
    relaxed = world.register("relaxed")
    cc = {"grant_type": "client_credentials"}
    assert token(world, relaxed, cc, refused).token_type == "DPoP"
    with pytest.raises(InvalidDPoPProof, match="used before"):
        token(world, relaxed, cc, refused)


def test_a_client_without_the_setting_takes_a_proof_without_a_nonce(world: World) -> None:
    params = refresh_params(world, world.web)
    assert token(world, world.web, params, proof(nonce_ok=False)).token_type == "DPoP"


def test_no_proof_needs_no_nonce(world: World) -> None:
    """Nonces are about proofs: a client that requires them may still send none (DPoP itself
    is the client's choice), and gets Bearer tokens."""
    reg = strict(world)
    assert token(world, reg, refresh_params(world, reg), None).token_type == "Bearer"


def test_the_policy_requires_nonces_of_every_client(make_world: Callable[..., World]) -> None:
    world = make_world(dpop_nonce=True)
    for reg in (world.web, world.other):
        params = refresh_params(world, reg)
        before = world.store.snapshot()
        with pytest.raises(UseDPoPNonce):
            token(world, reg, params, proof(nonce_ok=False))
        assert world.store.snapshot() == before
        assert token(world, reg, params, proof(nonce_ok=True)).token_type == "DPoP"


@pytest.mark.parametrize(
    ("policy", "client", "required"),
    [(False, False, False), (False, True, True), (True, False, True), (True, True, True)],
)
def test_policy_says_when_a_nonce_is_required(
    make_world: Callable[..., World], policy: bool, client: bool, required: bool
) -> None:
    world = make_world(dpop_nonce=policy)
    reg = world.register("c", dpop_nonce_required=client)
    assert world.policy.dpop_nonce_required(reg.client) is required


BAD_CREDENTIALS = [
    ("unknown-client", ClientCredentials("client_secret_basic", "nobody", "tkd_cs_x")),
    ("wrong-secret", ClientCredentials("client_secret_basic", "strict", "tkd_cs_wrong")),
    ("no-credentials", ClientCredentials("none", None)),
]


@pytest.mark.parametrize(
    "credentials", [c for _, c in BAD_CREDENTIALS], ids=[i for i, _ in BAD_CREDENTIALS]
)
@pytest.mark.parametrize("policy", [False, True], ids=["per-client", "global"])
def test_client_authentication_comes_before_the_nonce(
    make_world: Callable[..., World], credentials: ClientCredentials, policy: bool
) -> None:
    world = make_world(dpop_nonce=policy)
    reg = strict(world)
    with pytest.raises(InvalidClient):
        token(world, reg, refresh_params(world, reg), proof(nonce_ok=False), credentials)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, InvalidRequest),
        ({"grant_type": "password"}, UnsupportedGrantType),
        ({"grant_type": "client_credentials"}, UnauthorizedClient),
    ],
    ids=["missing-grant-type", "unsupported-grant-type", "grant-not-allowed"],
)
def test_the_grant_type_comes_before_the_nonce(
    world: World, params: dict[str, str], error: type[Exception]
) -> None:
    """What a nonce would not fix is said first: a client told to use a nonce has nothing
    else to fix."""
    reg = strict(world, grant_types=frozenset({"refresh_token"}))
    with pytest.raises(error):
        token(world, reg, params, proof(nonce_ok=False))


def test_client_credentials_grant_requires_the_nonce(world: World) -> None:
    reg = strict(world)
    cc = {"grant_type": "client_credentials"}
    with pytest.raises(UseDPoPNonce):
        token(world, reg, cc, proof(nonce_ok=False))
    assert token(world, reg, cc, proof(nonce_ok=True)).token_type == "DPoP"


def test_authorization_code_grant_requires_the_nonce_and_keeps_the_code(world: World) -> None:
    reg = strict(world, public=True, grant_types=frozenset({"authorization_code", "refresh_token"}))
    code = world.code(world.authorize(reg))
    params = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }
    before = world.store.snapshot()
    with pytest.raises(UseDPoPNonce):
        token(world, reg, params, proof(nonce_ok=False))
    assert world.store.snapshot() == before  # the code is not consumed
    response = token(world, reg, params, proof(nonce_ok=True))
    assert response.token_type == "DPoP" and response.refresh_token is not None
