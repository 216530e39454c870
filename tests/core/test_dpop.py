"""DPoP proof checks (tokend.core.dpop; RFC 9449 §4.3): every rule, each broken on its own
in a table of proofs, each refused with the right error; the proofs that must pass; htu
normalization; server nonces; RFC 7638 thumbprints (the RFC's own example is in
test_jose.py). Proofs are made by tests/support/dpop.py
(PyJWT, cryptography, hand-assembled JWS), not by the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.dpop import ProofKey, ath, b64, compact, thumbprint
from tokend.core.dpop import (
    ALGS,
    MAX_JTI_LENGTH,
    REPLAY_MARGIN,
    DPoPNonces,
    ProofVerifier,
    access_token_hash,
    normalize_htu,
)
from tokend.core.errors import InvalidDPoPProof, OAuthError

NOW = 1_800_000_000.0
HTU = "https://issuer.test/auth/v2/token"
WINDOW = 60
NONCE_KEY = b"n" * 32
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"

KEY = ProofKey("ES256")
OTHER = ProofKey("ES256")
RSA_KEY = ProofKey("RS256")


def verifier(**kwargs: Any) -> ProofVerifier:
    return ProofVerifier(window=WINDOW, **kwargs)


def nonces() -> DPoPNonces:
    return DPoPNonces(NONCE_KEY, period=300)


def good(**claims: Any) -> str:
    return KEY.proof(HTU, iat=NOW, **claims)


def with_claims(**changes: Any) -> str:
    """A proof of KEY whose claims are the good ones with ``changes`` (None drops one)."""
    claims = KEY.claims(HTU, iat=NOW)
    claims.update(changes)
    return KEY.sign({k: v for k, v in claims.items() if v is not None})


def with_header(**changes: Any) -> str:
    return KEY.sign(KEY.claims(HTU, iat=NOW), header=changes)


def es256_signer(private: Any) -> Callable[[bytes], bytes]:
    return lambda data: ECAlgorithm(ECAlgorithm.SHA256).sign(data, private)


def non_canonical(proof: str) -> str:
    """The same bytes, spelled differently: flip an unused low bit of the last character
    (a 64-byte ES256 signature is 86 base64url characters, 4 bits to spare)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = proof[-1]
    return proof[:-1] + alphabet[alphabet.index(last) ^ 1]


def tampered(proof: str) -> str:
    header, _, signature = proof.split(".")
    claims = KEY.claims(HTU, iat=NOW, jti="tampered")
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def hs256() -> str:
    secret = b"s" * 32
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(secret)}}
    return compact(
        header,
        KEY.claims(HTU, iat=NOW),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )


def alg_none(signature: bool) -> str:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": KEY.jwk}
    token = compact(header, KEY.claims(HTU, iat=NOW))
    return token if signature else token.rsplit(".", 1)[0] + "."


def rsa_header_ec_key() -> str:
    """alg RS256 but an EC jwk: the key must be of the alg's type (RFC 7518 §3.1)."""
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": KEY.jwk}
    return compact(
        header,
        KEY.claims(HTU, iat=NOW),
        lambda data: RSA_KEY.private.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )


def p384_key() -> str:
    """alg ES256 with a P-384 key (ES256 is P-256 only)."""
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
    return compact(header, KEY.claims(HTU, iat=NOW), es256_signer(private))


def small_rsa_key() -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    return compact(
        header,
        KEY.claims(HTU, iat=NOW),
        lambda data: private.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )


def rsa_key_with_exponent(e: int) -> str:
    """A well-formed proof, correctly signed, by an RSA-2048 key whose public exponent is
    ``e`` (p and q of a generated key, d computed for ``e``): only the exponent is wrong."""
    base = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    p, q = base.p, base.q
    phi = (p - 1) * (q - 1)
    while math.gcd(e, phi) != 1:
        e += 2
    d = pow(e, -1, phi)
    private = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    ).private_key()
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    return compact(
        header,
        KEY.claims(HTU, iat=NOW),
        lambda data: private.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )


def rsa_modulus_of_bits(bits: int) -> str:
    """An RS256 proof whose jwk has e = 65537 and an odd ``bits``-bit modulus."""
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    size = (bits + 7) // 8
    jwk = {"kty": "RSA", "n": b64(n.to_bytes(size, "big")), "e": "AQAB"}
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    return compact(header, KEY.claims(HTU, iat=NOW), lambda _: (n // 3).to_bytes(size, "big"))


def point_off_curve() -> str:
    x = int.from_bytes(base64.urlsafe_b64decode(KEY.jwk["x"] + "="), "big")
    jwk = {**KEY.jwk, "x": b64(((x + 1) % 2**256).to_bytes(32, "big"))}
    return with_header(jwk=jwk)


@dataclass(frozen=True)
class Case:
    make: Callable[[], list[str]]
    error: type[OAuthError]
    says: str  # a fragment of the public error_description
    kwargs: dict[str, Any] = field(default_factory=dict)


def one(make: Callable[[], str]) -> Callable[[], list[str]]:
    return lambda: [make()]


BAD = InvalidDPoPProof
CASES: dict[str, Case] = {
    # htu (§4.3 check 9)
    "wrong_htu_path": Case(one(lambda: KEY.proof(HTU + "x", iat=NOW)), BAD, "htu"),
    "wrong_htu_other_endpoint": Case(
        one(lambda: KEY.proof("https://issuer.test/auth/v2/users/retrieve", iat=NOW)), BAD, "htu"
    ),
    "wrong_htu_host": Case(
        one(lambda: KEY.proof("https://evil.test/auth/v2/token", iat=NOW)), BAD, "htu"
    ),
    "wrong_htu_scheme": Case(
        one(lambda: KEY.proof("http://issuer.test/auth/v2/token", iat=NOW)), BAD, "htu"
    ),
    "wrong_htu_port": Case(
        one(lambda: KEY.proof("https://issuer.test:8443/auth/v2/token", iat=NOW)), BAD, "htu"
    ),
    "wrong_htu_path_case": Case(
        one(lambda: KEY.proof("https://issuer.test/AUTH/v2/token", iat=NOW)), BAD, "htu"
    ),
    "relative_htu": Case(one(lambda: KEY.proof("/auth/v2/token", iat=NOW)), BAD, "htu"),
    "htu_with_userinfo": Case(
        one(lambda: KEY.proof("https://u@issuer.test/auth/v2/token", iat=NOW)), BAD, "htu"
    ),
    "htu_not_a_string": Case(one(lambda: with_claims(htu=["x"])), BAD, "htu"),
    "missing_htu": Case(one(lambda: with_claims(htu=None)), BAD, "htu"),
    # htm (check 8)
    "wrong_htm": Case(one(lambda: KEY.proof(HTU, "GET", iat=NOW)), BAD, "htm"),
    "lower_case_htm": Case(one(lambda: KEY.proof(HTU, "post", iat=NOW)), BAD, "htm"),
    "missing_htm": Case(one(lambda: with_claims(htm=None)), BAD, "htm"),
    # iat (check 11)
    "old_iat": Case(one(lambda: KEY.proof(HTU, iat=NOW - WINDOW - 1)), BAD, "too old"),
    "future_iat": Case(one(lambda: KEY.proof(HTU, iat=NOW + WINDOW + 1)), BAD, "future"),
    "missing_iat": Case(one(lambda: with_claims(iat=None)), BAD, "iat"),
    "iat_as_string": Case(one(lambda: with_claims(iat=str(int(NOW)))), BAD, "iat"),
    "iat_as_bool": Case(one(lambda: with_claims(iat=True)), BAD, "iat"),
    # jti (check 2)
    "missing_jti": Case(one(lambda: with_claims(jti=None)), BAD, "jti"),
    "empty_jti": Case(one(lambda: with_claims(jti="")), BAD, "jti"),
    "jti_too_long": Case(one(lambda: with_claims(jti="j" * (MAX_JTI_LENGTH + 1))), BAD, "jti"),
    "jti_not_a_string": Case(one(lambda: with_claims(jti=12345)), BAD, "jti"),
    # signature and key (checks 5-7)
    "wrong_key": Case(one(lambda: with_header(jwk=OTHER.jwk)), BAD, "signature"),
    "tampered_payload": Case(one(lambda: tampered(good())), BAD, "signature"),
    "signature_of_other_key_same_claims": Case(
        one(
            lambda: compact(
                {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.jwk},
                KEY.claims(HTU, iat=NOW),
                es256_signer(OTHER.private),
            )
        ),
        BAD,
        "signature",
    ),
    "private_key_in_jwk": Case(one(lambda: with_header(jwk=KEY.private_jwk)), BAD, "jwk"),
    "rsa_private_key_in_jwk": Case(
        one(
            lambda: RSA_KEY.sign(RSA_KEY.claims(HTU, iat=NOW), header={"jwk": RSA_KEY.private_jwk})
        ),
        BAD,
        "jwk",
    ),
    "symmetric_jwk": Case(
        one(lambda: with_header(jwk={"kty": "oct", "k": "c2VjcmV0"})), BAD, "jwk"
    ),
    "missing_jwk": Case(one(lambda: with_header(jwk=None)), BAD, "jwk"),
    "jwk_not_an_object": Case(one(lambda: with_header(jwk="key")), BAD, "jwk"),
    "jwk_member_not_base64url": Case(
        one(lambda: with_header(jwk={**KEY.jwk, "x": "not base64!"})), BAD, "jwk"
    ),
    "ec_point_not_on_the_curve": Case(one(point_off_curve), BAD, "jwk"),
    "alg_and_key_type_differ": Case(one(rsa_header_ec_key), BAD, "jwk"),
    "es256_with_a_p384_key": Case(one(p384_key), BAD, "jwk"),
    "rsa_key_under_2048_bits": Case(one(small_rsa_key), BAD, "jwk"),
    # Issue 10 §3: an exponent the size of the modulus costs ~1,000x a normal verification,
    # a larger modulus the cube of its size; refused on the key, before any signature work.
    "rsa_exponent_the_size_of_the_modulus": Case(
        one(lambda: rsa_key_with_exponent(2**2047 + 1)), BAD, "jwk"
    ),
    "rsa_exponent_3": Case(one(lambda: rsa_key_with_exponent(3)), BAD, "jwk"),
    "rsa_exponent_65539": Case(one(lambda: rsa_key_with_exponent(65539)), BAD, "jwk"),
    "rsa_modulus_over_4096_bits": Case(one(lambda: rsa_modulus_of_bits(4104)), BAD, "jwk"),
    "rsa_modulus_of_3072_bits_with_a_bad_signature": Case(
        one(lambda: rsa_modulus_of_bits(3072)), BAD, "signature"
    ),
    # alg and typ (checks 4-5)
    "alg_none": Case(one(lambda: alg_none(signature=True)), BAD, "alg"),
    "alg_none_empty_signature": Case(one(lambda: alg_none(signature=False)), BAD, "well-formed"),
    "hs256": Case(one(hs256), BAD, "alg"),
    "unsupported_alg_es384": Case(
        one(
            lambda: compact(
                {"typ": "dpop+jwt", "alg": "ES384", "jwk": KEY.jwk}, KEY.claims(HTU, iat=NOW)
            )
        ),
        BAD,
        "alg",
    ),
    "missing_typ": Case(one(lambda: with_header(typ=None)), BAD, "typ"),
    "typ_jwt": Case(one(lambda: with_header(typ="JWT")), BAD, "typ"),
    "typ_at_jwt": Case(one(lambda: with_header(typ="at+jwt")), BAD, "typ"),
    "crit_header": Case(one(lambda: with_header(crit=["exp"])), BAD, "crit"),
    # syntax (checks 1, 3)
    "two_dpop_headers": Case(lambda: [good(), good()], BAD, "one DPoP header"),
    "no_dpop_header": Case(lambda: [], BAD, "one DPoP header"),
    "malformed_not_a_jwt": Case(one(lambda: "not-a-jwt"), BAD, "well-formed"),
    "malformed_two_segments": Case(one(lambda: good().rsplit(".", 1)[0]), BAD, "well-formed"),
    "malformed_four_segments": Case(one(lambda: good() + ".e30"), BAD, "well-formed"),
    "malformed_bad_base64": Case(one(lambda: "e30.e30.%%%"), BAD, "well-formed"),
    "malformed_padded_base64": Case(one(lambda: good() + "=="), BAD, "well-formed"),
    "malformed_non_canonical_base64": Case(one(lambda: non_canonical(good())), BAD, "well-formed"),
    "malformed_header_not_json": Case(one(lambda: b64(b"nope") + ".e30.c2ln"), BAD, "well-formed"),
    "malformed_header_an_array": Case(one(lambda: b64(b"[1]") + ".e30.c2ln"), BAD, "well-formed"),
    "malformed_payload_not_json": Case(
        one(
            lambda: compact(
                {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.jwk},
                b"{x",
                es256_signer(KEY.private),
            )
        ),
        BAD,
        "well-formed",
    ),
    "malformed_payload_an_array": Case(
        one(
            lambda: compact(
                {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.jwk}, [1], es256_signer(KEY.private)
            )
        ),
        BAD,
        "well-formed",
    ),
    "non_ascii": Case(one(lambda: "é" + good()), BAD, "well-formed"),
    "too_large": Case(one(lambda: "a" * 9000), BAD, "too large"),
    # ath (check 12), at a protected resource
    "wrong_ath": Case(
        one(lambda: good(access_token=ACCESS_TOKEN + "x")),
        BAD,
        "ath",
        kwargs={"access_token": ACCESS_TOKEN},
    ),
    "missing_ath": Case(one(good), BAD, "ath", kwargs={"access_token": ACCESS_TOKEN}),
    "ath_not_a_string": Case(
        one(lambda: with_claims(ath=1)), BAD, "ath", kwargs={"access_token": ACCESS_TOKEN}
    ),
    "ath_in_standard_base64": Case(
        one(lambda: with_claims(ath=ath(ACCESS_TOKEN).replace("-", "+").replace("_", "/") + "=")),
        BAD,
        "ath",
        kwargs={"access_token": ACCESS_TOKEN},
    ),
}


@pytest.mark.parametrize("case_id", CASES, ids=list(CASES))
def test_bad_proof_is_refused_with_the_right_error(case_id: str) -> None:
    case = CASES[case_id]
    values = case.make()
    v = verifier(nonces=nonces())
    with pytest.raises(OAuthError) as info:
        v.verify(values, htm="POST", htu=HTU, now=NOW, **case.kwargs)
    assert type(info.value) is case.error, info.value
    assert case.says.lower() in info.value.description.lower()
    assert info.value.status_code == 400
    # The description is public: never the proof or a key.
    for value in values:
        assert value[:40] not in info.value.description


def test_the_bad_proofs_differ_from_a_good_one_only_in_their_fault() -> None:
    """Guards the table: the same builders, without a fault, make proofs that pass."""
    v = verifier()
    assert v.verify([good()], htm="POST", htu=HTU, now=NOW).jkt == KEY.jkt
    assert v.verify([with_claims()], htm="POST", htu=HTU, now=NOW).jkt == KEY.jkt
    assert v.verify([with_header()], htm="POST", htu=HTU, now=NOW).jkt == KEY.jkt
    assert v.verify([with_header(jwk=KEY.jwk)], htm="POST", htu=HTU, now=NOW)
    ok = compact(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.jwk},
        KEY.claims(HTU, iat=NOW),
        es256_signer(KEY.private),
    )
    assert v.verify([ok], htm="POST", htu=HTU, now=NOW).jkt == KEY.jkt
    with_ath = good(access_token=ACCESS_TOKEN)
    assert v.verify([with_ath], htm="POST", htu=HTU, now=NOW, access_token=ACCESS_TOKEN)
    nv = verifier(nonces=nonces())
    assert nv.verify([good(nonce=nonces().current(NOW))], htm="POST", htu=HTU, now=NOW).nonce_ok


def test_every_check_has_a_case() -> None:
    """Each rule of RFC 9449 §4.3 the verifier enforces is broken by at least one case."""
    says = {c.says for c in CASES.values()}
    for rule in (
        "htu",
        "htm",
        "too old",
        "future",
        "jti",
        "signature",
        "jwk",
        "alg",
        "typ",
        "well-formed",
        "ath",
        "one DPoP header",
        "crit",
        "too large",
    ):
        assert rule in says, rule


# -- what passes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "curve"),
    [("ES256", ""), ("RS256", ""), ("EdDSA", "Ed25519"), ("EdDSA", "Ed448")],
    ids=["ES256", "RS256", "EdDSA-Ed25519", "EdDSA-Ed448"],
)
def test_each_supported_alg_verifies_and_gives_the_rfc7638_thumbprint(alg: str, curve: str):
    key = ProofKey(alg, curve=curve or "Ed25519")
    proof = verifier().verify([key.proof(HTU, iat=NOW)], htm="POST", htu=HTU, now=NOW)
    assert proof.jkt == thumbprint(key.jwk)
    assert proof.replay_until == NOW + WINDOW + REPLAY_MARGIN
    assert len(proof.replay_hash) == 32


def test_supported_algs_are_the_three_asymmetric_ones() -> None:
    assert ALGS == ("ES256", "RS256", "EdDSA")


@pytest.mark.parametrize("iat", [NOW - WINDOW, NOW + WINDOW, NOW - 0.5, NOW + 59.9])
def test_iat_at_the_edges_of_the_window_is_accepted(iat: float) -> None:
    claims = KEY.claims(HTU, iat=NOW)
    claims["iat"] = iat
    proof = verifier().verify([KEY.sign(claims)], htm="POST", htu=HTU, now=NOW)
    assert proof.replay_until == iat + WINDOW + REPLAY_MARGIN


@pytest.mark.parametrize(
    "htu",
    [
        HTU,
        "HTTPS://ISSUER.TEST/auth/v2/token",
        "https://issuer.test:443/auth/v2/token",
        "https://issuer.test/auth/v2/token?grant_type=x",
        "https://issuer.test/auth/v2/token#frag",
        "https://issuer.test/auth/v2/%74oken",
        "https://issuer.test/auth/v2/./token",
        "https://issuer.test/auth/x/../v2/token",
    ],
)
def test_htu_compares_after_rfc3986_normalization_without_query(htu: str) -> None:
    """§4.3: "ignoring any query and fragment parts"; syntax- and scheme-based normalization."""
    assert verifier().verify([KEY.proof(htu, iat=NOW)], htm="POST", htu=HTU, now=NOW)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://issuer.test", "https://issuer.test/"),
        ("http://Issuer.Test:80/a/b", "http://issuer.test/a/b"),
        ("https://issuer.test:8443/a", "https://issuer.test:8443/a"),
        ("http://[::1]:8000/t", "http://[::1]:8000/t"),
        ("https://issuer.test/a%2fb%7e", "https://issuer.test/a%2Fb~"),
        ("https://issuer.test/a/b/..", "https://issuer.test/a/"),
        ("https://issuer.test/..", "https://issuer.test/"),
        ("ftp://issuer.test/a", None),
        ("https://issuer.test:99999/a", None),
        ("https://user:pw@issuer.test/a", None),
        ("issuer.test/a", None),
        ("https:///a", None),
    ],
)
def test_normalize_htu(url: str, normalized: str | None) -> None:
    assert normalize_htu(url) == normalized


def test_replay_hash_is_per_jti_method_and_uri() -> None:
    v = verifier()
    proof = good(jti="one")
    a = v.verify([proof], htm="POST", htu=HTU, now=NOW)
    assert v.verify([proof], htm="POST", htu=HTU, now=NOW + 1).replay_hash == a.replay_hash
    # The same jti spelled against an equivalent URI is the same proof.
    same = KEY.proof("https://ISSUER.test:443/auth/v2/token?x", iat=NOW, jti="one")
    assert v.verify([same], htm="POST", htu=HTU, now=NOW).replay_hash == a.replay_hash
    assert v.verify([good(jti="two")], htm="POST", htu=HTU, now=NOW).replay_hash != a.replay_hash
    userinfo = "https://issuer.test/auth/v2/users/retrieve"
    elsewhere = KEY.proof(userinfo, "GET", iat=NOW, jti="one")
    other = v.verify([elsewhere], htm="GET", htu=userinfo, now=NOW)
    assert other.replay_hash != a.replay_hash


def test_the_key_cache_does_not_confuse_keys() -> None:
    v = verifier()
    for _ in range(2):
        assert v.verify([good()], htm="POST", htu=HTU, now=NOW).jkt == KEY.jkt
        proof = OTHER.proof(HTU, iat=NOW)
        assert v.verify([proof], htm="POST", htu=HTU, now=NOW).jkt == OTHER.jkt
    with pytest.raises(InvalidDPoPProof):  # a cached key does not vouch for other signatures
        v.verify([with_header(jwk=OTHER.jwk)], htm="POST", htu=HTU, now=NOW)


def test_ath_is_base64url_sha256_of_the_token() -> None:
    assert access_token_hash(ACCESS_TOKEN) == ath(ACCESS_TOKEN)
    assert "=" not in access_token_hash(ACCESS_TOKEN)


# -- nonces -----------------------------------------------------------------------------------

# Check 10 (the nonce claim) is computed, never enforced, by the verifier: whether a nonce is
# required depends on the client (tokend.core.service) or the resource (tokend.web.dpop).
NONCE_CASES: dict[str, tuple[Callable[[], str], bool]] = {
    "current": (lambda: good(nonce=nonces().current(NOW)), True),
    "previous_period": (lambda: good(nonce=nonces().current(NOW - 300)), True),
    "missing": (good, False),
    "stale": (lambda: good(nonce=nonces().current(NOW - 600)), False),
    "of_another_server": (lambda: good(nonce=DPoPNonces(b"x" * 32).current(NOW)), False),
    "from_the_future": (lambda: good(nonce=nonces().current(NOW + 300)), False),
    "not_a_string": (lambda: with_claims(nonce=7), False),
    "empty": (lambda: with_claims(nonce=""), False),
}


@pytest.mark.parametrize("case", NONCE_CASES, ids=list(NONCE_CASES))
def test_the_verifier_says_whether_the_nonce_is_current_and_never_refuses_for_it(
    case: str,
) -> None:
    make, ok = NONCE_CASES[case]
    proof = verifier(nonces=nonces()).verify([make()], htm="POST", htu=HTU, now=NOW)
    assert proof.nonce_ok is ok
    assert proof.jkt == KEY.jkt
    # Without nonces no proof has a valid one, and none is refused for it either.
    assert verifier().verify([make()], htm="POST", htu=HTU, now=NOW).nonce_ok is False


def test_a_bad_proof_is_invalid_even_with_a_good_nonce() -> None:
    """The nonce does not excuse anything else (and an invalid proof has no nonce_ok)."""
    proof = KEY.proof(HTU, iat=NOW - 3600, nonce=nonces().current(NOW))
    with pytest.raises(InvalidDPoPProof, match="too old"):
        verifier(nonces=nonces()).verify([proof], htm="POST", htu=HTU, now=NOW)


def test_nonce_is_valid_in_its_period_and_the_next() -> None:
    n = nonces()
    start = 1_800_000_100.0  # 100 s into a period (1_800_000_000 is a multiple of 300)
    made = n.current(start)
    assert n.is_valid(made, start)
    assert n.is_valid(made, start + 199)  # same period
    assert n.current(start + 200) != made  # a new period, a new nonce
    assert n.is_valid(made, start + 200 + 299)  # still the previous one
    assert not n.is_valid(made, start + 200 + 300)  # two periods on
    assert not n.is_valid(made[:-1], start)
    assert not n.is_valid(None, start)
    assert not n.is_valid("é" * 22, start)


def test_nonces_are_the_same_in_every_process_and_differ_per_secret() -> None:
    assert DPoPNonces(NONCE_KEY).current(NOW) == DPoPNonces(NONCE_KEY).current(NOW)
    assert DPoPNonces(NONCE_KEY).current(NOW) != DPoPNonces(b"m" * 32).current(NOW)


def test_verifier_and_nonces_refuse_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        ProofVerifier(window=0)
    with pytest.raises(ValueError):
        DPoPNonces(NONCE_KEY, period=0)
