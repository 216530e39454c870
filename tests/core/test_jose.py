"""tokend.core.jose against the RFCs' own examples: RFC 7638 §3.1 (thumbprint), RFC 7515
appendix A.2 (RS256) and A.3 (ES256), RFC 8037 appendix A.4 (EdDSA, Ed25519); and the
strict parsing and key bounds every server caller relies on."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from tokend.core import jose

RFC7638_JWK: dict[str, object] = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
    "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
    "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLy"
    "rdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzK"
    "nqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}

# RFC 7515 A.2 and A.3 sign the same payload (A.1's claims, with its CRLFs).
RFC7515_PAYLOAD = (
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)
RFC7515_A2_JWK: dict[str, object] = {
    "kty": "RSA",
    "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1"
    "Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_"
    "I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
    "e": "AQAB",
}
RFC7515_A2_JWS = (
    "eyJhbGciOiJSUzI1NiJ9."
    + RFC7515_PAYLOAD
    + ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_"
    "O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPv"
    "kSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCn"
    "vWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
)
RFC7515_A3_JWK: dict[str, object] = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
RFC7515_A3_JWS = (
    "eyJhbGciOiJFUzI1NiJ9."
    + RFC7515_PAYLOAD
    + ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
RFC8037_A_JWK: dict[str, object] = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}
RFC8037_A4_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGc"
    "vMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
VECTORS = {
    "RFC 7515 A.2": ("RS256", RFC7515_A2_JWK, RFC7515_A2_JWS),
    "RFC 7515 A.3": ("ES256", RFC7515_A3_JWK, RFC7515_A3_JWS),
    "RFC 8037 A.4": ("EdDSA", RFC8037_A_JWK, RFC8037_A4_JWS),
}


# -- RFC 7638 ---------------------------------------------------------------------------------


def test_rfc7638_thumbprint_example() -> None:
    """RFC 7638 §3.1's example key and thumbprint; a key that does not fit the algorithm,
    or holds private material, has none."""
    assert (
        jose.jwk_thumbprint(RFC7638_JWK, "RS256") == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )
    with pytest.raises(ValueError):
        jose.jwk_thumbprint(RFC7638_JWK, "ES256")
    with pytest.raises(ValueError):
        jose.jwk_thumbprint({**RFC7638_JWK, "d": "x"}, "RS256")
    with pytest.raises(ValueError):
        jose.jwk_thumbprint(RFC7638_JWK, "HS256")


# -- signatures: the RFCs' examples -----------------------------------------------------------


@pytest.mark.parametrize("name", list(VECTORS))
def test_rfc_example_signatures_verify(name: str) -> None:
    alg, jwk, token = VECTORS[name]
    jose.jwk_thumbprint(jwk, alg)  # the key fits the algorithm
    key = jose.public_key(jwk, alg)
    jws = jose.parse_compact(token)
    assert jose.decode_header(jws.header_segment) == {"alg": alg}
    assert jose.verify_signature(alg, key, jws.signature, jws.signing_input)
    # One bit of the signing input or of the signature changed: refused.
    tampered = jws.signing_input[:-1] + bytes([jws.signing_input[-1] ^ 1])
    assert not jose.verify_signature(alg, key, jws.signature, tampered)
    flipped = jws.signature[:-1] + bytes([jws.signature[-1] ^ 1])
    assert not jose.verify_signature(alg, key, flipped, jws.signing_input)
    assert not jose.verify_signature(alg, key, b"", jws.signing_input)


@pytest.mark.parametrize("name", list(VECTORS))
def test_a_signature_checks_only_under_its_own_algorithm(name: str) -> None:
    """The algorithm decides how a signature is read, and a key of another type never
    verifies under it (no confusion between RSA, EC and OKP keys, never "none" or a MAC)."""
    alg, jwk, token = VECTORS[name]
    key = jose.public_key(jwk, alg)
    jws = jose.parse_compact(token)
    for other in ("RS256", "ES256", "EdDSA", "HS256", "none", "ES384", "PS256"):
        if other != alg:
            assert not jose.verify_signature(other, key, jws.signature, jws.signing_input)


def test_es256_needs_a_p256_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    signature = b"\x01" * 64
    assert not jose.verify_signature("ES256", key.public_key(), signature, b"x")


def test_eddsa_accepts_ed448() -> None:
    private = ed448.Ed448PrivateKey.generate()
    x = jose.b64url_encode(private.public_key().public_bytes_raw())
    key = jose.public_key({"kty": "OKP", "crv": "Ed448", "x": x}, "EdDSA")
    assert jose.verify_signature("EdDSA", key, private.sign(b"m"), b"m")
    assert not jose.verify_signature("EdDSA", key, private.sign(b"m"), b"n")


# -- JWK bounds -------------------------------------------------------------------------------


def _rsa_jwk(e: int, bits: int) -> dict[str, object]:
    n = rsa.generate_private_key(public_exponent=65537, key_size=max(bits, 1024))
    modulus = n.public_key().public_numbers().n
    if bits > modulus.bit_length():
        modulus = (modulus << (bits - modulus.bit_length())) | 1
    return {
        "kty": "RSA",
        "e": jose.b64url_encode(e.to_bytes((e.bit_length() + 7) // 8, "big")),
        "n": jose.b64url_encode(modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")),
    }


@pytest.mark.parametrize(
    ("e", "bits", "ok"),
    [
        (65537, 2048, True),
        (3, 2048, False),  # issue 10: only e = 65537
        (65537, 1024, False),
        (65537, 4096 + 8, False),  # a modulus over 4096 bits is not even decoded
    ],
)
def test_rsa_keys_are_bounded(e: int, bits: int, ok: bool) -> None:
    jwk = _rsa_jwk(e, bits)
    if ok:
        assert isinstance(jose.public_key(jwk, "RS256"), rsa.RSAPublicKey)
    else:
        with pytest.raises(ValueError):
            jose.public_key(jwk, "RS256")


def test_ec_point_must_be_on_the_curve() -> None:
    off_curve = {**RFC7515_A3_JWK, "y": RFC7515_A3_JWK["x"]}
    with pytest.raises(ValueError):
        jose.public_key(off_curve, "ES256")
    short = {**RFC7515_A3_JWK, "x": "AQAB"}
    with pytest.raises(ValueError):
        jose.public_key(short, "ES256")


# -- base64url and compact JWS ----------------------------------------------------------------


def test_b64url_is_canonical_and_unpadded() -> None:
    assert jose.b64url_encode(b"\xfb\xff") == "-_8"
    assert jose.b64url_decode("-_8") == b"\xfb\xff"
    for bad in ("-_8=", "+/8", "-_9", "A"):  # padding, other alphabet, stray bits, length
        with pytest.raises(ValueError):
            jose.b64url_decode(bad)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "e30.e30.e30.e30",
        "e30..e30",
        "e30.e30.",
        "e30.e30=.e30",
        "e30.e30.e30 ",
        "e30.e31.e30",  # stray low bits: another spelling of the same bytes
        "e30.e30.é",
    ],
)
def test_parse_compact_is_strict(token: str) -> None:
    with pytest.raises(ValueError):
        jose.parse_compact(token)


def test_parse_compact_splits_a_token() -> None:
    jws = jose.parse_compact(RFC7515_A3_JWS)
    header, payload, _ = RFC7515_A3_JWS.split(".")
    assert jws.header_segment == header.encode()
    assert jws.signing_input == f"{header}.{payload}".encode()
    assert jws.payload.startswith(b'{"iss":"joe",\r\n')
    assert len(jws.signature) == 64


@pytest.mark.parametrize("data", [b"[]", b'"x"', b"1", b"null", b"{", b""])
def test_headers_and_claims_are_json_objects(data: bytes) -> None:
    with pytest.raises(ValueError):
        jose.json_object(data)
