"""DPoP in the grants (RFC 9449 §5): a checked proof reaches the core as plain data
(``TokenRequest.dpop``: the key thumbprint and the proof's replay-cache entry). Bound access
tokens, public clients' families bound at issue or at their first DPoP refresh, refreshes of
a bound family without a proof or with another key refused with nothing changed, replayed
proofs refused with nothing changed, and the compare-and-set race of two bindings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.core.memory_store import MemoryTransaction
from tests.core.world import DERIVATION_KEY, REDIRECT_URI, VERIFIER, Registered, World
from tokend.core.bearer import AccessToken, InvalidToken, check_binding
from tokend.core.errors import InvalidDPoPProof, InvalidGrant, OAuthError
from tokend.core.models import DPoPProof, StoredRefreshToken, TokenRequest, TokenResponse
from tokend.core.secrets import derive_successor, hash_secret

JKT_A = "A" * 43
JKT_B = "B" * 43


def proof(jkt: str = JKT_A) -> DPoPProof:
    """A fresh (never seen) proof of the key with thumbprint ``jkt``."""
    return DPoPProof(jkt, os.urandom(32), 1_800_000_000.0 + 120)


def token(
    world: World, reg: Registered, params: dict[str, str], dpop: DPoPProof | None
) -> TokenResponse:
    return world.full_service.token(TokenRequest(params, reg.credentials(), dpop))


def refresh(
    world: World, reg: Registered, refresh_token: str | None, dpop: DPoPProof | None = None
) -> TokenResponse:
    assert refresh_token is not None
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return token(world, reg, params, dpop)


def exchange(world: World, reg: Registered, dpop: DPoPProof | None) -> TokenResponse:
    code = world.code(world.authorize(reg, scope="openid offline"))
    params = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
    }
    if reg.client.public:
        params["code_verifier"] = VERIFIER
    return token(world, reg, params, dpop)


def assert_bound(world: World, response: TokenResponse, jkt: str) -> None:
    assert response.token_type == "DPoP"
    assert world.access_claims(response)["cnf"] == {"jkt": jkt}


def assert_bearer(world: World, response: TokenResponse) -> None:
    assert response.token_type == "Bearer"
    assert "cnf" not in world.access_claims(response)


def refused(world: World, error: type[OAuthError], reg: Registered, *args: Any) -> OAuthError:
    """The refresh is refused with ``error`` and the store is exactly as before."""
    before = world.store.snapshot()
    with pytest.raises(error) as info:
        refresh(world, reg, *args)
    after = world.store.snapshot()
    assert (after.families, after.tokens, after.events, after.dpop_proofs) == (
        before.families,
        before.tokens,
        before.events,
        before.dpop_proofs,
    )
    return info.value


# -- authorization_code -----------------------------------------------------------------------


def test_code_exchange_with_a_proof_binds_a_public_clients_family(world: World) -> None:
    response = exchange(world, world.spa, proof())
    assert_bound(world, response, JKT_A)
    assert world.store.family_of(response.refresh_token).dpop_jkt == JKT_A


def test_code_exchange_with_a_proof_binds_only_the_access_token_of_a_confidential_client(
    world: World,
) -> None:
    """RFC 9449 §5: confidential clients' refresh tokens are bound by their authentication."""
    response = exchange(world, world.web, proof())
    assert_bound(world, response, JKT_A)
    assert world.store.family_of(response.refresh_token).dpop_jkt is None
    assert_bearer(world, refresh(world, world.web, response.refresh_token))  # no proof needed


def test_code_exchange_without_a_proof_is_unbound(world: World) -> None:
    response = exchange(world, world.spa, None)
    assert_bearer(world, response)
    assert world.store.family_of(response.refresh_token).dpop_jkt is None
    assert world.store.state.dpop_proofs == {}


def test_code_exchange_with_a_replayed_proof_consumes_nothing(world: World) -> None:
    used = proof()
    exchange(world, world.spa, used)
    code = world.code(world.authorize(world.spa, scope="openid offline"))
    params = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }
    before = world.store.snapshot()
    with pytest.raises(InvalidDPoPProof):
        token(world, world.spa, params, used)
    assert world.store.snapshot().codes == before.codes  # the code is not consumed
    assert world.store.snapshot().families == before.families
    assert_bound(world, token(world, world.spa, params, proof(JKT_B)), JKT_B)


# -- refresh_token ----------------------------------------------------------------------------


@pytest.fixture
def bound(world: World) -> str:
    """The refresh token of a public client's family bound to key A."""
    response = exchange(world, world.spa, proof())
    assert response.refresh_token is not None
    return response.refresh_token


def test_bound_family_refreshes_with_a_proof_of_its_key(world: World, bound: str) -> None:
    response = refresh(world, world.spa, bound, proof())
    assert_bound(world, response, JKT_A)
    assert world.store.token(bound).spent_at is not None
    world.clock.advance(60)
    assert_bound(world, refresh(world, world.spa, response.refresh_token, proof()), JKT_A)


def test_bound_family_without_a_proof_is_invalid_grant_and_nothing_changes(
    world: World, bound: str
) -> None:
    exc = refused(world, InvalidGrant, world.spa, bound, None)
    assert "DPoP" in exc.description
    assert world.store.token(bound).spent_at is None  # not spent: the real client goes on
    assert_bound(world, refresh(world, world.spa, bound, proof()), JKT_A)


def test_bound_family_with_another_key_is_invalid_grant_and_nothing_changes(
    world: World, bound: str
) -> None:
    exc = refused(world, InvalidGrant, world.spa, bound, proof(JKT_B))
    assert "another key" in exc.description
    assert world.store.token(bound).spent_at is None
    assert world.store.family_of(bound).revoked_at is None  # not taken for a reuse
    assert_bound(world, refresh(world, world.spa, bound, proof()), JKT_A)


def test_replayed_proof_is_refused_before_anything_else(world: World, bound: str) -> None:
    used = proof()
    rt1 = refresh(world, world.spa, bound, used).refresh_token
    exc = refused(world, InvalidDPoPProof, world.spa, rt1, used)
    assert "used before" in exc.description
    assert world.store.token(rt1).spent_at is None
    refresh(world, world.spa, rt1, proof())


@pytest.mark.parametrize("retry_jkt", [None, JKT_B], ids=["no_proof", "other_key"])
def test_grace_retry_of_a_bound_family_without_its_key_is_reuse(
    world: World, bound: str, retry_jkt: str | None
) -> None:
    """Inside the grace window a retry must be the same client with the same key: a spent
    token presented without it is reuse (issue 10 §1), unlike the live token (above)."""
    rt1 = refresh(world, world.spa, bound, proof()).refresh_token
    with pytest.raises(InvalidGrant):
        refresh(world, world.spa, bound, proof(retry_jkt) if retry_jkt else None)
    assert world.store.family_of(bound).revoked_at is not None
    with pytest.raises(InvalidGrant):
        refresh(world, world.spa, rt1, proof())


def test_grace_retry_of_a_bound_family_with_its_key_gets_the_same_successor(
    world: World, bound: str
) -> None:
    rt1 = refresh(world, world.spa, bound, proof()).refresh_token
    retry = refresh(world, world.spa, bound, proof())
    assert retry.refresh_token == rt1
    assert_bound(world, retry, JKT_A)


def test_public_clients_first_dpop_refresh_binds_its_unbound_family(world: World) -> None:
    first = world.start(world.spa, "openid offline")
    rt1 = refresh(world, world.spa, first.refresh_token).refresh_token  # Bearer: stays unbound
    assert world.store.family_of(rt1).dpop_jkt is None
    world.clock.advance(60)
    rt2 = refresh(world, world.spa, rt1, proof()).refresh_token
    assert world.store.family_of(rt2).dpop_jkt == JKT_A
    world.clock.advance(60)
    refused(world, InvalidGrant, world.spa, rt2, None)
    refused(world, InvalidGrant, world.spa, rt2, proof(JKT_B))
    assert_bound(world, refresh(world, world.spa, rt2, proof()), JKT_A)


def test_confidential_client_refresh_with_a_proof_binds_the_access_token_only(
    world: World,
) -> None:
    first = world.start(world.web, "openid offline")
    response = refresh(world, world.web, first.refresh_token, proof())
    assert_bound(world, response, JKT_A)
    assert world.store.family_of(response.refresh_token).dpop_jkt is None
    world.clock.advance(60)
    bearer = refresh(world, world.web, response.refresh_token)
    assert_bearer(world, bearer)
    world.clock.advance(60)
    assert_bound(world, refresh(world, world.web, bearer.refresh_token, proof(JKT_B)), JKT_B)


def test_refresh_without_a_proof_records_nothing(world: World) -> None:
    first = world.start(world.spa, "openid offline")
    assert_bearer(world, refresh(world, world.spa, first.refresh_token))
    assert world.store.state.dpop_proofs == {}


class _RacingBinder:
    """A transaction whose first read is stale: right after it, another process binds the
    family to key A and commits; with ``spend``, by rotating this very token with a proof
    (so this one loses the token's compare-and-set), else by a grace retry of the family's
    previous token (so this one rotates, then finds the family bound: the binding's own
    compare-and-set). As on PostgreSQL, where the family row of the join is not re-read."""

    def __init__(self, tx: MemoryTransaction, world: World, presented: str, spend: bool) -> None:
        self._tx = tx
        self._world = world
        self._presented = presented
        self._spend = spend
        self._raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def find_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        stored = self._tx.find_refresh_token(token_hash)
        if not self._raced and stored is not None:
            self._raced = True
            successor = hash_secret(derive_successor(DERIVATION_KEY, self._presented, JKT_A))
            now = self._world.clock.now()
            assert self._tx.bind_family_dpop(stored.family.id, JKT_A)
            if not self._spend:
                return stored
            assert self._tx.spend_refresh_token(token_hash, at=now, successor_hash=successor)
            self._tx.insert_refresh_token(
                successor, family_id=stored.family.id, created_at=now, expires_at=now + 60
            )
        return stored


def _race(world: World, monkeypatch: pytest.MonkeyPatch, *, spend: bool) -> str:
    """An unbound family of the public client whose next refresh races a binding one."""
    first = world.start(world.spa, "openid offline")
    assert first.refresh_token is not None
    presented = first.refresh_token
    real_transaction = world.store.transaction

    @contextmanager
    def racing_transaction() -> Iterator[_RacingBinder]:
        with real_transaction() as tx:
            yield _RacingBinder(tx, world, presented, spend)

    monkeypatch.setattr(world.store, "transaction", racing_transaction)
    return presented


@pytest.mark.parametrize(
    ("spend", "dpop", "wins"),
    [
        (True, None, False),
        (True, JKT_B, False),
        (True, JKT_A, True),
        (False, JKT_B, False),
        (False, JKT_A, True),
    ],
    ids=[
        "rotated_no_proof",
        "rotated_other_key",
        "rotated_same_key",
        "bound_other_key",
        "bound_same_key",
    ],
)
def test_losing_a_race_to_a_binding_refresh(
    world: World, monkeypatch: pytest.MonkeyPatch, spend: bool, dpop: str | None, wins: bool
) -> None:
    """The loser gets tokens only with a proof of the key the winner bound the family to.
    Having lost the token's compare-and-set, it presents a spent token: without that key it
    is reuse (the family is revoked, the refusal commits); having only lost the binding's,
    it is ``invalid_grant`` and its transaction rolls back."""
    presented = _race(world, monkeypatch, spend=spend)
    dpop_proof = proof(dpop) if dpop else None
    if wins:
        response = refresh(world, world.spa, presented, dpop_proof)
        assert response.refresh_token == derive_successor(DERIVATION_KEY, presented, JKT_A)
        assert_bound(world, response, JKT_A)
        assert world.store.family_of(presented).dpop_jkt == JKT_A
    elif spend:
        with pytest.raises(InvalidGrant):
            refresh(world, world.spa, presented, dpop_proof)
        assert world.store.family_of(presented).revoked_at is not None  # reuse detected
    else:
        before = world.store.rollbacks
        with pytest.raises(InvalidGrant):
            refresh(world, world.spa, presented, dpop_proof)
        assert world.store.rollbacks == before + 1
        # (The in-memory "winner" ran inside the loser's transaction, so it rolled back too.)
        assert world.store.family_of(presented).revoked_at is None


# -- client_credentials -----------------------------------------------------------------------


def test_client_credentials_with_a_proof_is_bound_and_replays_are_refused(world: World) -> None:
    used = proof()
    params = {"grant_type": "client_credentials"}
    assert_bound(world, token(world, world.web, params, used), JKT_A)
    with pytest.raises(InvalidDPoPProof):
        token(world, world.web, params, used)
    assert_bearer(world, token(world, world.web, params, None))


# -- at a protected resource (RFC 9449 §7) -----------------------------------------------------


def _access(jkt: str | None) -> AccessToken:
    return AccessToken("sub", "client", ("openid",), "fid", 2e9, jkt)


@pytest.mark.parametrize(
    ("token_jkt", "proof_jkt", "ok"),
    [
        (None, None, True),  # Bearer token, Bearer scheme
        (JKT_A, JKT_A, True),  # bound token, DPoP scheme with its key
        (JKT_A, None, False),  # bound token as Bearer (§7.2)
        (JKT_A, JKT_B, False),  # bound token, proof of another key
        (None, JKT_A, False),  # unbound token with the DPoP scheme
    ],
    ids=["bearer", "dpop", "bound_as_bearer", "other_key", "unbound_as_dpop"],
)
def test_check_binding(token_jkt: str | None, proof_jkt: str | None, ok: bool) -> None:
    if ok:
        check_binding(_access(token_jkt), proof_jkt)
    else:
        with pytest.raises(InvalidToken):
            check_binding(_access(token_jkt), proof_jkt)
