"""Reuse detection is never defeated by DPoP (RFC 9700 §4.14.2, RFC 9449 §5; issue 10, §1).

The attack that escaped detection: a thief refreshes a public client's stolen, unbound
refresh token first, with a DPoP proof of the thief's own key. The family became bound to
the thief's key, so when the real client (which never used DPoP) presented the same token,
the binding check refused it *before* the spent check: ``invalid_grant``, rollback, no
event, and the thief kept refreshing until the absolute expiry.

The rules these tests hold (docs/security.md, R1):

- a spent token is judged before any binding: outside the grace window it is reuse whatever
  proof (or none) comes with it;
- inside the grace window only the same client with the same key (or none, as when the token
  was rotated) is a retry; another key, or none where there was one, is reuse;
- an unbound family may become bound at a rotation (RFC 9449 §5 wants public clients' refresh
  tokens bound; clients adopt DPoP late), never at a retry, and such a binding shields nothing.

Every case of the matrix, thief first or real client first, with and without proofs, public
and confidential clients, grace 0, past the window and inside it, ends with the family
revoked and a reuse event; except the one case that the grace window exists for (two
presentations without any key inside the window), which is the documented trade-off.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest

from tests.core.world import Registered, World
from tokend.core.errors import InvalidGrant
from tokend.core.events import EventKind
from tokend.core.models import DPoPProof, TokenRequest, TokenResponse

THIEF = "T" * 43
REAL = "R" * 43


def proof(jkt: str | None) -> DPoPProof | None:
    return None if jkt is None else DPoPProof(jkt, os.urandom(32), 1_800_000_000.0 + 120)


def refresh(world: World, reg: Registered, token: str, jkt: str | None) -> TokenResponse:
    params = {"grant_type": "refresh_token", "refresh_token": token}
    return world.full_service.token(TokenRequest(params, reg.credentials(), proof(jkt)))


def assert_reuse_detected(world: World, family_id: str, *tokens: str | None) -> None:
    family = world.store.family(family_id)
    assert family.revoked_at is not None, "the family must be revoked"
    assert world.store.state.revocation_reasons[family_id] == EventKind.REFRESH_TOKEN_REUSE
    assert [e.family_id for e in world.store.events(EventKind.REFRESH_TOKEN_REUSE)] == [family_id]
    for token in tokens:  # every token of the family is dead, the thief's successor too
        if token is not None:
            with pytest.raises(InvalidGrant):
                refresh(world, world.spa if family.client_id == "spa" else world.web, token, None)


KEYS = [None, "key"]  # the party's proof: none, or one of its own key
WHEN = ["grace_0", "past_grace", "inside_grace"]


def _cases() -> list[tuple[str, str | None, str | None, str, str]]:
    out = []
    for client, thief, real, order, when in itertools.product(
        ["public", "confidential"], KEYS, KEYS, ["thief_first", "real_first"], WHEN
    ):
        out.append((client, thief, real, order, when))
    return out


@pytest.mark.parametrize(("client", "thief", "real", "order", "when"), _cases())
def test_the_second_use_of_a_rotated_token_revokes_the_family(
    make_world: Callable[..., World],
    client: str,
    thief: str | None,
    real: str | None,
    order: str,
    when: str,
) -> None:
    world = make_world(refresh_reuse_grace=0 if when == "grace_0" else 10)
    reg = world.spa if client == "public" else world.web
    stolen = world.start(reg, "openid offline").refresh_token
    assert stolen is not None
    family_id = world.store.family_of(stolen).id
    parties = {"thief": THIEF if thief else None, "real": REAL if real else None}
    first, second = ("thief", "real") if order == "thief_first" else ("real", "thief")

    winner = refresh(world, reg, stolen, parties[first])
    assert winner.refresh_token is not None
    if client == "public" and parties[first] is not None:
        # The rotation with a proof bound the unbound family (to the thief's key, maybe).
        assert world.store.family(family_id).dpop_jkt == parties[first]
    world.clock.advance({"grace_0": 1, "past_grace": 11, "inside_grace": 1}[when])

    if when == "inside_grace" and parties[first] == parties[second]:
        # Only possible with no key on either side: the grace window's trade-off. The same
        # successor goes to both; the next use of it by the second of them is reuse.
        assert parties[first] is None
        retry = refresh(world, reg, stolen, parties[second])
        assert retry.refresh_token == winner.refresh_token
        assert len(world.store.events(EventKind.REFRESH_TOKEN_GRACE_RETRY)) == 1
        refresh(world, reg, winner.refresh_token, None)
        world.clock.advance(11)
        with pytest.raises(InvalidGrant):
            refresh(world, reg, retry.refresh_token, None)
        assert_reuse_detected(world, family_id)
        return

    with pytest.raises(InvalidGrant):
        refresh(world, reg, stolen, parties[second])
    assert_reuse_detected(world, family_id, winner.refresh_token)


def test_thief_binding_first_cannot_shield_the_family_from_the_real_holder(world: World) -> None:
    """The reproduction of issue 10 §1 at the core: grace 0, public client, thief first with
    its own key, real client without DPoP."""
    world = World(world.signer, world.clock, refresh_reuse_grace=0)
    stolen = world.start(world.spa, "openid offline").refresh_token
    assert stolen is not None
    thief = refresh(world, world.spa, stolen, THIEF)
    assert thief.token_type == "DPoP"
    world.clock.advance(30)
    with pytest.raises(InvalidGrant):
        refresh(world, world.spa, stolen, None)  # the real client, as it always does
    assert world.store.family_of(stolen).revoked_at is not None
    [event] = world.store.events(EventKind.REFRESH_TOKEN_REUSE)
    assert event.detail["dpop"] is False and event.detail["family_dpop_bound"] is True
    with pytest.raises(InvalidGrant):  # the thief's chain is dead
        refresh(world, world.spa, thief.refresh_token, THIEF)


def test_an_unspent_token_without_the_bound_key_changes_nothing(world: World) -> None:
    """The other side of the rule: someone holding the live token of a bound family but not
    its key can neither use it nor burn it (no revocation, the real client goes on)."""
    stolen = world.start(world.spa, "openid offline").refresh_token
    assert stolen is not None
    bound = refresh(world, world.spa, stolen, REAL).refresh_token
    world.clock.advance(60)
    before = world.store.snapshot()
    for jkt in (None, THIEF):
        with pytest.raises(InvalidGrant):
            refresh(world, world.spa, bound, jkt)
    assert world.store.snapshot().tokens == before.tokens
    assert world.store.snapshot().families == before.families
    assert refresh(world, world.spa, bound, REAL).token_type == "DPoP"


def test_a_grace_retry_never_binds_the_family(world: World) -> None:
    """A token rotated without a proof, retried inside the window with one, is reuse: a
    retry cannot change the key state the rotation left (else a thief could bind a family
    by a retry and lock the real holder out of its live successor)."""
    stolen = world.start(world.spa, "openid offline").refresh_token
    assert stolen is not None
    real = refresh(world, world.spa, stolen, None)
    world.clock.advance(1)
    with pytest.raises(InvalidGrant):
        refresh(world, world.spa, stolen, THIEF)
    family = world.store.family_of(stolen)
    assert family.dpop_jkt is None and family.revoked_at is not None
    with pytest.raises(InvalidGrant):
        refresh(world, world.spa, real.refresh_token, None)


# -- bounded grace retries (issue 10, §5) -----------------------------------------------------


@pytest.mark.parametrize("reg_name", ["spa", "web"])
def test_grace_retries_are_bounded_and_recorded(
    make_world: Callable[..., World], reg_name: str
) -> None:
    world = make_world(refresh_reuse_grace=10, refresh_grace_retries=3)
    reg = getattr(world, reg_name)
    token = world.start(reg, "openid offline").refresh_token
    assert token is not None
    successor = refresh(world, reg, token, None).refresh_token
    for i in range(3):
        world.clock.advance(1)
        retry = refresh(world, reg, token, None)
        assert retry.refresh_token == successor
        assert len(world.store.events(EventKind.REFRESH_TOKEN_GRACE_RETRY)) == i + 1
    world.clock.advance(1)
    with pytest.raises(InvalidGrant):  # the fourth: not a lost response, a replay storm
        refresh(world, reg, token, None)
    assert world.store.family_of(token).revoked_at is not None
    assert len(world.store.events(EventKind.REFRESH_TOKEN_REUSE)) == 1
    with pytest.raises(InvalidGrant):
        refresh(world, reg, successor, None)


def test_grace_retry_event_names_no_secret(world: World) -> None:
    token = world.start(world.web, "openid offline").refresh_token
    assert token is not None
    successor = refresh(world, world.web, token, None).refresh_token
    refresh(world, world.web, token, None)
    [event] = world.store.events(EventKind.REFRESH_TOKEN_GRACE_RETRY)
    text = repr(event)
    assert token not in text and successor not in text
    assert event.client_id == "web" and event.family_id == world.store.family_of(token).id
