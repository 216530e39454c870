"""PKCE (tokend.core.pkce, RFC 7636): S256 only, the verifier's and challenge's syntax."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.core.world import CHALLENGE, VERIFIER
from tokend.core import pkce

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def test_rfc7636_appendix_b_vector() -> None:
    # The RFC's own example: the verifier from 32 octets, and its S256 challenge.
    octets = bytes(
        [116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
         22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121]
    )  # fmt: skip
    assert base64.urlsafe_b64encode(octets).rstrip(b"=").decode() == VERIFIER
    assert pkce.s256(VERIFIER) == CHALLENGE
    assert pkce.verify(VERIFIER, CHALLENGE)
    assert pkce.is_valid_challenge(CHALLENGE)


def test_s256_is_unpadded_base64url_of_sha256() -> None:
    verifier = UNRESERVED[:43]
    digest = hashlib.sha256(verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert pkce.s256(verifier) == expected
    assert len(pkce.s256(verifier)) == 43 and "=" not in pkce.s256(verifier)


def test_method_name_is_exactly_s256() -> None:
    assert pkce.S256 == "S256"


@pytest.mark.parametrize(
    "verifier",
    [UNRESERVED[:43], UNRESERVED + UNRESERVED[:62], "~" * 128, "a.b-c_d~" * 6],
    ids=["43-chars", "128-chars", "all-tilde", "punctuation"],
)
def test_valid_verifiers_verify_against_their_challenge(verifier: str) -> None:
    assert 43 <= len(verifier) <= 128
    assert pkce.verify(verifier, pkce.s256(verifier))


@pytest.mark.parametrize(
    "verifier",
    [
        None,
        "",
        UNRESERVED[:42],
        "a" * 129,
        VERIFIER[:-1] + "+",
        VERIFIER[:-1] + "/",
        VERIFIER[:-1] + "=",
        VERIFIER[:-1] + " ",
        VERIFIER[:-1] + "é",
    ],
    ids=["none", "empty", "42-chars", "129-chars", "plus", "slash", "equals", "space", "non-ascii"],
)
def test_malformed_verifiers_never_verify(verifier: str | None) -> None:
    # Even against the challenge computed from them (where computing one is possible).
    challenge = CHALLENGE
    if verifier and verifier.isascii():
        challenge = pkce.s256(verifier)
    assert not pkce.verify(verifier, challenge)


def test_wrong_verifier_does_not_verify() -> None:
    other = VERIFIER[:-1] + ("j" if VERIFIER[-1] != "j" else "k")
    assert not pkce.verify(other, CHALLENGE)


def test_plain_is_refused_the_verifier_is_not_its_own_challenge() -> None:
    # With `plain` the challenge would equal the verifier; S256-only verification refuses it.
    assert not pkce.verify(VERIFIER, VERIFIER)
    assert not pkce.verify(CHALLENGE, CHALLENGE)


@pytest.mark.parametrize(
    ("challenge", "valid"),
    [
        (CHALLENGE, True),
        (UNRESERVED[:43], True),
        ("a" * 128, True),
        (CHALLENGE[:42], False),
        ("a" * 129, False),
        (CHALLENGE + "=", False),  # base64 padding is not unreserved (RFC 7636 §4.2)
        ("", False),
        (CHALLENGE[:-1] + "+", False),
        (CHALLENGE[:-1] + "/", False),
        (CHALLENGE[:-1] + " ", False),
        (CHALLENGE[:-1] + "\n", False),
    ],
    ids=[
        "appendix-b",
        "43-unreserved",
        "128",
        "42",
        "129",
        "padded",
        "empty",
        "plus",
        "slash",
        "space",
        "newline",
    ],
)
def test_challenge_syntax(challenge: str, valid: bool) -> None:
    assert pkce.is_valid_challenge(challenge) is valid
