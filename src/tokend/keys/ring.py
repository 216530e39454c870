"""The signing key ring (cryptography's MultiFernet idea: one key signs, all keys verify).

- One *current* key per algorithm in use: ``TOKEND_SIGNING_ALG``'s (access tokens of the
  clients that name no algorithm), RS256 (ID tokens of the clients that name none: OIDC
  Core §15.1, OIDC Registration §2 ``id_token_signed_response_alg``), and each algorithm a
  client was registered with (``--access-token-alg``, ``--id-token-alg``). A key for an
  algorithm is made on first need (``ensure``; the server also makes those of the clients'
  algorithms when it starts and when the clients change), stored like the others; of the
  processes racing to make it one wins and the others load and use the winner's.
- ``kid`` is the RFC 7638 JWK thumbprint; each key is bound to one algorithm (its JWK's
  ``alg``), and a token verifies only with that algorithm.
- Private keys are stored sealed with a key derived from ``TOKEND_SECRET_KEY``.
- The JWKS lists current keys and keys retired within the retention window (the longest
  token lifetime), so tokens signed before a rotation verify until they expire.
- Every process re-reads the ring when its fingerprint in the database changes
  (``reload_if_changed``), so ``tokend keys rotate`` reaches running servers without restart.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tokend.core import jose
from tokend.core.bearer import InvalidToken
from tokend.core.clock import Clock
from tokend.core.events import EventKind
from tokend.core.jose import b64url_encode_raw
from tokend.core.minting import DEFAULT_ID_TOKEN_ALG
from tokend.core.models import SecurityEvent
from tokend.keys.material import Sealer
from tokend.keys.storage import KeyRecord, KeyStorage

SUPPORTED_ALGS = jose.SIGNING_ALGS
# How often at most an unknown ``kid`` makes verify() look for keys another process has just
# made (seconds): a token signed by a new key elsewhere verifies here at once, and tokens
# with made-up kids cost one cheap read per this interval, not one each.
UNKNOWN_KID_RELOAD_INTERVAL = 1.0
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}

# Our access tokens are about 1 KB (an RS256 signature is 342 characters of it); anything
# far longer is refused before it is matched or decoded.
MAX_TOKEN_LENGTH = 16 * 1024


class NoSigningKey(RuntimeError):
    """The ring has no current key for an algorithm it must sign with (run `tokend serve`
    or `tokend keys rotate` once)."""


def generate_private_key(alg: str) -> Any:
    if alg in jose.RSA_ALGS:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}; choose one of {', '.join(SUPPORTED_ALGS)}")


def public_jwk(private_key: Any, alg: str) -> dict[str, Any]:
    pub = private_key.public_key()
    if alg in jose.RSA_ALGS:
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    elif alg == "ES256":
        jwk = ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(pub, as_dict=True)
    members = {k: jwk[k] for k in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    return {**members, "kid": jose.jwk_thumbprint(members, alg), "alg": alg, "use": "sig"}


class _SigningKey:
    """One current key. Signs with PyJWT's ``Algorithm`` for the key (the same object
    ``jwt.encode`` uses); the compact serialization around it (RFC 7515 §7.1) is built here,
    with the JOSE header of each ``typ`` encoded once: ``jwt.encode`` re-serialises the
    header, re-resolves the algorithm and re-checks the key on every call, which costs as
    much as a tenth of the RSA signature itself. The bytes are the same as ``jwt.encode``'s
    (sorted header members, compact JSON) for ASCII claims."""

    __slots__ = ("_algorithm", "_headers", "alg", "key", "kid")

    def __init__(self, kid: str, alg: str, key: Any) -> None:
        self.kid = kid
        self.alg = alg
        self.key = key
        self._algorithm = jwt.get_algorithm_by_name(alg)
        self._headers: dict[str, bytes] = {}

    def _header(self, typ: str) -> bytes:
        segment = self._headers.get(typ)
        if segment is None:
            header = {"alg": self.alg, "kid": self.kid, "typ": typ}
            segment = self._headers[typ] = b64url_encode_raw(orjson.dumps(header))
        return segment

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        signing_input = self._header(typ) + b"." + b64url_encode_raw(orjson.dumps(claims))
        signature = self._algorithm.sign(signing_input, self.key)
        return (signing_input + b"." + b64url_encode_raw(signature)).decode("ascii")


class KeyRing:
    def __init__(
        self,
        store: KeyStorage,
        *,
        master_secret: str,
        clock: Clock,
        access_token_alg: str = "RS256",
        retention: float = 86400 + 3600,
    ) -> None:
        if access_token_alg not in SUPPORTED_ALGS:
            raise ValueError(f"unsupported signing algorithm {access_token_alg!r}")
        self._store = store
        self._sealer = Sealer(master_secret)
        self._clock = clock
        self.access_token_alg = access_token_alg
        self.retention = retention
        self._current: dict[str, _SigningKey] = {}
        # When the current key of access_token_alg was made (tokend_signing_key_age_seconds).
        self.current_created_at: float | None = None
        self._version: tuple[int, float] | None = None
        self._unpublish_at: float | None = None  # when the next retired key leaves the JWKS
        self.jwks: dict[str, Any] = {"keys": []}
        self.jwks_json: bytes = b'{"keys":[]}'
        self._verification_keys: Mapping[str, jwt.PyJWK] = MappingProxyType({})
        # One key made per algorithm per process, not one per thread (PostgreSQL's pool).
        self._provisioning = threading.RLock()
        self._unknown_kid_checked_at = float("-inf")

    # -- administration --------------------------------------------------------------------

    def ensure(self, algs: Iterable[str] = ()) -> list[KeyRecord]:
        """Make a key for each algorithm the service signs with (``access_token_alg``,
        ``DEFAULT_ID_TOKEN_ALG``, and ``algs``: the clients') that has no current key, and
        load the ring. Safe when several processes race: each stores its key only if no
        current key of that algorithm exists by then (decided under the store's writers'
        lock), so exactly one wins and every process loads the winner's. Returns the keys
        this call stored (a first key is not a rotation: no event)."""
        wanted = dict.fromkeys((self.access_token_alg, DEFAULT_ID_TOKEN_ALG, *algs))
        unsupported = [alg for alg in wanted if alg not in SUPPORTED_ALGS]
        if unsupported:
            raise ValueError(f"unsupported signing algorithm {unsupported[0]!r}")
        if self._version is not None and wanted.keys() <= self._current.keys():
            return []  # the usual case, without a read
        with self._provisioning:
            active = {k.alg for k in self._store.list_keys() if k.retired_at is None}
            made = []
            for alg in wanted:
                if alg not in active:
                    record = self._record(alg)
                    if self._store.insert_first_key(record):
                        made.append(record)
            self.load()
        return made

    def rotate(self, alg: str) -> KeyRecord:
        """A new current key for ``alg``; the previous one is retired (still published).
        Recorded as a security event (``signing_key_rotated``) in the same transaction."""
        if alg not in SUPPORTED_ALGS:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        record = self._record(alg)
        self._store.insert_key(
            record,
            retire_alg=alg,
            event=SecurityEvent(
                EventKind.SIGNING_KEY_ROTATED,
                record.created_at,
                detail={"kid": record.kid, "alg": alg},  # the public key's id, no secret
            ),
        )
        return record

    def _record(self, alg: str) -> KeyRecord:
        """A fresh key for ``alg``, sealed for storage."""
        private = generate_private_key(alg)
        jwk = public_jwk(private, alg)
        pkcs8 = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return KeyRecord(
            kid=jwk["kid"],
            alg=alg,
            private_key=self._sealer.seal(pkcs8, jwk["kid"].encode()),
            public_jwk=json.dumps(jwk, sort_keys=True),
            created_at=self._clock.now(),
            retired_at=None,
        )

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        version = self._store.keys_version()
        records = self._store.list_keys()
        now = self._clock.now()
        current: dict[str, _SigningKey] = {}
        created: dict[str, float] = {}
        published = []
        unpublish_at: float | None = None
        for rec in records:
            if rec.retired_at is None:
                pkcs8 = self._sealer.open(rec.private_key, rec.kid.encode())
                # Our own key, authenticated by AES-GCM: skip the slow RSA consistency check.
                key = serialization.load_der_private_key(
                    pkcs8, password=None, unsafe_skip_rsa_key_validation=True
                )
                current[rec.alg] = _SigningKey(rec.kid, rec.alg, key)  # newest wins (ordered)
                created[rec.alg] = rec.created_at
                published.append(json.loads(rec.public_jwk))
            elif rec.retired_at > now - self.retention:
                published.append(json.loads(rec.public_jwk))
                until = rec.retired_at + self.retention
                unpublish_at = until if unpublish_at is None else min(unpublish_at, until)
        published.reverse()  # newest first
        self._current = current
        self.current_created_at = created.get(self.access_token_alg)
        self.jwks = {"keys": published}
        self.jwks_json = json.dumps(self.jwks, separators=(",", ":")).encode()
        self._verification_keys = MappingProxyType({k["kid"]: jwt.PyJWK(k) for k in published})
        self._version = version
        self._unpublish_at = unpublish_at

    def _look_for_new_keys(self) -> bool:
        """For a ``kid`` this process does not know: reload if another process has made or
        rotated a key since (at most once per ``UNKNOWN_KID_RELOAD_INTERVAL``)."""
        now = self._clock.now()
        if now - self._unknown_kid_checked_at < UNKNOWN_KID_RELOAD_INTERVAL:
            return False
        self._unknown_kid_checked_at = now
        return self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Reload when another process changed the ring, or when a retired key's retention
        has passed (so a long-running server stops publishing it without a restart)."""
        expired = self._unpublish_at is not None and self._clock.now() >= self._unpublish_at
        if expired or self._store.keys_version() != self._version:
            self.load()
            return True
        return False

    # -- tokend.core.ports.Signer ----------------------------------------------------------

    def _key(self, alg: str) -> _SigningKey:
        key = self._current.get(alg)
        if key is None:
            key = self._provision(alg)
        return key

    def _provision(self, alg: str) -> _SigningKey:
        """The current key of ``alg``, made (or another process's, loaded) on first need:
        a client registered with an algorithm the ring has no key for yet. The server makes
        them ahead (``ensure`` with the clients' algorithms), so this is the rare path."""
        if alg not in SUPPORTED_ALGS:
            raise NoSigningKey(f"no {alg!r} signing key: not an algorithm tokend signs with")
        with self._provisioning:
            if alg not in self._current:
                self.ensure((alg,))
            try:
                return self._current[alg]
            except KeyError:
                raise NoSigningKey(f"no current {alg} signing key") from None

    def sign_access_token(self, claims: Mapping[str, Any], alg: str | None = None) -> str:
        """RFC 9068 §2.1: header ``typ`` is ``at+jwt``; signed with the current key of
        ``alg`` (the client's), or of ``access_token_alg`` (``TOKEND_SIGNING_ALG``)."""
        return self._key(alg or self.access_token_alg).sign(claims, "at+jwt")

    def sign_id_token(self, claims: Mapping[str, Any], alg: str = DEFAULT_ID_TOKEN_ALG) -> str:
        """An ID token signed with the current key of ``alg`` (the client's)."""
        return self._key(alg).sign(claims, "JWT")

    def ready(self) -> bool:
        """Whether the ring can sign what the service issues by default: a current key for
        access tokens and one for ID tokens (RS256). What the readiness probe
        (``/healthz``) asks; a client's other algorithm gets its key on first need."""
        return self.access_token_alg in self._current and DEFAULT_ID_TOKEN_ALG in self._current

    @property
    def algs(self) -> tuple[str, ...]:
        """The algorithms the ring has a current key for."""
        return tuple(self._current)

    def current_kid(self, alg: str | None = None) -> str:
        return self._key(alg or self.access_token_alg).kid

    def verification_keys(self) -> Mapping[str, jwt.PyJWK]:
        """kid -> PyJWK of every published key (for verifying our own tokens); built once
        per ``load()``."""
        return self._verification_keys

    # -- tokend.core.bearer.TokenVerifier --------------------------------------------------

    def verify(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Header and claims of a compact JWS signed by one of our published keys (by
        ``kid``), with that key's own algorithm: ``none``, HS* or any ``alg`` other than the
        key's is refused, and so is any ``crit`` extension (RFC 7515 §4.1.11: none is
        understood here). One opaque failure, ``InvalidToken``; no claim is checked here.

        Parsed with C-speed primitives (PyJWT's parser loops over every character in
        Python, costing more than the RSA verification itself) by ``tokend.core.jose``:
        canonical base64url only, as PyJWT requires; the signature is checked there too,
        with the key PyJWT read from our own published JWK."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken()
        try:
            jws = jose.parse_compact(token)
            header = jose.decode_header(jws.header_segment)
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise ValueError("no kid")
            key = self._verification_keys.get(kid)
            if key is None and self._look_for_new_keys():
                key = self._verification_keys.get(kid)
            # The algorithm is the key's (its JWK's "alg"); the header must merely agree.
            if (
                key is None
                or header.get("alg") != key.algorithm_name
                or "crit" in header
                or not jose.verify_signature(
                    key.algorithm_name, key.key, jws.signature, jws.signing_input
                )
            ):
                raise ValueError("bad signature")
            claims = jose.json_object(jws.payload)
        except (ValueError, TypeError):  # incl. binascii/JSON/encode errors
            raise InvalidToken() from None
        return header, claims
