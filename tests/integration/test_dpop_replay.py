"""DPoP replay detection across processes (RFC 9449 §11.1), on SQLite and PostgreSQL: one
proof sent many times at once to a real 2-worker `tokend serve`, and to two separate
servers on one database, is accepted exactly once. The replay cache is the database's
``dpop_proofs`` table, so it holds across workers, servers and machines alike."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.dpop import ProofKey
from tests.support.family import first_family
from tests.support.server import running_server, storm
from tokend.core.secrets import hash_secret
from tokend.store.schema import dpop_proofs, refresh_tokens, token_families

N = 16
TOKEN = "/auth/v2/token"


def _storm(bases: list[str], auth: tuple[str, str], token: str, proof: str) -> list[httpx.Response]:
    """N identical requests at once, each on its own connection, spread over ``bases``."""
    data = {"grant_type": "refresh_token", "refresh_token": token}
    return storm(bases, N, TOKEN, auth=auth, data=data, headers={"DPoP": proof})


def _state(rt, token: str) -> tuple[int, object, int]:  # type: ignore[no-untyped-def]
    with rt.store.engine.connect() as conn:
        fid = conn.execute(
            select(refresh_tokens.c.family_id).where(
                refresh_tokens.c.token_hash == hash_secret(token)
            )
        ).scalar_one()
        n_tokens = conn.execute(
            select(func.count()).where(refresh_tokens.c.family_id == fid)
        ).scalar_one()
        revoked = conn.execute(
            select(token_families.c.revoked_at).where(token_families.c.id == fid)
        ).scalar_one()
        proofs = conn.execute(select(func.count()).select_from(dpop_proofs)).scalar_one()
    return n_tokens, revoked, proofs


def _exactly_one_accepted(responses: list[httpx.Response]) -> httpx.Response:
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 1, [r.text for r in responses]
    for r in responses:
        if r.status_code != 200:
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "invalid_dpop_proof", r.text
    assert ok[0].json()["token_type"] == "DPoP"
    return ok[0]


@pytest.mark.timeout(90)
def test_one_proof_sent_to_both_workers_is_accepted_once(live_rt, db_url, server_env) -> None:
    """Without DPoP every one of these identical requests would get the same successor
    (the grace window); with one proof, exactly one gets through, whichever worker it hit."""
    family = first_family(live_rt, name="dpop replay", scopes="offline")
    auth, token = family.auth, family.refresh_token
    key = ProofKey()
    with running_server(db_url, workers=2, env=server_env) as base:
        proof = key.proof(base + TOKEN, iat=time.time())
        responses = _storm([base], auth, token, proof)
    _exactly_one_accepted(responses)
    n_tokens, revoked, proofs = _state(live_rt, token)
    assert (n_tokens, revoked, proofs) == (2, None, 1)  # one successor, one recorded proof


@pytest.mark.timeout(120)
def test_a_proof_used_on_one_server_is_a_replay_on_another(live_rt, db_url, server_env) -> None:
    """Two `tokend serve` processes on one database (as on two machines): a proof accepted
    by one is refused by the other, in either order and when both race."""
    family = first_family(live_rt, name="dpop replay", scopes="offline")
    auth, token = family.auth, family.refresh_token
    key = ProofKey()
    issuer = "http://tokend.test"  # one issuer for both: the htu proofs are made for
    env = {**server_env, "TOKEND_ISSUER": issuer}
    with running_server(db_url, env=env) as a, running_server(db_url, env=env) as b:
        for first, second in ((a, b), (b, a)):
            proof = key.proof(issuer + TOKEN, iat=time.time())
            data = {"grant_type": "refresh_token", "refresh_token": token}
            r = httpx.post(first + TOKEN, auth=auth, data=data, headers={"DPoP": proof})
            assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
            replay = httpx.post(second + TOKEN, auth=auth, data=data, headers={"DPoP": proof})
            assert replay.status_code == 400, replay.text
            assert replay.json()["error"] == "invalid_dpop_proof"
            token = r.json()["refresh_token"]
        proof = key.proof(issuer + TOKEN, iat=time.time())
        _exactly_one_accepted(_storm([a, b], auth, token, proof))
    n_tokens, revoked, proofs = _state(live_rt, token)
    assert (n_tokens, revoked, proofs) == (4, None, 3)
