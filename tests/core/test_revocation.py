"""``tokend.core.revocation`` (RFC 7009) over the in-memory world: what each token revokes,
whose tokens a client may revoke, and the silent success for everything else."""

from __future__ import annotations

import jwt
import pytest

from tests.core.memory_store import FakeSigner
from tests.core.status_store import Denied, SignerVerifier, StatusStore
from tests.core.world import World
from tokend.core.errors import InvalidClient, InvalidGrant, InvalidRequest
from tokend.core.events import EventKind
from tokend.core.models import ClientCredentials
from tokend.core.revocation import REVOKED_BY_CLIENT, RevocationService
from tokend.core.secrets import new_refresh_token

HINTS = [None, "refresh_token", "access_token", "id_token", "nonsense"]


@pytest.fixture
def setup(world: World, signer: FakeSigner) -> tuple[World, StatusStore, RevocationService]:
    store = StatusStore(world.store)
    service = RevocationService(
        store=store, verifier=SignerVerifier(signer), policy=world.policy, clock=world.clock
    )
    return world, store, service


def params(token: str, hint: str | None = None) -> dict[str, str]:
    return {"token": token} if hint is None else {"token": token, "token_type_hint": hint}


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize("hint", HINTS)
def test_refresh_token_revokes_its_family(setup, hint) -> None:
    world, store, service = setup
    first = world.start(scope="openid offline")
    second = world.refresh(first.refresh_token)
    sid = claims(first.access_token)["sid"]
    other_family = world.start(scope="openid offline")
    service.revoke(world.web.credentials(), params(second.refresh_token, hint))
    family = world.store.family(sid)
    assert family.revoked_at == world.clock.now()
    assert world.store.state.revocation_reasons[sid] == REVOKED_BY_CLIENT
    with pytest.raises(InvalidGrant, match="revoked"):
        world.refresh(second.refresh_token)
    assert store.denied == {}  # access tokens end with their family, not one by one
    # Another family of the same client and user is untouched.
    assert world.refresh(other_family.refresh_token).refresh_token


def test_a_spent_token_of_the_family_revokes_it_too(setup) -> None:
    world, _, service = setup
    first = world.start(scope="offline")
    second = world.refresh(first.refresh_token)
    service.revoke(world.web.credentials(), params(first.refresh_token))
    with pytest.raises(InvalidGrant):
        world.refresh(second.refresh_token)


@pytest.mark.parametrize("hint", HINTS)
def test_access_token_is_deny_listed_until_it_expires(setup, hint) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline")
    service.revoke(world.web.credentials(), params(tokens.access_token, hint))
    c = claims(tokens.access_token)
    assert store.denied == {c["jti"]: Denied(world.web.client_id, world.clock.now(), c["exp"])}
    # The family lives on (RFC 7009 §2.1 makes revoking it a MAY).
    assert world.store.family(c["sid"]).revoked_at is None
    assert world.refresh(tokens.refresh_token).refresh_token
    # Again: nothing new.
    world.clock.advance(5)
    service.revoke(world.web.credentials(), params(tokens.access_token))
    assert store.denied[c["jti"]].revoked_at == world.clock.now() - 5


def test_client_credentials_token(setup) -> None:
    world, store, service = setup
    cc = world.token(world.web, {"grant_type": "client_credentials"})
    service.revoke(world.web.credentials("client_secret_post"), params(cc.access_token))
    assert set(store.denied) == {claims(cc.access_token)["jti"]}


def test_public_client_revokes_with_its_client_id(setup) -> None:
    world, store, service = setup
    tokens = world.start(world.spa, scope="openid offline")
    service.revoke(world.spa.credentials(), params(tokens.refresh_token))
    with pytest.raises(InvalidGrant):
        world.refresh(tokens.refresh_token, world.spa)
    service.revoke(world.spa.credentials(), params(tokens.access_token))
    assert set(store.denied) == {claims(tokens.access_token)["jti"]}


def test_another_clients_tokens_are_left_alone(setup) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline")
    sid = claims(tokens.access_token)["sid"]
    for reg in (world.other, world.spa):
        for token in (tokens.refresh_token, tokens.access_token):
            service.revoke(reg.credentials(), params(token))
    assert world.store.family(sid).revoked_at is None
    assert store.denied == {}
    assert world.refresh(tokens.refresh_token).refresh_token
    # One row per (client, address) per window, counting the attempts (issue 10 §7).
    events = world.store.events(EventKind.REVOCATION_WRONG_CLIENT)
    assert [(e.client_id, e.family_id, dict(e.detail), e.address) for e in events] == [
        (reg, sid, {"owner_client_id": world.web.client_id}, None) for reg in ("other", "spa")
    ]
    assert [world.store.event_count(e) for e in events] == [2, 2]


def test_wrong_client_events_cannot_flood_the_trail(setup) -> None:
    """50 attempts from one address: one row counting 50; another address or the next
    window: a row of its own."""
    world, _, service = setup
    token = world.start(scope="openid offline").refresh_token
    for _ in range(50):
        service.revoke(world.spa.credentials(), params(token), address="192.0.2.1")
    service.revoke(world.spa.credentials(), params(token), address="192.0.2.2")
    world.clock.advance(3600)
    service.revoke(world.spa.credentials(), params(token), address="192.0.2.1")
    events = world.store.events(EventKind.REVOCATION_WRONG_CLIENT)
    assert [(e.address, world.store.event_count(e)) for e in events] == [
        ("192.0.2.1", 50),
        ("192.0.2.2", 1),
        ("192.0.2.1", 1),
    ]


@pytest.mark.parametrize(
    "credentials",
    [
        ClientCredentials("client_secret_basic", "web", "wrong"),
        ClientCredentials("client_secret_basic", "nobody", "x"),
        ClientCredentials("none", "web"),  # a confidential client must authenticate
        ClientCredentials("client_secret_post", "spa", "x"),  # a public client has no secret
        ClientCredentials("none", None),
    ],
)
def test_client_authentication_comes_first(setup, credentials) -> None:
    world, store, service = setup
    tokens = world.start(scope="offline")
    before = world.store.snapshot()
    for p in (params(tokens.refresh_token), params(tokens.access_token), {}):
        with pytest.raises(InvalidClient):
            service.revoke(credentials, p)
    assert world.store.snapshot() == before and store.denied == {}


def test_token_is_required(setup) -> None:
    world, _, service = setup
    with pytest.raises(InvalidRequest, match="token"):
        service.revoke(world.web.credentials(), {"token_type_hint": "refresh_token"})


def test_invalid_tokens_change_nothing_and_cost_no_write(setup, signer) -> None:
    world, store, service = setup
    tokens = world.start(scope="openid offline")
    c = claims(tokens.access_token)
    revoked = world.start(scope="openid offline")
    service.revoke(world.web.credentials(), params(revoked.refresh_token))
    revoked_sid = claims(revoked.access_token)["sid"]
    revoked_at = world.store.family(revoked_sid).revoked_at
    stranger = FakeSigner()  # another key, same kid-less shape
    expired = signer.sign_access_token({**c, "exp": int(world.clock.now())})
    bad_checksum = tokens.refresh_token[:-1] + ("A" if tokens.refresh_token[-1] != "A" else "B")
    candidates = [
        "garbage",
        tokens.access_token[:-3],
        tokens.access_token.replace(".", "", 1),
        new_refresh_token(),  # well-formed, unknown
        bad_checksum,
        tokens.id_token or "",  # an ID token is not an access token
        stranger.sign_access_token(c),
        signer.sign_access_token({**c, "iss": "https://elsewhere.test"}),
        expired,
        revoked.refresh_token,  # already revoked
    ]
    assert all(candidates)
    before = world.store.snapshot()
    writes, peeks = store.write_transactions, store.peeks
    for token in candidates:
        for hint in HINTS:
            service.revoke(world.web.credentials(), params(token, hint))
    assert world.store.snapshot() == before and store.denied == {}
    assert store.write_transactions == writes  # nothing to do: no write transaction at all
    # Only the two well-formed refresh tokens were looked up; bad checksums never are.
    assert store.peeks == peeks + 2 * len(HINTS)
    assert world.store.family(revoked_sid).revoked_at == revoked_at
