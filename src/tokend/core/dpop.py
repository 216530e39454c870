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
from urllib.parse import urlsplit

from tokend.core import jose
from tokend.core.errors import InvalidDPoPProof
from tokend.core.jose import b64url_encode
from tokend.core.models import DPoPProof

# RFC 9449 §4.2: "an asymmetric digital signature algorithm"; never "none" or a MAC.
ALGS = jose.ALGS
PROOF_TYPE = "dpop+jwt"
MAX_PROOF_LENGTH = 8192  # an RSA-4096 proof is ~2 KB; anything far bigger is not a proof
MAX_JTI_LENGTH = 256
# How long past its acceptance window a proof's replay-cache row is kept: covers clocks of
# different processes (or machines) that disagree by up to this many seconds.
REPLAY_MARGIN = 60

_KEY_CACHE_SIZE = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


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


# -- the proof's key (RFC 7517 in the header, RFC 7638 thumbprint: tokend.core.jose) ----------


class _Key:
    """A proof's public key, ready to verify signatures of its algorithm, and its RFC 7638
    thumbprint (the ``jkt`` a bound token carries)."""

    __slots__ = ("alg", "jkt", "key")

    def __init__(self, alg: str, key: jose.PublicKey, jkt: str) -> None:
        self.alg = alg
        self.key = key
        self.jkt = jkt

    def verify(self, signature: bytes, message: bytes) -> bool:
        return jose.verify_signature(self.alg, self.key, signature, message)


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
            header = jose.decode_header(segment)
        except ValueError:
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.") from None
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
            jkt = jose.jwk_thumbprint(jwk, alg)  # also checks the key fits alg, and is public
            return _Key(alg, jose.public_key(jwk, alg), jkt)
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
            jws = jose.parse_compact(proof)
        except ValueError:  # incl. binascii and encode errors
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.") from None
        # A client signs proof after proof with one key, so with one header: the header's
        # checks and key are cached by its exact bytes, once a signature verified with it.
        segment = jws.header_segment
        key = self._keys.get(segment)
        cached = key is not None
        if key is None:
            key = self._header_key(segment)
        # Check 7: "the JWT signature verifies with the public key contained in the jwk".
        if not key.verify(jws.signature, jws.signing_input):
            raise InvalidDPoPProof("The DPoP proof's signature is invalid.")
        if not cached:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[segment] = key
        try:
            claims = jose.json_object(jws.payload)
        except ValueError:
            raise InvalidDPoPProof("The DPoP proof is not a well-formed JWT.") from None
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
        claimed_iat = claims.get("iat")
        if not isinstance(claimed_iat, int | float) or isinstance(claimed_iat, bool):
            raise InvalidDPoPProof("The DPoP proof has no valid iat.")
        iat = float(claimed_iat)
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
