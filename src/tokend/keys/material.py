"""Keys derived from the system secret (``TOKEND_SECRET_KEY``) with HKDF-SHA256 (RFC 5869).

One master secret, one derived key per purpose, so a key is never used for two things.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"tokend/v1"


def derive(master: str, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode("ascii")
    ).derive(master.encode("utf-8"))


class Sealer:
    """AES-256-GCM for private keys at rest; the key id is bound as associated data."""

    def __init__(self, master: str) -> None:
        self._aead = AESGCM(derive(master, "signing-key-encryption"))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], aad)
