"""JOSE building blocks shared by the server's JWS code (``tokend.core.dpop``,
``tokend.keys.ring``) and the domain's hashes (PKCE, ``at_hash``, pairwise subjects):
unpadded base64url (RFC 7515 §2), and its one canonical decoding.

(The client, ``tokend.client``, keeps its own few lines: it must not import server code.)
"""

from __future__ import annotations

import base64


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
