"""Subject identifiers (OIDC Core §8): what a client sees as the user's ``sub``.

- ``public`` (§8): the user's id, the same for every client.
- ``pairwise`` (§8.1): a different, stable value per *sector* (the host of the client's
  redirect URIs), so that clients on different hosts cannot correlate a user by ``sub``::

      sub = base64url(SHA-256(sector_identifier || 0x00 || user_id || 0x00 || salt))

  without padding. The salt is a secret key derived from the system secret (the caller
  passes it in: ``tokend.keys.material.derive(secret, "pairwise-subject")``), so nobody
  without it can compute or reverse a pairwise value. The NUL separators (neither a host
  nor a user id can contain one) make the input unambiguous: ("a.b", "cd") and ("a.bc",
  "d") never hash the same bytes.

A pairwise client's redirect URIs must all share one host (there is no
``sector_identifier_uri`` registration here): with several hosts, which one is the sector
would be ambiguous, so such a registration is refused (``ValueError``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import urlsplit

from tokend.core.jose import b64url_encode
from tokend.core.models import Client

PUBLIC = "public"
PAIRWISE = "pairwise"
SUBJECT_TYPES = (PUBLIC, PAIRWISE)


def sector_identifier(redirect_uris: Iterable[str]) -> str:
    """The host shared by every redirect URI (lowercase), or ``ValueError`` if there is
    none (no redirect URI, or a URI without a host such as ``com.example.app:/cb``) or
    more than one."""
    hosts = set()
    for uri in redirect_uris:
        try:
            host = urlsplit(uri).hostname
        except ValueError:
            host = None
        if not host:
            raise ValueError(f"redirect URI {uri!r} has no host to use as sector identifier")
        hosts.add(host)
    if not hosts:
        raise ValueError("a pairwise client needs at least one redirect URI")
    if len(hosts) > 1:
        raise ValueError(
            "a pairwise client's redirect URIs must all be on one host, got "
            + ", ".join(sorted(hosts))
        )
    return hosts.pop()


def pairwise_subject(sector: str, user_id: str, salt: bytes) -> str:
    """§8.1: stable per (sector, user), unlinkable across sectors without the salt."""
    digest = hashlib.sha256(
        sector.encode("utf-8") + b"\x00" + user_id.encode("utf-8") + b"\x00" + salt
    ).digest()
    return b64url_encode(digest)


def check_subject_type(subject_type: str, redirect_uris: Iterable[str]) -> None:
    """Registration-time check: a known subject type, and a sector for pairwise."""
    if subject_type not in SUBJECT_TYPES:
        raise ValueError(f"unknown subject type {subject_type!r}")
    if subject_type == PAIRWISE:
        sector_identifier(redirect_uris)


class Subjects:
    """Computes the ``sub`` a client gets for a user; holds the pairwise salt."""

    __slots__ = ("_salt",)

    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise ValueError("the pairwise salt must be at least 128 bits")
        self._salt = salt

    def subject(self, client: Client, user_id: str) -> str:
        if client.subject_type == PUBLIC:
            return user_id
        if client.subject_type == PAIRWISE:
            return pairwise_subject(sector_identifier(client.redirect_uris), user_id, self._salt)
        raise ValueError(f"unknown subject type {client.subject_type!r}")
