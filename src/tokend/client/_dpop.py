"""``DPoPKey``: sender-constrained tokens (RFC 9449, OAuth 2.0 Demonstrating Proof of
Possession) for ``OAuthClient``, ``AsyncOAuthClient`` and ``RefreshingAuth``.

::

    key = DPoPKey.generate()                       # ES256 (P-256); RS256 and EdDSA too
    oauth = OAuthClient.from_issuer(url, client_id=..., dpop_key=key)
    token = oauth.refresh(refresh_token)           # token.token_type == "DPoP"
    api = httpx.Client(auth=oauth.auth(store))     # Authorization: DPoP + proof with ath

With a key, every token request carries a fresh proof (``DPoP`` header, §4), so the server
binds the access token to the key and, for a public client, the refresh tokens too: a
stolen token is useless without the private key. Keep the key as long as the tokens
(``to_pem``/``from_pem``). A ``DPoP-Nonce`` the server sends is remembered per origin and
put in the next proof; an answer asking for one (``use_dpop_nonce``, §8, §9) is retried once.

The key is made and used with ``cryptography``, imported only when a ``DPoPKey`` is.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

from tokend.client._wire import auth_challenge, b64url, s256

if TYPE_CHECKING:  # at run time, cryptography is imported only when a DPoPKey is made
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    _PrivateKey: TypeAlias = (
        ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    )

__all__ = ["DPoPKey", "asks_for_nonce", "nonce_retry"]

ALGS = ("ES256", "RS256", "EdDSA")
NONCE_HEADER = "DPoP-Nonce"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port or ''}"


class DPoPKey:
    """A DPoP key pair: makes the proofs (RFC 9449 §4.2) and remembers server nonces.

    ``private_key`` is a ``cryptography`` private key: EC P-256 (ES256), RSA of at least
    2048 bits (RS256) or Ed25519 (EdDSA). ``clock`` returns seconds since the epoch, for
    ``iat``. Safe to share between threads and clients.
    """

    def __init__(self, private_key: Any, *, clock: Callable[[], float] = time.time) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        key: _PrivateKey
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if not isinstance(private_key.curve, ec.SECP256R1):
                raise ValueError("an EC DPoP key must be on P-256 (ES256)")
            numbers = private_key.public_key().public_numbers()
            jwk = {
                "kty": "EC",
                "crv": "P-256",
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")),
            }
            self.alg, key = "ES256", private_key
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < 2048:
                raise ValueError("an RSA DPoP key must have at least 2048 bits")
            pub = private_key.public_key().public_numbers()
            jwk = {
                "kty": "RSA",
                "e": b64url(pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")),
                "n": b64url(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")),
            }
            self.alg, key = "RS256", private_key
        elif isinstance(private_key, ed25519.Ed25519PrivateKey):
            from cryptography.hazmat.primitives import serialization

            raw = private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
            self.alg, key = "EdDSA", private_key
        else:
            raise TypeError("a DPoP key is an EC P-256, RSA or Ed25519 private key")
        self._key = key
        self.jwk: dict[str, str] = jwk
        # RFC 7638: the SHA-256 of the required members, sorted, without whitespace (which
        # is all jwk holds), base64url: the server's cnf.jkt for tokens bound to this key.
        # (The server computes it in tokend.core.jose; the client, which must not import
        # server code, computes it here, from the members it has just built.)
        self.thumbprint = b64url(hashlib.sha256(_json(jwk)).digest())
        self._header = b64url(_json({"typ": "dpop+jwt", "alg": self.alg, "jwk": jwk}))
        self._clock = clock
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def generate(cls, alg: str = "ES256", *, clock: Callable[[], float] = time.time) -> DPoPKey:
        """A new key for ``alg`` (ES256, RS256 or EdDSA)."""
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), clock=clock)
        if alg == "RS256":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), clock=clock)
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), clock=clock)
        raise ValueError(f"unsupported DPoP algorithm {alg!r}; choose one of {', '.join(ALGS)}")

    @classmethod
    def from_pem(
        cls, pem: bytes, *, password: bytes | None = None, clock: Callable[[], float] = time.time
    ) -> DPoPKey:
        """A key saved with ``to_pem``."""
        from cryptography.hazmat.primitives import serialization

        return cls(serialization.load_pem_private_key(pem, password=password), clock=clock)

    def to_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM (encrypted with ``password`` if given): store it
        where the tokens are stored, with the same care."""
        from cryptography.hazmat.primitives import serialization

        encryption: Any = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, thumbprint={self.thumbprint!r})"

    # -- proofs ---------------------------------------------------------------------------------

    def _sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):  # ES256
            from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4
        if isinstance(key, rsa.RSAPrivateKey):  # RS256
            from cryptography.hazmat.primitives.asymmetric import padding

            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)  # EdDSA

    def proof(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A DPoP proof JWT for one request: ``htm`` the method, ``htu`` the URL without query
        and fragment, a fresh ``jti``, ``iat`` now, ``ath`` for an access token (at a
        resource, §7), and ``nonce`` (by default the last one ``url``'s origin sent)."""
        target = httpx.URL(url)
        claims: dict[str, object] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": str(target.copy_with(query=None, fragment=None)),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = s256(access_token)
        if nonce is None:
            nonce = self.nonce_for(target)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = f"{self._header}.{b64url(_json(claims))}"
        return f"{signing_input}.{b64url(self._sign(signing_input.encode('ascii')))}"

    def sign_request(
        self, request: httpx.Request, *, access_token: str | None = None
    ) -> httpx.Request:
        """Put a fresh proof in ``request``'s ``DPoP`` header (and ``Authorization: DPoP``
        when ``access_token`` is given); returns the request."""
        request.headers["DPoP"] = self.proof(request.method, request.url, access_token=access_token)
        if access_token is not None:
            request.headers["Authorization"] = f"DPoP {access_token}"
        return request

    # -- nonces (RFC 9449 §8, §9) -----------------------------------------------------------

    def nonce_for(self, url: str | httpx.URL) -> str | None:
        """The last nonce ``url``'s origin (scheme, host, port) sent, if any."""
        with self._lock:
            return self._nonces.get(_origin(httpx.URL(url)))

    def remember_nonce(self, response: httpx.Response) -> bool:
        """Keep the response's ``DPoP-Nonce`` for its origin; True when it sent one."""
        nonce = response.headers.get(NONCE_HEADER)
        if not nonce:
            return False
        with self._lock:
            self._nonces[_origin(response.request.url)] = nonce
        return True


def asks_for_nonce(response: httpx.Response) -> bool:
    """True when ``response`` asks for a (new) nonce in the proof and gives one: 400 with
    ``error=use_dpop_nonce`` from an authorization server (§8; the body must have been
    read), or 401 with a ``DPoP`` challenge ``error="use_dpop_nonce"`` from a resource (§9)."""
    if NONCE_HEADER not in response.headers:
        return False
    if response.status_code == 401:
        challenge = auth_challenge(response.headers.get("www-authenticate"), "dpop")
        return challenge.get("error") == "use_dpop_nonce"
    if response.status_code == 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
    return False


def nonce_retry(key: DPoPKey | None, request: httpx.Request, response: httpx.Response) -> bool:
    """A client's DPoP nonce handling (RFC 9449 §8, §9), for ``OAuthClient``,
    ``AsyncOAuthClient`` and ``RefreshingAuth`` alike: remember the answer's nonce; when it
    asks for one, put a fresh proof with it in ``request`` and say so (the caller sends it
    once more). Token endpoint answers must have been read."""
    if key is None or not key.remember_nonce(response) or not asks_for_nonce(response):
        return False
    authorization = request.headers.get("authorization", "")
    access_token = authorization[5:] if authorization[:5].lower() == "dpop " else None
    key.sign_request(request, access_token=access_token)
    return True
