"""Properties of the token parsers: DPoP proofs (tokend.core.dpop), the JWS of access tokens
(tokend.keys.ring.KeyRing.verify), the claims checks (tokend.core.bearer) and the
Authorization header's token (tokend.web.userinfo).

For any input: the verified value or the documented error (``InvalidDPoPProof``,
``InvalidToken``), never anything else; what is signed verifies back unchanged; any change
to a signed token or proof, one character is enough, is refused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.conftest import ISSUER, SECRET_KEY
from tests.fuzz.strategies import (
    B64URL_ALPHABET,
    any_text,
    hostile_text,
    json_values,
    safe_json_values,
    safe_text,
)
from tests.support.dpop import ProofKey, b64
from tokend.config import Settings
from tokend.core.bearer import AccessToken, InvalidToken, check_access_token
from tokend.core.clock import FrozenClock
from tokend.core.dpop import (
    ALGS,
    MAX_JTI_LENGTH,
    MAX_PROOF_LENGTH,
    DPoPNonces,
    ProofVerifier,
    normalize_htu,
)
from tokend.core.errors import InvalidDPoPProof
from tokend.core.models import DPoPProof
from tokend.keys.ring import KeyRing
from tokend.runtime import build_runtime
from tokend.web.userinfo import bearer_token, dpop_token

NOW = 1_800_000_000.0
HTU = "https://issuer.test/auth/v2/token"
KEYS = {alg: ProofKey(alg) for alg in ALGS}
ED448 = ProofKey("EdDSA", curve="Ed448")


def verifier() -> ProofVerifier:
    return ProofVerifier(window=60, nonces=DPoPNonces(b"n" * 32))


def verify(values: list[str], **kw: Any) -> DPoPProof | None:
    """The proof, or None when it was refused with ``InvalidDPoPProof`` (and nothing else)."""
    kw.setdefault("htm", "POST")
    kw.setdefault("htu", HTU)
    kw.setdefault("now", NOW)
    try:
        return verifier().verify(values, **kw)
    except InvalidDPoPProof as exc:
        assert exc.error == "invalid_dpop_proof" and exc.description
        return None


def mutate(token: str, data: st.DataObject) -> str:
    """``token`` with one character replaced by another base64url character or a dot."""
    at = data.draw(st.integers(0, len(token) - 1), label="at")
    repl = data.draw(st.sampled_from(B64URL_ALPHABET + ".").filter(lambda c: c != token[at]))
    return token[:at] + repl + token[at + 1 :]


# -- DPoP proofs (RFC 9449 §4.3) -------------------------------------------------------------


@given(st.lists(hostile_text, max_size=3))
def test_proof_any_header_values(values: list[str]) -> None:
    assert verify(values) is None


def _segment(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode("utf-8", "surrogatepass")
    return b64(raw)


jwks = st.one_of(
    st.sampled_from([k.jwk for k in (*KEYS.values(), ED448)]).flatmap(
        lambda jwk: st.dictionaries(
            st.sampled_from([*jwk, "d", "k", "crv", "kty", "e", "n"]),
            st.one_of(st.sampled_from([*jwk.values(), "P-256", "RSA", "AQAB"]), json_values),
            max_size=6,
        ).map(lambda changes: {**jwk, **changes})
    ),
    json_values,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "typ": st.one_of(st.just("dpop+jwt"), any_text),
        "alg": st.sampled_from([*ALGS, "none", "HS256", "RS512", "ES384", "Ed25519"]),
        "jwk": jwks,
        "crit": json_values,
        "kid": json_values,
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "jti": st.one_of(st.text(max_size=8), st.just("x" * (MAX_JTI_LENGTH + 1)), json_values),
        "htm": st.sampled_from(["POST", "GET", "post", ""]),
        "htu": st.sampled_from(
            [
                HTU,
                HTU.upper(),
                HTU + "?q",
                "https://issuer.test:443/auth/v2/./token",
                "https://other.test/auth/v2/token",
                "auth/v2/token",
            ]
        ),
        "iat": st.one_of(st.integers(int(NOW) - 200, int(NOW) + 200), json_values),
        "nonce": json_values,
        "ath": json_values,
    },
)


@given(
    headers,
    st.one_of(claims, json_values),
    st.one_of(st.binary(max_size=600), st.just(b"")),
    st.sampled_from(["segments", "raw"]),
)
def test_proof_any_parts_unsigned(header: Any, payload: Any, sig: bytes, how: str) -> None:
    """Any header and payload with a signature not made by the key: always refused."""
    proof = f"{_segment(header)}.{_segment(payload)}.{b64(sig)}"
    if how == "raw":
        proof = proof.replace(".", "..", 1)
    assert verify([proof]) is None


@given(st.sampled_from(sorted(KEYS)), claims, st.sampled_from([None, "the-access-token"]))
def test_proof_signed_any_claims(alg: str, payload: dict[str, Any], access_token: Any) -> None:
    """A proof signed by its own key: accepted exactly when every claim is right."""
    key = KEYS[alg]
    proof = key.sign(payload)
    result = verify([proof], access_token=access_token)
    if result is None:
        return
    assert result.jkt == key.jkt
    assert payload["htm"] == "POST"
    assert normalize_htu(payload["htu"]) == HTU
    assert isinstance(payload["jti"], str) and 0 < len(payload["jti"]) <= MAX_JTI_LENGTH
    assert abs(payload["iat"] - NOW) <= 60
    assert access_token is None  # no generated ath is ever the token's hash
    assert result.nonce_ok is False


@given(st.sampled_from([*KEYS.values(), ED448]), st.data())
def test_proof_one_changed_character_is_refused(key: ProofKey, data: st.DataObject) -> None:
    proof = key.proof(HTU, iat=NOW)
    assert verify([proof]) is not None
    changed = mutate(proof, data)
    assert verify([changed]) is None


@given(st.integers(MAX_PROOF_LENGTH + 1, 4 * MAX_PROOF_LENGTH))
def test_proof_size_is_bounded(size: int) -> None:
    assert verify(["a" * size]) is None


# -- htu normalization (RFC 3986 §6.2.2-6.2.3) -----------------------------------------------

url_parts = st.tuples(
    st.sampled_from(["http", "https", "HTTPS", "ftp", ""]),
    st.sampled_from(["issuer.test", "ISSUER.test", "[::1]", "127.0.0.1", "", "a@b", "x:y@h"]),
    st.sampled_from(["", ":443", ":80", ":8443", ":0", ":99999", ":x"]),
    st.lists(
        st.sampled_from([".", "..", "%2e", "%2E%2e", "a", "%41", "%7e", "%7E", "%2F", "", "b c"]),
        max_size=6,
    ),
    st.sampled_from(["", "?q=1", "#f", "?"]),
)


@given(
    st.one_of(any_text, url_parts.map(lambda p: f"{p[0]}://{p[1]}{p[2]}/{'/'.join(p[3])}{p[4]}"))
)
def test_htu_normalization_is_total_and_idempotent(url: str) -> None:
    try:
        once = normalize_htu(url)
    except Exception as exc:  # pragma: no cover - the failure this test looks for
        pytest.fail(f"normalize_htu({url!r}) raised {exc!r}")
    if once is not None:
        assert once.startswith(("http://", "https://"))
        assert "?" not in once and "#" not in once
        assert normalize_htu(once) == once


# -- access tokens: the JWS (KeyRing.verify) and the claims (check_access_token) -------------


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyRing]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-keys') / 'tokend.db'}"
    settings = Settings(database_url=url, secret_key=SECRET_KEY, issuer=ISSUER)
    rt = build_runtime(settings, clock=FrozenClock(), prepare=True)
    yield rt.keys
    rt.close()


def verify_jws(ring: KeyRing, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        return ring.verify(token)
    except InvalidToken as exc:
        assert exc.status_code == 401
        return None


@given(hostile_text)
def test_jws_any_text(ring: KeyRing, token: str) -> None:
    assert verify_jws(ring, token) is None


@given(st.data())
def test_jws_any_header_and_payload(ring: KeyRing, data: st.DataObject) -> None:
    """Any header (our kid included, with every alg) and payload, not signed by our key."""
    kid = ring.current_kid()
    header = data.draw(
        st.one_of(
            st.fixed_dictionaries(
                {"kid": st.sampled_from([kid, kid + "x"])},
                optional={
                    "alg": st.sampled_from(["RS256", "none", "HS256", "ES256", "PS256", ""]),
                    "typ": st.sampled_from(["at+jwt", "JWT"]),
                    "crit": json_values,
                },
            ),
            json_values,
        )
    )
    payload = data.draw(json_values)
    sig = data.draw(st.binary(max_size=300))
    token = f"{_segment(header)}.{_segment(payload)}.{b64(sig)}"
    assert verify_jws(ring, token) is None


claim_sets = st.dictionaries(safe_text, safe_json_values, max_size=8)


@given(claim_sets)
def test_jws_round_trip(ring: KeyRing, claims: dict[str, Any]) -> None:
    token = ring.sign_access_token(claims)
    verified = verify_jws(ring, token)
    assert verified is not None
    header, got = verified
    assert got == claims
    assert header["kid"] == ring.current_kid() and header["typ"] == "at+jwt"


@given(claim_sets, st.data())
def test_jws_one_changed_character_is_refused(
    ring: KeyRing, claims: dict[str, Any], data: st.DataObject
) -> None:
    token = ring.sign_access_token(claims)
    changed = mutate(token, data)
    assert verify_jws(ring, changed) is None


GOOD_CLAIMS = {
    "iss": ISSUER,
    "aud": ISSUER,
    "sub": "user-1",
    "client_id": "client-1",
    "scope": "openid offline",
    "exp": NOW + 300,
    "iat": NOW,
    "jti": "j",
    "sid": "family-1",
}
claim_changes = st.dictionaries(
    st.sampled_from([*GOOD_CLAIMS, "nbf", "cnf"]),
    st.one_of(
        json_values,
        st.sampled_from([ISSUER, [ISSUER], NOW - 1, NOW + 1, "", {"jkt": "k"}, {"jkt": ""}]),
    ),
    max_size=4,
)


@given(
    st.fixed_dictionaries({}, optional={"typ": st.sampled_from(["at+jwt", "JWT", "", 1])}),
    claim_changes,
    st.sets(st.sampled_from(sorted(GOOD_CLAIMS)), max_size=3),
)
def test_access_token_claims(header: dict[str, Any], changes: dict[str, Any], drop: set[str]):
    claims = {k: v for k, v in {**GOOD_CLAIMS, **changes}.items() if k not in drop}
    try:
        token = check_access_token(header, claims, issuer=ISSUER, audience=ISSUER, now=NOW)
    except InvalidToken:
        return
    assert isinstance(token, AccessToken)
    assert header["typ"] == "at+jwt"
    assert token.subject == claims["sub"] and token.subject
    assert token.client_id == claims["client_id"] and token.client_id
    assert token.expires_at > NOW
    assert token.jkt is None or (token.jkt and token.jkt == claims["cnf"]["jkt"])
    assert " ".join(token.scopes).split() == list(dict.fromkeys(claims.get("scope", "").split()))


# -- the Authorization header's token (RFC 6750 §2.1, RFC 9449 §7.1) -------------------------

_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@given(st.one_of(hostile_text, hostile_text.map(lambda t: "Bearer " + t),
                 hostile_text.map(lambda t: "DPoP " + t)))  # fmt: skip
def test_authorization_token_any_header(value: str) -> None:
    for parse, scheme in ((bearer_token, "bearer"), (dpop_token, "dpop")):
        try:
            token = parse(value)
        except InvalidToken:
            assert value.partition(" ")[0].lower() == scheme
            continue
        if token is None:
            assert value.partition(" ")[0].lower() != scheme
        else:
            assert _B64TOKEN.fullmatch(token), token


@given(st.text(st.sampled_from(B64URL_ALPHABET + ".~+/"), min_size=1).map(lambda t: t + "=="))
def test_authorization_token_round_trip(token: str) -> None:
    assume(_B64TOKEN.fullmatch(token))
    assert bearer_token(f"Bearer {token}") == token
    assert dpop_token(f"DPoP {token}") == token
