"""Opaque credentials: refresh tokens and client secrets.

Format (like GitHub's tokens, so secret scanners can match and verify them offline)::

    tkd_rt_<43 base62 chars: 256 random bits><6 base62 chars: CRC-32 of everything before>

Only ``hash_secret(value)`` (SHA-256) is ever stored. A slow password hash is not needed
here: every value has 256 bits of entropy, so the hash cannot be inverted by guessing.

A refresh token's successor is *derived*, not drawn: ``HMAC-SHA256(K, presented token)``
with ``K`` derived from the system secret. Presenting the just-spent token again therefore
lets the server recompute its successor and check it against the stored hash, which is how
the grace window returns the same successor without ever storing it in plaintext
(DESIGN.md, "Refresh token rules"). Without ``K`` and the previous plaintext token (neither
of which is in the database), a successor cannot be computed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Two base62 digits at a time: half the big-integer divisions (issue 6, hot path).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_BASE2 = 62 * 62
_BODY_LEN = 43  # ceil(256 / log2(62))
_CRC_LEN = 6  # ceil(32 / log2(62))

REFRESH_TOKEN_PREFIX = "tkd_rt_"
CLIENT_SECRET_PREFIX = "tkd_cs_"
# RFC 8628 device codes (and a cross-device browser's secret): tokend.core.device.
DEVICE_CODE_PREFIX = "tkd_dc_"
_SUCCESSOR_LABEL = b"tokend/v1 refresh-token successor\x00"


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width // 2):
        n, r = divmod(n, _BASE2)
        out.append(_PAIRS[r])
    if width % 2:
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    if n:
        raise ValueError("number too large for width")
    return "".join(reversed(out))


def _checksum(text: str) -> str:
    return _b62(zlib.crc32(text.encode("ascii")), _CRC_LEN)


def _encode(prefix: str, raw: bytes) -> str:
    head = prefix + _b62(int.from_bytes(raw, "big"), _BODY_LEN)
    return head + _checksum(head)


_SHAPE = re.compile(f"[0-9A-Za-z]{{{_BODY_LEN + _CRC_LEN}}}")


def is_well_formed(value: str, prefix: str) -> bool:
    """Prefix, length, alphabet and checksum are right (says nothing about validity)."""
    if not value.startswith(prefix) or not _SHAPE.fullmatch(value, len(prefix)):
        return False
    head = value[:-_CRC_LEN]
    return hmac.compare_digest(value[-_CRC_LEN:], _checksum(head))


def hash_secret(value: str) -> bytes:
    """The only form in which a refresh token or client secret is stored."""
    return hashlib.sha256(value.encode("utf-8")).digest()


def new_refresh_token() -> str:
    return _encode(REFRESH_TOKEN_PREFIX, secrets.token_bytes(32))


def derive_successor(derivation_key: bytes, presented: str, dpop_jkt: str | None = None) -> str:
    """The one successor of ``presented`` rotated with the DPoP key ``dpop_jkt`` (or with no
    key): deterministic, unpredictable without the derivation key. The key's thumbprint is
    part of the input, so a retry that comes with another key (or none) derives another
    successor and cannot pass for the request that rotated the token (a grace retry must be
    the same client with the same key)."""
    message = _SUCCESSOR_LABEL + presented.encode("ascii")
    if dpop_jkt is not None:
        message += b"\x00" + dpop_jkt.encode("ascii")
    raw = hmac.digest(derivation_key, message, "sha256")
    return _encode(REFRESH_TOKEN_PREFIX, raw)


def new_client_secret() -> str:
    return _encode(CLIENT_SECRET_PREFIX, secrets.token_bytes(32))


def new_device_code() -> str:
    return _encode(DEVICE_CODE_PREFIX, secrets.token_bytes(32))


def new_client_id() -> str:
    """Public identifier: 128 random bits, base62."""
    return _b62(int.from_bytes(secrets.token_bytes(16), "big"), 22)


def new_id() -> str:
    """Internal identifiers (families, users): 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def verify_secret(presented: str | None, stored_hash: bytes | None) -> bool:
    """Constant-time check of a presented secret against a stored hash.

    Always hashes, so an unknown client costs the same as a wrong secret.
    """
    candidate = hash_secret(presented or "")
    if stored_hash is None or presented is None:
        hmac.compare_digest(candidate, candidate)
        return False
    return hmac.compare_digest(candidate, stored_hash)
