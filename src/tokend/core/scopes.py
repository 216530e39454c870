"""Scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of NQCHAR-safe characters."""

from __future__ import annotations

import re

from tokend.core.errors import InvalidScope

# scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

OFFLINE_SCOPES = frozenset({"offline", "offline_access"})
OPENID = "openid"


def parse_scope(value: str | None) -> tuple[str, ...]:
    """Unique scope tokens in first-seen order; bad syntax is ``invalid_scope``."""
    if value is None:
        return ()
    out: list[str] = []
    for item in value.split(" "):
        if not item:
            continue  # tolerate doubled spaces
        if not _SCOPE_TOKEN.fullmatch(item):
            raise InvalidScope("The scope parameter is malformed.")
        if item not in out:
            out.append(item)
    return tuple(out)


def format_scope(scopes: tuple[str, ...] | list[str]) -> str:
    return " ".join(scopes)


def wants_refresh_token(scopes: tuple[str, ...]) -> bool:
    """`offline` and `offline_access` both ask for a refresh token (DESIGN.md)."""
    return any(s in OFFLINE_SCOPES for s in scopes)


def narrow(granted: tuple[str, ...], requested: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 6749 §6: a requested scope MUST NOT include any scope not originally granted."""
    if not requested:
        return granted
    extra = [s for s in requested if s not in granted]
    if extra:
        raise InvalidScope("The requested scope exceeds the scope originally granted.")
    return requested
