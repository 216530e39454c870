"""Proof Key for Code Exchange (RFC 7636), S256 only.

``plain`` is refused (RFC 9700 §2.1.1: "clients SHOULD use PKCE code challenge methods that
do not expose the PKCE verifier in the authorization request", and the server need not
offer ``plain``).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from tokend.core.jose import b64url_encode

# RFC 7636 §4.1: code-verifier = 43*128unreserved; §4.2: the S256 challenge is 43 chars.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
S256 = "S256"


def is_valid_challenge(challenge: str) -> bool:
    return _CHALLENGE.fullmatch(challenge) is not None


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return b64url_encode(digest)


def verify(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 §4.6: BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge."""
    if verifier is None or _VERIFIER.fullmatch(verifier) is None:
        return False
    return hmac.compare_digest(s256(verifier), challenge)
