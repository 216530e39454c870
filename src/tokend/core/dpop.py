"""DPoP proofs (RFC 9449): checking the ``DPoP`` header of a request, and server nonces.

``ProofVerifier.verify(values, htm=..., htu=..., now=...)`` runs the checks of RFC 9449 §4.3
on the values of the request's ``DPoP`` header and returns a ``DPoPProof``: the RFC 7638
thumbprint of the proof's key (``jkt``), the proof's entry for the replay cache, and
whether it carried a current server nonce (``nonce_ok``). Errors::

    OAuthError
    ├── InvalidDPoPProof   400  invalid_dpop_proof   RFC 9449 §5 (401 at a resource, §7.1)
    └── UseDPoPNonce       400  use_dpop_nonce       RFC 9449 §8 (401 at a resource, §9)

``verify`` raises only ``InvalidDPoPProof``: whether a nonce is required depends on who asks
(at the token endpoint, on the client, known only once it has authenticated:
``tokend.core.service``), so the caller raises ``UseDPoPNonce`` when ``nonce_ok`` is False
and a nonce is required.

What this module does not do, because it needs storage or the clock: the replay check
(§11.1: the caller records ``DPoPProof.replay_hash`` in the shared ``dpop_proofs`` table,
inside the request's transaction where there is one) and reading the time (``now`` is
passed in). ``DPoPNonces`` makes stateless nonces: an HMAC of the time bucket, so every
process of one deployment accepts the nonces of every other without sharing state.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tokend.core.errors import InvalidDPoPProof
from tokend.core.jose import b64url_decode, b64url_encode
from tokend.core.models import DPoPProof

# RFC 9449 §4.2: "an asymmetric digital signature algorithm"; never "none" or a MAC.
ALGS = ("ES256", "RS256", "EdDSA")
PROOF_TYPE = "dpop+jwt"
MAX_PROOF_LENGTH = 8192  # an RSA-4096 proof is ~2 KB; anything far bigger is not a proof
MAX_JTI_LENGTH = 256
# RSA proof keys (RS256): what every JOSE library generates, and nothing that costs more to
# verify. A public exponent as large as the modulus makes one verification ~1,000x the
# work of e = 65537, and a larger modulus grows the cost with its cube: both are refused
# before any signature work, since a proof is checked before the client is authenticated.
RSA_PUBLIC_EXPONENT = 65537
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
# How long past its acceptance window a proof's replay-cache row is kept: covers clocks of
# different processes (or machines) that disagree by up to this many seconds.
REPLAY_MARGIN = 60

# header.payload.signature (RFC 7515 §7.1), each base64url without padding.
_COMPACT_JWS = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# RFC 7517 §4 / RFC 7518 §6.2.2, §6.3.2 / RFC 8037 §2: members only a private key has
# ("k" is a symmetric key's secret).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_EC_COORDINATE_BYTES = 32  # P-256
_OKP_KEY_BYTES = {"Ed25519": 32, "Ed448": 57}
_KEY_CACHE_SIZE = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url(SHA-256(ASCII(access token)))."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


# -- htu (RFC 9449 §4.3 check 9, RFC 3986 §6.2.2-6.2.3) -------------------------------------


def _percent(m: re.Match[str]) -> str:
    char = chr(int(m[0][1:], 16))
    return char if char in _UNRESERVED else m[0].upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, for an absolute path."""
    segments = path.split("/")
    out: list[str] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg in (".", ".."):
            if seg == ".." and len(out) > 1:
                out.pop()
            if i == last:
                out.append("")
            continue
        out.append(seg)
    return "/".join(out)


def normalize_htu(url: str) -> str | None:
    """The URI as ``htu`` comparison sees it: scheme, host and path only ("ignoring any
    query and fragment parts"), with syntax- and scheme-based normalization (lower-case
    scheme and host, default port dropped, empty path as ``/``, percent-encoding case and
    unreserved characters, dot segments). None for anything but an absolute http(s) URI."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = parts.path or "/"
    if "%" in path:
        path = _PERCENT.sub(_percent, path)
    if "." in path:
        path = _remove_dot_segments(path)
    return f"{scheme}://{host}{path}"


# -- keys (RFC 7517, RFC 7518 §6, RFC 8037) and thumbprints (RFC 7638) ------------------------


class _Key:
    """A proof's public key, ready to verify signatures of its algorithm."""

    __slots__ = ("alg", "jkt", "key")

    def __init__(self, alg: str, key: Any, jkt: str) -> None:
        self.alg = alg
        self.key = key
        self.jkt = jkt

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            if self.alg == "ES256":
                # RFC 7518 §3.4: R || S, each 32 bytes; cryptography wants DER.
                if len(signature) != 2 * _EC_COORDINATE_BYTES:
                    return False
                r = int.from_bytes(signature[:_EC_COORDINATE_BYTES], "big")
                s = int.from_bytes(signature[_EC_COORDINATE_BYTES:], "big")
                self.key.verify(encode_dss_signature(r, s), message, _ECDSA_SHA256)
            elif self.alg == "RS256":
                self.key.verify(signature, message, _PKCS1V15, _SHA256)
            else:
                self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _member(jwk: dict[str, object], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"jwk member {name} missing or not base64url")
    return value


def _thumbprint_input(jwk: dict[str, object], alg: str) -> str:
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
    if alg == "RS256":
        if kty != "RSA":
            raise ValueError("RS256 needs an RSA key")
        e, n = _member(jwk, "e"), _member(jwk, "n")
        return f'{{"e":"{e}","kty":"RSA","n":"{n}"}}'
    crv = jwk.get("crv")
    if kty != "OKP" or crv not in _OKP_KEY_BYTES:
        raise ValueError("EdDSA needs an OKP Ed25519 or Ed448 key")
    x = _member(jwk, "x")
    return f'{{"crv":"{crv}","kty":"OKP","x":"{x}"}}'


def _public_key(jwk: dict[str, object], alg: str) -> Any:
    if alg == "ES256":
        x, y = b64url_decode(_member(jwk, "x")), b64url_decode(_member(jwk, "y"))
        if len(x) != _EC_COORDINATE_BYTES or len(y) != _EC_COORDINATE_BYTES:
            raise ValueError("bad P-256 coordinates")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        )
        return numbers.public_key()  # checks the point is on the curve
    if alg == "RS256":
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
    crv = jwk["crv"]
    x = b64url_decode(_member(jwk, "x"))
    if len(x) != _OKP_KEY_BYTES[str(crv)]:
        raise ValueError("bad OKP key length")
    if crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    return ed448.Ed448PublicKey.from_public_bytes(x)


def jwk_thumbprint(jwk: dict[str, object], alg: str) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK for ``alg`` (``ValueError`` if unfit)."""
    return b64url_encode(hashlib.sha256(_thumbprint_input(jwk, alg).encode("ascii")).digest())


# -- nonces (RFC 9449 §8, §9) ------------------------------------------------------------------


class DPoPNonces:
    """Stateless server nonces: base64url(HMAC-SHA256(key, time bucket))[:22 chars]. A nonce
    is accepted in the bucket it was made in and the next one, so it lives between
    ``period`` and ``2 * period`` seconds; the current one goes out in ``DPoP-Nonce``."""

    __slots__ = ("_cache", "_key", "period")

    def __init__(self, key: bytes, *, period: int = 300) -> None:
        if period < 1:
            raise ValueError("the nonce period must be at least one second")
        self._key = key
        self.period = period
        self._cache: tuple[int, str, str] = (-1, "", "")

    def _make(self, bucket: int) -> str:
        mac = hmac.new(self._key, b"dpop-nonce:" + str(bucket).encode(), hashlib.sha256)
        return b64url_encode(mac.digest()[:16])

    def _pair(self, now: float) -> tuple[str, str]:
        bucket = int(now // self.period)
        cached = self._cache
        if cached[0] != bucket:
            cached = (bucket, self._make(bucket), self._make(bucket - 1))
            self._cache = cached  # one tuple, swapped whole: safe across threads
        return cached[1], cached[2]

    def current(self, now: float) -> str:
        return self._pair(now)[0]

    def is_valid(self, nonce: object, now: float) -> bool:
        if not isinstance(nonce, str):
            return False
        current, previous = self._pair(now)
        raw = nonce.encode("utf-8", "replace")
        return hmac.compare_digest(raw, current.encode()) or hmac.compare_digest(
            raw, previous.encode()
        )


# -- the proof (RFC 9449 §4) ------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ProofVerifier:
    """RFC 9449 §4.3 checks of a DPoP proof; one instance per process (it caches the checked
    headers of recently seen proofs and their public keys).

    ``window``: how far ``iat`` may be from now, either way, in seconds (§11.1).
    ``nonces``: the server's nonces (§8), against which ``DPoPProof.nonce_ok`` is computed
    (always False without them).
    """

    __slots__ = ("_keys", "nonces", "window")

    def __init__(self, *, window: int = 60, nonces: DPoPNonces | None = None) -> None:
        if window < 1:
            raise ValueError("the iat window must be at least one second")
        self.window = window
        self.nonces = nonces
        self._keys: dict[bytes, _Key] = {}

    def _header_key(self, segment: bytes) -> _Key:
        """§4.3 checks 3-6 on the proof's JOSE header: the key it names, for its alg."""
        try:
            header = orjson.loads(b64url_decode(segment))
        except (ValueError, TypeError):
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.") from None
        if not isinstance(header, dict):
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.")
        if header.get("typ") != PROOF_TYPE:
            raise InvalidDPoPProof("The DPoP proof's typ must be dpop+jwt.")
        alg = header.get("alg")
        if alg not in ALGS:  # never "none" or a MAC
            raise InvalidDPoPProof("The DPoP proof's alg is not supported.")
        if "crit" in header:  # RFC 7515 §4.1.11: no extension is understood here
            raise InvalidDPoPProof("The DPoP proof has an unsupported crit header.")
        jwk = header.get("jwk")
        try:
            if not isinstance(jwk, dict):
                raise ValueError("jwk is not an object")
            material = _thumbprint_input(jwk, alg)
            jkt = b64url_encode(hashlib.sha256(material.encode("ascii")).digest())
            return _Key(alg, _public_key(jwk, alg), jkt)
        except (ValueError, TypeError, KeyError):
            raise InvalidDPoPProof("The DPoP proof's jwk is not a usable public key.") from None

    def verify(
        self,
        values: Sequence[str],
        *,
        htm: str,
        htu: str,
        now: float,
        access_token: str | None = None,
    ) -> DPoPProof:
        """Check the ``DPoP`` header values of a ``htm`` request to ``htu`` (normalized with
        ``normalize_htu``; built from the configured issuer, never from the request's Host).
        With ``access_token`` (a protected resource, §7), ``ath`` must be its hash."""
        # §4.3 check 1: "there is not more than one DPoP HTTP request header field".
        if len(values) != 1:
            raise InvalidDPoPProof("Exactly one DPoP header is required.")
        proof = values[0]
        if len(proof) > MAX_PROOF_LENGTH:
            raise InvalidDPoPProof("The DPoP proof is too large.")
        try:
            raw = proof.encode("ascii")
            m = _COMPACT_JWS.fullmatch(raw)
            if m is None:
                raise ValueError("not a compact JWS")
            payload = b64url_decode(m[2])
            signature = b64url_decode(m[3])
        except (ValueError, TypeError):  # incl. binascii and encode errors
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.") from None
        # A client signs proof after proof with one key, so with one header: the header's
        # checks and key are cached by its exact bytes, once a signature verified with it.
        segment = m[1]
        key = self._keys.get(segment)
        cached = key is not None
        if key is None:
            key = self._header_key(segment)
        # Check 7: "the JWT signature verifies with the public key contained in the jwk".
        if not key.verify(signature, raw[: m.end(2)]):
            raise InvalidDPoPProof("The DPoP proof's signature is invalid.")
        if not cached:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[segment] = key
        try:
            claims = orjson.loads(payload)
        except ValueError:
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.") from None
        if not isinstance(claims, dict):
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.")
        # Check 2: the required claims; 8-9: htm and htu.
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise InvalidDPoPProof("The DPoP proof's jti is missing or too long.")
        if claims.get("htm") != htm:
            raise InvalidDPoPProof("The DPoP proof's htm does not match the request method.")
        claimed_htu = claims.get("htu")
        if not isinstance(claimed_htu, str) or (
            claimed_htu != htu and normalize_htu(claimed_htu) != htu
        ):
            raise InvalidDPoPProof("The DPoP proof's htu does not match the request URI.")
        # Check 11: "the creation time of the JWT ... is within an acceptable window".
        iat = claims.get("iat")
        if not _is_number(iat):
            raise InvalidDPoPProof("The DPoP proof has no valid iat.")
        iat = float(iat)  # type: ignore[arg-type]
        if iat < now - self.window:
            raise InvalidDPoPProof("The DPoP proof is too old.")
        if iat > now + self.window:
            raise InvalidDPoPProof("The DPoP proof was issued in the future.")
        # Check 12: "if presented to a protected resource in conjunction with an access
        # token, ensure that the value of the ath claim equals the hash of that access token".
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode("utf-8", "replace"), access_token_hash(access_token).encode()
            ):
                raise InvalidDPoPProof("The DPoP proof's ath does not match the access token.")
        # Check 10: "if the server provided a nonce value ..., the nonce claim matches".
        # Only computed here: the caller, which knows whether a nonce is required, raises
        # UseDPoPNonce after every other check, so a client told to use a nonce has nothing
        # else to fix.
        nonces = self.nonces
        nonce_ok = nonces is not None and nonces.is_valid(claims.get("nonce"), now)
        replay = hashlib.sha256(f"{jti}\n{htm}\n{htu}".encode("utf-8", "replace")).digest()
        return DPoPProof(key.jkt, replay, iat + self.window + REPLAY_MARGIN, nonce_ok)
