"""The server's one JOSE module, on ``cryptography`` only: unpadded base64url and its one
canonical decoding (RFC 7515 §2), strict compact-JWS parsing (§7.1), public JWKs to keys
for the algorithms tokend accepts (RFC 7517, RFC 7518 §6, RFC 8037) with the bounds that
keep a hostile key cheap to refuse, the RFC 7638 thumbprint, and the per-algorithm
signature checks (RFC 7518 §3.3, §3.4, §3.5, RFC 8037 §3.1).

Used by ``tokend.core.dpop`` (proofs arrive with their key in the header), by
``tokend.keys.ring`` (our own tokens, our own published keys) and by the domain's hashes
(PKCE, ``at_hash``, pairwise subjects). Every function raises ``ValueError`` (or returns
False, for a signature) on anything it refuses, so a caller maps one exception to its own
error. (The client, ``tokend.client``, keeps its own few lines: it must not import server
code.)
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

# The asymmetric algorithms a DPoP proof may use (RFC 9449 §5.1); never "none" or a MAC.
ALGS = ("ES256", "RS256", "EdDSA")
# The RSA algorithms (RFC 7518 §3.3 PKCS#1 v1.5, §3.5 PSS): the same kind of key, never
# the same key (tokend.keys.ring binds each of its keys to one algorithm).
RSA_ALGS = ("RS256", "PS256")
# What tokend signs its own tokens with (TOKEND_SIGNING_ALG, a client's access-token and
# ID-token algorithms): RS256 (OIDC Core §15.1's default), PS256, ES256, EdDSA (Ed25519).
# Never "none" nor an HMAC (HS*): a MAC's key would be a secret shared with every verifier.
SIGNING_ALGS = ("RS256", "PS256", "ES256", "EdDSA")
# RSA keys (RS256): what every JOSE library generates, and nothing that costs more to
# verify. A public exponent as large as the modulus makes one verification ~1,000x the
# work of e = 65537, and a larger modulus grows the cost with its cube: both are refused
# before any signature work (a DPoP proof is checked before its client is authenticated).
RSA_PUBLIC_EXPONENT = 65537
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096

# header.payload.signature (RFC 7515 §7.1), each base64url without padding.
_COMPACT_JWS = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# RFC 7517 §4 / RFC 7518 §6.2.2, §6.3.2 / RFC 8037 §2: members only a private key has
# ("k" is a symmetric key's secret).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_EC_COORDINATE_BYTES = 32  # P-256
_OKP_KEY_BYTES = {"Ed25519": 32, "Ed448": 57}
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
# RFC 7518 §3.5: MGF1 with the same hash, a salt as long as the hash's output.
_PSS_SHA256 = padding.PSS(mgf=padding.MGF1(_SHA256), salt_length=_SHA256.digest_size)


# -- base64url (RFC 7515 §2) ------------------------------------------------------------------


def b64url_encode_raw(data: bytes) -> bytes:
    """Unpadded base64url, as bytes (for building a JWS's signing input)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: bytes | str) -> bytes:
    """Canonical unpadded base64url only (RFC 7515 §2): padding, other alphabets and other
    spellings of the same bytes (stray low bits in the last character) are refused with
    ``ValueError``, so that a token has exactly one valid spelling."""
    if isinstance(segment, str):
        segment = segment.encode("ascii")
    raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment:
        raise ValueError("non-canonical base64url")
    return raw


# -- compact JWS (RFC 7515 §7.1) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A compact JWS split strictly: its header segment as sent (still base64url, so a
    caller can cache what it learnt from it by its exact bytes), the signing input, and
    the payload and signature decoded."""

    header_segment: bytes
    signing_input: bytes
    payload: bytes
    signature: bytes


def parse_compact(token: str) -> CompactJWS:
    """``header.payload.signature``, ASCII, each segment non-empty canonical base64url
    (``ValueError`` otherwise). Nothing is checked about the header or the signature."""
    raw = token.encode("ascii")
    m = _COMPACT_JWS.fullmatch(raw)
    if m is None:
        raise ValueError("not a compact JWS")
    return CompactJWS(m[1], raw[: m.end(2)], b64url_decode(m[2]), b64url_decode(m[3]))


def json_object(data: bytes) -> dict[str, Any]:
    """A JOSE header or JWT claims set: a JSON object (RFC 7515 §4, RFC 7519 §7.2 step
    10), ``ValueError`` for anything else."""
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def decode_header(segment: bytes) -> dict[str, Any]:
    """The JOSE header of a ``CompactJWS.header_segment``."""
    return json_object(b64url_decode(segment))


# -- JWK to key (RFC 7517, RFC 7518 §6, RFC 8037 §2) and thumbprints (RFC 7638) ---------------


def _member(jwk: dict[str, object], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"jwk member {name} missing or not base64url")
    return value


def thumbprint_input(jwk: dict[str, object], alg: str) -> str:
    """RFC 7638 §3.2: the required members in lexicographic order, no whitespace. Also
    checks the key's type and curve fit ``alg`` (RFC 7518 §3.1) and that it is public."""
    if not _PRIVATE_MEMBERS.isdisjoint(jwk):
        raise ValueError("the jwk holds private key material")
    kty = jwk.get("kty")
    if alg == "ES256":
        if kty != "EC" or jwk.get("crv") != "P-256":
            raise ValueError("ES256 needs an EC P-256 key")
        x, y = _member(jwk, "x"), _member(jwk, "y")
        return f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    if alg in RSA_ALGS:
        if kty != "RSA":
            raise ValueError(f"{alg} needs an RSA key")
        e, n = _member(jwk, "e"), _member(jwk, "n")
        return f'{{"e":"{e}","kty":"RSA","n":"{n}"}}'
    if alg != "EdDSA":
        raise ValueError(f"unsupported algorithm {alg!r}")
    crv = jwk.get("crv")
    if kty != "OKP" or not isinstance(crv, str) or crv not in _OKP_KEY_BYTES:
        raise ValueError("EdDSA needs an OKP Ed25519 or Ed448 key")
    x = _member(jwk, "x")
    return f'{{"crv":"{crv}","kty":"OKP","x":"{x}"}}'


def jwk_thumbprint(jwk: dict[str, object], alg: str) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK for ``alg`` (``ValueError`` if unfit)."""
    return b64url_encode(hashlib.sha256(thumbprint_input(jwk, alg).encode("ascii")).digest())


def public_key(jwk: dict[str, object], alg: str) -> PublicKey:
    """The public key of a JWK already checked by ``thumbprint_input`` for ``alg``: the EC
    point must be on P-256, RSA keys must have e = 65537 and a 2048-4096-bit modulus,
    OKP keys the curve's length (``ValueError`` otherwise)."""
    if alg == "ES256":
        x, y = b64url_decode(_member(jwk, "x")), b64url_decode(_member(jwk, "y"))
        if len(x) != _EC_COORDINATE_BYTES or len(y) != _EC_COORDINATE_BYTES:
            raise ValueError("bad P-256 coordinates")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        )
        return numbers.public_key()  # checks the point is on the curve
    if alg in RSA_ALGS:
        e, n = _member(jwk, "e"), _member(jwk, "n")
        # Lengths first: nothing larger than a 4096-bit modulus (and a leading zero octet,
        # RFC 7518 §6.3.1.1 notes some libraries add one) is even decoded.
        if len(e) > 8 or len(n) > (MAX_RSA_BITS // 8 + 1) * 4 // 3 + 1:
            raise ValueError("RSA key too large")
        exponent = int.from_bytes(b64url_decode(e), "big")
        modulus = int.from_bytes(b64url_decode(n), "big")
        if exponent != RSA_PUBLIC_EXPONENT:
            raise ValueError("RSA public exponent is not 65537")
        if not MIN_RSA_BITS <= modulus.bit_length() <= MAX_RSA_BITS:
            raise ValueError("RSA modulus size out of range")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    crv = str(jwk["crv"])
    x = b64url_decode(_member(jwk, "x"))
    if len(x) != _OKP_KEY_BYTES[crv]:
        raise ValueError("bad OKP key length")
    if crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    return ed448.Ed448PublicKey.from_public_bytes(x)


# -- signatures (RFC 7518 §3.3, §3.4; RFC 8037 §3.1) ------------------------------------------


def verify_signature(alg: str, key: PublicKey, signature: bytes, signing_input: bytes) -> bool:
    """Whether ``signature`` is ``alg``'s signature of ``signing_input`` under ``key``.
    A key of another type than ``alg`` needs (or an ES256 key not on P-256) never
    verifies, whatever the caller passed."""
    try:
        if alg == "ES256":
            # RFC 7518 §3.4: R || S, each 32 bytes; cryptography wants DER.
            if (
                not isinstance(key, ec.EllipticCurvePublicKey)
                or not isinstance(key.curve, ec.SECP256R1)
                or len(signature) != 2 * _EC_COORDINATE_BYTES
            ):
                return False
            r = int.from_bytes(signature[:_EC_COORDINATE_BYTES], "big")
            s = int.from_bytes(signature[_EC_COORDINATE_BYTES:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
        elif alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(signature, signing_input, _PKCS1V15, _SHA256)
        elif alg == "PS256":
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(signature, signing_input, _PSS_SHA256, _SHA256)
        elif alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                return False
            key.verify(signature, signing_input)
        else:
            return False
    except InvalidSignature:
        return False
    return True
