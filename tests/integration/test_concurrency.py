"""Rotation under real concurrency: many simultaneous refreshes of one token against a
multi-worker server (two processes), on SQLite and PostgreSQL (DESIGN.md: "of any number of
concurrent requests with the same token, across processes and machines, exactly one
successor exists")."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.family import first_family
from tests.support.server import running_server, storm
from tokend.core.secrets import hash_secret
from tokend.store.schema import refresh_tokens, security_events, token_families

N = 32


def _storm(base: str, auth: tuple[str, str], token: str) -> list[httpx.Response]:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    return storm([base], N, "/auth/v2/token", auth=auth, data=data)


def _family_state(rt, family_id_of_token: bytes):  # type: ignore[no-untyped-def]
    with rt.store.engine.connect() as conn:
        fid = conn.execute(
            select(refresh_tokens.c.family_id).where(
                refresh_tokens.c.token_hash == family_id_of_token
            )
        ).scalar_one()
        n_tokens = conn.execute(
            select(func.count()).where(refresh_tokens.c.family_id == fid)
        ).scalar_one()
        revoked = conn.execute(
            select(token_families.c.revoked_at).where(token_families.c.id == fid)
        ).scalar_one()
        reuse_events = conn.execute(
            select(func.count()).where(
                security_events.c.family_id == fid, security_events.c.kind == "refresh_token_reuse"
            )
        ).scalar_one()
    return n_tokens, revoked, reuse_events


@pytest.mark.timeout(90)
def test_grace_zero_exactly_one_successor(live_rt, db_url, server_env):
    family = first_family(live_rt, name="concurrency", scopes="offline")
    with running_server(
        db_url, workers=2, env={**server_env, "TOKEND_REFRESH_REUSE_GRACE": "0"}
    ) as base:
        responses = _storm(base, family.auth, family.refresh_token)
    ok = [r for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code != 200]
    assert len(ok) == 1, [r.text for r in responses]
    assert all(r.status_code == 400 and r.json()["error"] == "invalid_grant" for r in rejected)
    n_tokens, revoked, reuse_events = _family_state(live_rt, hash_secret(family.refresh_token))
    assert n_tokens == 2  # the original and exactly one successor
    # Every loser presented a spent token with no grace: reuse, so the family is revoked.
    assert revoked is not None
    assert reuse_events >= 1


@pytest.mark.timeout(90)
def test_grace_window_one_identical_successor_for_all(live_rt, db_url, server_env):
    family = first_family(live_rt, name="concurrency", scopes="offline")
    # N concurrent tabs: one rotation and N - 1 grace retries, all inside the retry bound.
    env = {
        **server_env,
        "TOKEND_REFRESH_REUSE_GRACE": "10",
        "TOKEND_REFRESH_GRACE_RETRIES": str(N - 1),
    }
    with running_server(db_url, workers=2, env=env) as base:
        responses = _storm(base, family.auth, family.refresh_token)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        successors = {r.json()["refresh_token"] for r in responses}
        assert len(successors) == 1
        # Distinct access tokens, one per response (fresh jti each).
        assert len({r.json()["access_token"] for r in responses}) == N
        n_tokens, revoked, reuse_events = _family_state(live_rt, hash_secret(family.refresh_token))
        assert (n_tokens, revoked, reuse_events) == (2, None, 0)
        # The shared successor is a normal, working refresh token.
        r = httpx.post(
            f"{base}/auth/v2/token",
            auth=family.auth,
            data={"grant_type": "refresh_token", "refresh_token": successors.pop()},
        )
        assert r.status_code == 200, r.text
