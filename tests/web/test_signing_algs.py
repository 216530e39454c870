"""Per-client signing algorithms over HTTP, on both backends: each algorithm end to end
(code -> tokens -> verified with the published JWKS by kid, as PyJWT's PyJWKClient does ->
refresh -> introspection and UserInfo), a client switched from RS256 to ES256 whose old
tokens stay valid, and the algorithm-confusion forgeries every endpoint that reads our JWTs
must refuse (an RS256 key's token relabelled PS256 or really PS256-signed with the RSA key,
an HS256 token keyed with the public key, ``alg: none``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.conftest import ISSUER
from tests.support.family import RegisteredClient, register_client, register_user
from tests.web.helpers import INACTIVE, assert_tokens, bearer, introspection, refresh
from tests.web.test_dpop import code_for, code_params
from tokend.core.models import User
from tokend.runtime import Runtime
from tokend.store.schema import revoked_access_tokens

TOKEN = "/auth/v2/token"
INTROSPECT = "/auth/v2/introspect"
USERINFO = "/auth/v2/users/retrieve"
REVOKE = "/auth/v2/revoke"
ALGS = ("RS256", "PS256", "ES256", "EdDSA")
GRANTS = ("authorization_code", "refresh_token")
NO_TIME = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def expected_hash(token: str, alg: str) -> str:
    """OIDC Core §3.1.3.6 written out: the left half of the hash of the ID token's alg;
    EdDSA over Ed25519 hashes with SHA-512 (node-oidc-provider's oidc-token-hash)."""
    digest = (hashlib.sha512 if alg == "EdDSA" else hashlib.sha256)(token.encode()).digest()
    return b64(digest[: len(digest) // 2])


def verify_with_jwks(http: TestClient, token: str, *, audience: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """What a relying party with PyJWKClient does: fetch the JWKS, take the key the header's
    kid names, and verify with that key's own algorithm (never the header's alone)."""
    jwks = http.get("/auth/jwks").json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(
        token, key.key, algorithms=[key.algorithm_name], audience=audience, options=NO_TIME
    )
    return jwt.get_unverified_header(token), claims


def client_with(rt: Runtime, **algs: str | None) -> RegisteredClient:
    return register_client(rt, grant_types=GRANTS, scopes="openid offline email", **algs)


def exchange(http: TestClient, rt: Runtime, reg: RegisteredClient, user: User) -> dict[str, Any]:
    r = http.post(TOKEN, data=code_params(code_for(rt, reg, user)), auth=reg.basic)
    return assert_tokens(r)


def introspect(http: TestClient, reg: RegisteredClient, token: str) -> dict[str, Any]:
    return introspection(http.post(INTROSPECT, data={"token": token}, auth=reg.basic))


@pytest.fixture
def alice(rt: Runtime) -> User:
    return register_user(rt, email="alice@example.test", email_verified=True)


@pytest.mark.parametrize("alg", ALGS)
def test_each_algorithm_end_to_end(http: TestClient, rt: Runtime, alice: User, alg: str) -> None:
    reg = client_with(rt, access_token_alg=alg, id_token_alg=alg)
    jwks = http.get("/auth/jwks").json()["keys"]
    body = exchange(http, rt, reg, alice)
    for _ in range(2):  # the code exchange's tokens, then the refresh's
        header, claims = verify_with_jwks(http, body["access_token"], audience=ISSUER)
        assert header["alg"] == alg and header["typ"] == "at+jwt"
        assert claims["client_id"] == reg.client_id
        id_header, id_claims = verify_with_jwks(http, body["id_token"], audience=reg.client_id)
        assert id_header["alg"] == alg and id_header["typ"] == "JWT"
        assert id_claims["at_hash"] == expected_hash(body["access_token"], alg)
        # The key is published with its algorithm and use, one current key per algorithm.
        jwks = http.get("/auth/jwks").json()["keys"]
        [jwk] = [k for k in jwks if k["kid"] == header["kid"]]
        assert jwk["alg"] == alg and jwk["use"] == "sig" and "d" not in jwk
        assert id_header["kid"] == header["kid"]
        active = introspect(http, reg, body["access_token"])
        assert active["active"] is True and active["sub"] == claims["sub"]
        me = http.get(USERINFO, headers=bearer(body["access_token"]))
        assert me.status_code == 200, me.text
        body = assert_tokens(http.post(TOKEN, data=refresh(body["refresh_token"]), auth=reg.basic))
    # The server's default keys are still there: a client's algorithm adds one, replaces none.
    algs = {k["alg"] for k in jwks}
    assert {"RS256", alg} <= algs
    assert len([k for k in rt.store.list_keys() if k.retired_at is None]) == len(algs)


def test_default_client_keeps_rs256_and_discovery_lists_every_alg(
    http: TestClient, rt: Runtime, alice: User
) -> None:
    reg = client_with(rt)
    body = exchange(http, rt, reg, alice)
    assert verify_with_jwks(http, body["access_token"], audience=ISSUER)[0]["alg"] == "RS256"
    assert verify_with_jwks(http, body["id_token"], audience=reg.client_id)[0]["alg"] == "RS256"
    meta = http.get("/.well-known/openid-configuration").json()
    assert meta["id_token_signing_alg_values_supported"] == list(ALGS)
    assert "none" not in meta["id_token_signing_alg_values_supported"]


def test_client_switched_from_rs256_to_es256_keeps_its_old_tokens(
    http: TestClient, rt: Runtime, alice: User
) -> None:
    reg = client_with(rt)
    old = exchange(http, rt, reg, alice)
    assert jwt.get_unverified_header(old["access_token"])["alg"] == "RS256"
    changes = {"access_token_alg": "ES256", "id_token_alg": "ES256"}
    assert rt.store.update_client(reg.client_id, changes, now=rt.clock.now()) is not None
    new = assert_tokens(http.post(TOKEN, data=refresh(old["refresh_token"]), auth=reg.basic))
    assert jwt.get_unverified_header(new["access_token"])["alg"] == "ES256"
    id_header, id_claims = verify_with_jwks(http, new["id_token"], audience=reg.client_id)
    assert id_header["alg"] == "ES256"
    assert id_claims["at_hash"] == expected_hash(new["access_token"], "ES256")
    # Both the RS256 token issued before the switch and the ES256 one verify until they expire.
    for token in (old["access_token"], new["access_token"]):
        assert introspect(http, reg, token)["active"] is True
        assert http.get(USERINFO, headers=bearer(token)).status_code == 200
        verify_with_jwks(http, token, audience=ISSUER)
    verify_with_jwks(http, old["id_token"], audience=reg.client_id)


def _segments(token: str) -> list[str]:
    return token.split(".")


def _relabel(token: str, **header: Any) -> str:
    """``token`` with its JOSE header's members changed, payload and signature kept."""
    h, p, s = _segments(token)
    decoded = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    return ".".join([b64(json.dumps({**decoded, **header}).encode()), p, s])


def _compact(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def test_algorithm_confusion_is_refused_everywhere(
    http: TestClient, rt: Runtime, alice: User
) -> None:
    """Every endpoint that reads our JWTs takes the algorithm from the key the kid names."""
    rs = client_with(rt)  # RS256
    ps = client_with(rt, access_token_alg="PS256")
    rs_token = exchange(http, rt, rs, alice)["access_token"]
    ps_token = exchange(http, rt, ps, alice)["access_token"]
    rs_kid = jwt.get_unverified_header(rs_token)["kid"]
    claims = jwt.decode(rs_token, options={"verify_signature": False})
    rsa_private = rt.keys._current["RS256"].key
    public_pem = rsa_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(
        next(k for k in http.get("/auth/jwks").json()["keys"] if k["kid"] == rs_kid)
    ).encode()
    forged = {
        # An RS256 key's token relabelled PS256 (its PKCS#1 v1.5 signature kept), and a
        # PS256 key's token relabelled RS256.
        "rs256-relabelled-ps256": _relabel(rs_token, alg="PS256"),
        "ps256-relabelled-rs256": _relabel(ps_token, alg="RS256"),
        # A real PSS signature by the RS256 key: the right key, not its algorithm.
        "pss-by-the-rs256-key": jwt.encode(
            claims, rsa_private, algorithm="PS256", headers={"kid": rs_kid, "typ": "at+jwt"}
        ),
        # HS256 keyed with what every verifier has: the public key (PEM, and the JWK).
        "hs256-with-public-pem": _compact(
            {"alg": "HS256", "kid": rs_kid, "typ": "at+jwt"},
            claims,
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        ),
        "hs256-with-public-jwk": _compact(
            {"alg": "HS256", "kid": rs_kid, "typ": "at+jwt"},
            claims,
            lambda data: hmac.new(jwk_json, data, hashlib.sha256).digest(),
        ),
        "alg-none": ".".join(
            [
                b64(json.dumps({"alg": "none", "kid": rs_kid, "typ": "at+jwt"}).encode()),
                b64(json.dumps(claims).encode()),
                "",
            ]
        ),
        "alg-none-with-rs256-signature": _relabel(rs_token, alg="none"),
    }
    # The genuine tokens work, so a refusal below is the forgery's.
    assert introspect(http, rs, rs_token)["active"] is True
    assert introspect(http, rs, ps_token)["active"] is True
    for name, token in forged.items():
        assert introspect(http, rs, token) == INACTIVE, name
        r = http.get(USERINFO, headers=bearer(token))
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert http.post(REVOKE, data={"token": token}, auth=rs.basic).status_code == 200
    # Revoking a forgery revokes nothing (RFC 7009 answers 200 whatever the token).
    with rt.store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(revoked_access_tokens))
        assert count.scalar_one() == 0
    assert introspect(http, rs, rs_token)["active"] is True
