"""DPoP proofs (RFC 9449 §4) for tests, well-formed and deliberately broken, made without
tokend's own DPoP code: PyJWT and cryptography sign, the RFC 7638 thumbprint is computed
here from the RFC's text, and ``compact`` assembles any header and payload by hand."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "key_ops")  # key_ops: ["sign"]
# RFC 7638 §3.2: the required members of each key type.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace."""
    members = {k: jwk[k] for k in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def ath(access_token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(ASCII(access token)))."""
    return b64(hashlib.sha256(access_token.encode("ascii")).digest())


def compact(
    header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes] | None = None
) -> str:
    """A JWS in compact serialization from any header and payload (JSON-encoded here
    unless it is bytes);
    ``sign`` gets the signing input; without it the signature segment is ``sig``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    signature = b64(sign(signing_input.encode())) if sign else "c2ln"
    return f"{signing_input}.{signature}"


class ProofKey:
    """A client's DPoP key pair: ES256 (P-256), RS256 (RSA 2048), EdDSA (Ed25519 or Ed448)."""

    def __init__(self, alg: str = "ES256", *, curve: str = "Ed25519") -> None:
        self.alg = alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            full = ECAlgorithm.to_jwk(self.private, as_dict=True)
        elif alg == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            full = RSAAlgorithm.to_jwk(self.private, as_dict=True)
        elif alg == "EdDSA":
            make = ed25519.Ed25519PrivateKey if curve == "Ed25519" else ed448.Ed448PrivateKey
            self.private = make.generate()
            full = OKPAlgorithm.to_jwk(self.private, as_dict=True)
        else:
            raise ValueError(alg)
        self.private_jwk: dict[str, Any] = dict(full)
        self.jwk: dict[str, Any] = {k: v for k, v in full.items() if k not in PRIVATE_MEMBERS}
        self.jkt = thumbprint(self.jwk)

    def claims(
        self,
        htu: str,
        htm: str = "POST",
        *,
        iat: float,
        access_token: str | None = None,
        nonce: str | None = None,
        jti: str | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jti": jti or secrets.token_urlsafe(16),
            "htm": htm,
            "htu": htu,
            "iat": int(iat),
        }
        if access_token is not None:
            out["ath"] = ath(access_token)
        if nonce is not None:
            out["nonce"] = nonce
        return out

    def sign(self, payload: dict[str, Any], *, header: dict[str, Any] | None = None) -> str:
        """A proof with ``payload``; ``header`` entries override (``None`` drops one)."""
        hdr: dict[str, Any] = {"typ": "dpop+jwt", "jwk": self.jwk}
        hdr.update(header or {})
        if hdr.get("typ", "") is None:
            hdr["typ"] = ""  # PyJWT leaves out a falsy typ
        hdr = {k: v for k, v in hdr.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=hdr)

    def proof(self, htu: str, htm: str = "POST", *, iat: float, **claims: Any) -> str:
        return self.sign(self.claims(htu, htm, iat=iat, **claims))
