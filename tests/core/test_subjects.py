"""Subject identifiers (core/subjects.py, OIDC Core §8): public is the user id; pairwise is
stable per sector (redirect URI host) and user, different across sectors, unguessable
without the salt."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace

import pytest

from tokend.core.models import Client
from tokend.core.subjects import (
    Subjects,
    check_subject_type,
    pairwise_subject,
    sector_identifier,
)

SALT = bytes(range(32))
OTHER_SALT = bytes(range(1, 33))


def client(*redirect_uris: str, subject_type: str = "pairwise", client_id: str = "c1") -> Client:
    return Client(
        client_id=client_id,
        name="app",
        public=False,
        secret_hash=None,
        grant_types=frozenset({"authorization_code"}),
        redirect_uris=redirect_uris,
        scopes=("openid",),
        subject_type=subject_type,
    )


def expected(sector: str, user_id: str, salt: bytes) -> str:
    """§8.1 written out: base64url(SHA-256(sector, user id and salt, NUL-separated)), no '='."""
    raw = f"{sector}\x00{user_id}\x00".encode() + salt
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


# -- public ------------------------------------------------------------------------------------


def test_public_subject_is_the_user_id() -> None:
    subjects = Subjects(SALT)
    assert subjects.subject(client("https://a.example/cb", subject_type="public"), "u-1") == "u-1"
    # Whatever the redirect URIs: a public client needs no sector.
    assert subjects.subject(client(subject_type="public"), "u-1") == "u-1"
    many_hosts = client("https://a.example/cb", "https://b.example/cb", subject_type="public")
    assert subjects.subject(many_hosts, "u-2") == "u-2"


# -- pairwise ----------------------------------------------------------------------------------


def test_pairwise_subject_is_the_documented_hash() -> None:
    sub = Subjects(SALT).subject(client("https://app.example/cb"), "u-1")
    assert sub == expected("app.example", "u-1", SALT)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sub)  # 256 bits, base64url, no padding
    assert sub != "u-1"


def test_pairwise_subject_is_stable_per_sector_and_user() -> None:
    subjects = Subjects(SALT)
    web = client("https://app.example/cb")
    sub = subjects.subject(web, "u-1")
    assert subjects.subject(web, "u-1") == sub
    assert Subjects(bytes(SALT)).subject(web, "u-1") == sub  # no hidden per-instance state
    # Another client on the same host is in the same sector (OIDC Core §8.1).
    same_host = client(
        "https://app.example/other", "https://APP.example:8443/x?y=1", client_id="c2"
    )
    assert subjects.subject(same_host, "u-1") == sub


def test_pairwise_subject_differs_across_sectors_users_and_salts() -> None:
    subjects = Subjects(SALT)
    a, b = client("https://a.example/cb"), client("https://b.example/cb", client_id="c2")
    values = {
        subjects.subject(a, "u-1"),
        subjects.subject(b, "u-1"),
        subjects.subject(a, "u-2"),
        subjects.subject(b, "u-2"),
        Subjects(OTHER_SALT).subject(a, "u-1"),
    }
    assert len(values) == 5


def test_pairwise_input_is_unambiguous() -> None:
    """Plain concatenation would give ("a.b" + "cd") == ("a.bc" + "d")."""
    assert pairwise_subject("a.b", "cd", SALT) != pairwise_subject("a.bc", "d", SALT)


@pytest.mark.parametrize(
    "uris",
    [
        (),
        ("https://a.example/cb", "https://b.example/cb"),
        ("https://a.example/cb", "http://127.0.0.1:8080/cb"),
        ("com.example.app:/oauth2redirect",),
        ("https://a.example/cb", "com.example.app:/oauth2redirect"),
    ],
    ids=["none", "two-hosts", "host-and-loopback", "no-host", "host-and-no-host"],
)
def test_pairwise_needs_exactly_one_host(uris: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        sector_identifier(uris)
    with pytest.raises(ValueError):
        check_subject_type("pairwise", uris)
    with pytest.raises(ValueError):
        Subjects(SALT).subject(client(*uris), "u-1")
    check_subject_type("public", uris)  # a public client has no sector to agree on


@pytest.mark.parametrize(
    ("uris", "sector"),
    [
        (("https://app.example/cb",), "app.example"),
        (("https://App.Example:8443/cb", "https://app.example/2"), "app.example"),
        (("http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/other"), "127.0.0.1"),
        (("http://[::1]:9000/cb",), "::1"),
    ],
)
def test_sector_identifier_is_the_shared_host(uris: tuple[str, ...], sector: str) -> None:
    assert sector_identifier(uris) == sector
    check_subject_type("pairwise", uris)


def test_unknown_subject_type_is_refused() -> None:
    with pytest.raises(ValueError, match="subject type"):
        check_subject_type("secret", ("https://a.example/cb",))
    with pytest.raises(ValueError, match="subject type"):
        Subjects(SALT).subject(replace(client("https://a.example/cb"), subject_type="x"), "u")


def test_salt_must_be_long_enough() -> None:
    with pytest.raises(ValueError):
        Subjects(b"short")
    Subjects(b"x" * 16)
