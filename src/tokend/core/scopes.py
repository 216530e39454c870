"""Scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of NQCHAR-safe characters.

Bounded, since a scope arrives before anyone is authenticated (``/auth/v2/authorize``): at
most ``MAX_SCOPES`` distinct values of at most ``MAX_SCOPE_LENGTH`` characters each, and the
work is linear in the input (a set for the duplicates, never a list search).
"""

from __future__ import annotations

import re

from tokend.core.errors import InvalidScope

# scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

MAX_SCOPES = 64  # distinct values in one request (registered scopes are far fewer)
MAX_SCOPE_LENGTH = 128  # characters of one value
# The longest value worth splitting: MAX_SCOPES values and a separator each, with room for
# doubled spaces.
_MAX_SCOPE_PARAMETER = 2 * MAX_SCOPES * (MAX_SCOPE_LENGTH + 1)

OFFLINE_SCOPES = frozenset({"offline", "offline_access"})
OPENID = "openid"


def parse_scope(value: str | None) -> tuple[str, ...]:
    """Unique scope tokens in first-seen order; bad syntax, more than ``MAX_SCOPES`` values
    or one longer than ``MAX_SCOPE_LENGTH`` is ``invalid_scope``."""
    if value is None:
        return ()
    if len(value) > _MAX_SCOPE_PARAMETER:
        raise InvalidScope(_TOO_MANY)
    out: dict[str, None] = {}  # insertion-ordered; membership in O(1)
    for item in value.split(" "):
        if not item:
            continue  # tolerate doubled spaces
        if len(item) > MAX_SCOPE_LENGTH:
            raise InvalidScope(f"A scope value is longer than {MAX_SCOPE_LENGTH} characters.")
        if not _SCOPE_TOKEN.fullmatch(item):
            raise InvalidScope("The scope parameter is malformed.")
        out[item] = None
        if len(out) > MAX_SCOPES:
            raise InvalidScope(_TOO_MANY)
    return tuple(out)


_TOO_MANY = f"The scope parameter has more than {MAX_SCOPES} values."


def format_scope(scopes: tuple[str, ...] | list[str]) -> str:
    return " ".join(scopes)


def wants_refresh_token(scopes: tuple[str, ...]) -> bool:
    """`offline` and `offline_access` both ask for a refresh token (DESIGN.md)."""
    return any(s in OFFLINE_SCOPES for s in scopes)


def narrow(granted: tuple[str, ...], requested: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 6749 §6: a requested scope MUST NOT include any scope not originally granted."""
    if not requested:
        return granted
    allowed = set(granted)
    extra = [s for s in requested if s not in allowed]
    if extra:
        raise InvalidScope("The requested scope exceeds the scope originally granted.")
    return requested
