"""Opaque credentials (tokend.core.secrets): format, checksum, derivation, hashing."""

from __future__ import annotations

import hashlib
import math
import string
import zlib

import pytest

from tokend.core import secrets as secrets_mod
from tokend.core.secrets import (
    CLIENT_SECRET_PREFIX,
    REFRESH_TOKEN_PREFIX,
    derive_successor,
    hash_secret,
    is_well_formed,
    new_client_id,
    new_client_secret,
    new_id,
    new_refresh_token,
    verify_secret,
)

# Computed here, independently of the module under test.
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
BODY_LEN = 43
CRC_LEN = 6
TOKEN_LEN = len(REFRESH_TOKEN_PREFIX) + BODY_LEN + CRC_LEN  # 56


def b62_encode(n: int, width: int) -> str:
    digits = []
    for _ in range(width):
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    assert n == 0
    return "".join(reversed(digits))


def b62_decode(text: str) -> int:
    n = 0
    for c in text:
        n = n * 62 + BASE62.index(c)
    return n


def crc_suffix(head: str) -> str:
    return b62_encode(zlib.crc32(head.encode("ascii")), CRC_LEN)


@pytest.fixture
def token() -> str:
    return new_refresh_token()


# -- format ---------------------------------------------------------------------------------


def test_refresh_token_is_prefix_43_base62_and_crc_checksum() -> None:
    for _ in range(200):
        value = new_refresh_token()
        assert len(value) == TOKEN_LEN
        assert value.startswith("tkd_rt_")
        body = value[len("tkd_rt_") : -CRC_LEN]
        assert len(body) == BODY_LEN
        assert set(body) <= set(BASE62)
        assert value[-CRC_LEN:] == crc_suffix(value[:-CRC_LEN])
        assert is_well_formed(value, REFRESH_TOKEN_PREFIX)


def test_refresh_token_body_encodes_all_256_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BODY_LEN * math.log2(62) >= 256
    requested: list[int] = []
    raw = bytes(range(0xE0, 0x100))  # 32 bytes, high bit set: any truncation shows

    def fake_token_bytes(n: int) -> bytes:
        requested.append(n)
        return raw[:n]

    monkeypatch.setattr(secrets_mod.secrets, "token_bytes", fake_token_bytes)
    value = new_refresh_token()
    assert requested == [32]
    assert b62_decode(value[len(REFRESH_TOKEN_PREFIX) : -CRC_LEN]) == int.from_bytes(raw, "big")


def test_refresh_tokens_do_not_repeat() -> None:
    values = {new_refresh_token() for _ in range(2000)}
    assert len(values) == 2000


# -- is_well_formed -------------------------------------------------------------------------


def _bad_values(good: str) -> list[tuple[str, str]]:
    body_and_crc = good[len(REFRESH_TOKEN_PREFIX) :]
    head = good[:-CRC_LEN]
    return [
        ("empty", ""),
        ("prefix-only", REFRESH_TOKEN_PREFIX),
        ("client-secret-prefix", CLIENT_SECRET_PREFIX + body_and_crc),
        ("no-prefix", body_and_crc),
        ("uppercase-prefix", REFRESH_TOKEN_PREFIX.upper() + body_and_crc),
        ("one-char-short", good[:-1]),
        ("one-char-long", good + "0"),
        ("trailing-space", good + " "),
        ("leading-space", " " + good),
        ("dash-in-body", head[:10] + "-" + head[11:] + good[-CRC_LEN:]),
        ("underscore-in-body", head[:20] + "_" + head[21:] + good[-CRC_LEN:]),
        ("non-ascii-in-body", head[:30] + "é" + head[31:] + good[-CRC_LEN:]),
        ("non-ascii-in-checksum", head + good[-CRC_LEN:-1] + "ß"),
        ("checksum-of-other-head", head + crc_suffix(head + "x")),
        ("zeroed-checksum", head + "0" * CRC_LEN),
    ]


_SAMPLE = new_refresh_token()


@pytest.mark.parametrize(
    "value", [v for _, v in _bad_values(_SAMPLE)], ids=[i for i, _ in _bad_values(_SAMPLE)]
)
def test_is_well_formed_rejects(value: str) -> None:
    assert value != _SAMPLE
    assert not is_well_formed(value, REFRESH_TOKEN_PREFIX)


def test_is_well_formed_accepts_its_own_prefix_only(token: str) -> None:
    secret = new_client_secret()
    assert is_well_formed(token, REFRESH_TOKEN_PREFIX)
    assert not is_well_formed(token, CLIENT_SECRET_PREFIX)
    assert is_well_formed(secret, CLIENT_SECRET_PREFIX)
    assert not is_well_formed(secret, REFRESH_TOKEN_PREFIX)


def test_flipping_any_one_character_breaks_the_checksum(token: str) -> None:
    """CRC-32 catches every single-character change, in the body and in the checksum."""
    for i in range(len(REFRESH_TOKEN_PREFIX), len(token)):
        for step in (1, 31, 61):
            c = BASE62[(BASE62.index(token[i]) + step) % 62]
            flipped = token[:i] + c + token[i + 1 :]
            assert not is_well_formed(flipped, REFRESH_TOKEN_PREFIX), (i, c)


# -- derive_successor -----------------------------------------------------------------------


def test_successor_is_deterministic_per_key_and_token(token: str) -> None:
    key = b"k" * 32
    first = derive_successor(key, token)
    assert derive_successor(key, token) == first
    assert is_well_formed(first, REFRESH_TOKEN_PREFIX)
    assert first != token


@pytest.mark.parametrize(
    ("key_a", "key_b"),
    [(b"k" * 32, b"K" * 32), (b"k" * 32, b"k" * 31), (b"k" * 32, b"k" * 33)],
    ids=["different-bytes", "shorter", "longer"],
)
def test_successor_differs_across_keys(token: str, key_a: bytes, key_b: bytes) -> None:
    assert derive_successor(key_a, token) != derive_successor(key_b, token)


def test_successor_differs_across_tokens() -> None:
    key = b"k" * 32
    tokens = [new_refresh_token() for _ in range(500)]
    successors = {derive_successor(key, t) for t in tokens}
    assert len(successors) == len(tokens)
    assert successors.isdisjoint(tokens)


def test_successor_chain_does_not_cycle(token: str) -> None:
    key = b"k" * 32
    chain = [token]
    for _ in range(100):
        chain.append(derive_successor(key, chain[-1]))
    assert len(set(chain)) == len(chain)


# -- hash_secret / verify_secret ------------------------------------------------------------


def test_hash_secret_is_sha256_of_utf8(token: str) -> None:
    assert hash_secret(token) == hashlib.sha256(token.encode("utf-8")).digest()
    assert len(hash_secret(token)) == 32
    assert hash_secret("é") == hashlib.sha256("é".encode()).digest()
    assert hash_secret(token) != hash_secret(token[:-1])
    assert token.encode() not in hash_secret(token)


SECRET = "tkd_cs_the-secret"


@pytest.mark.parametrize(
    ("presented", "stored", "expected"),
    [
        (SECRET, hash_secret(SECRET), True),
        (SECRET + "x", hash_secret(SECRET), False),
        (SECRET.upper(), hash_secret(SECRET), False),
        (None, hash_secret(SECRET), False),
        (SECRET, None, False),
        (None, None, False),
        (None, hash_secret(""), False),  # a missing secret never matches, not even ""
        ("", hash_secret(SECRET), False),
        (SECRET, SECRET.encode(), False),  # the plaintext is not a hash
    ],
    ids=[
        "right",
        "wrong",
        "case-differs",
        "presented-none",
        "stored-none",
        "both-none",
        "none-vs-empty-hash",
        "empty-presented",
        "stored-plaintext",
    ],
)
def test_verify_secret(presented: str | None, stored: bytes | None, expected: bool) -> None:
    assert verify_secret(presented, stored) is expected


@pytest.mark.parametrize(
    ("presented", "stored"),
    [
        (SECRET, hash_secret(SECRET)),
        ("wrong", hash_secret(SECRET)),
        (None, hash_secret(SECRET)),
        (SECRET, None),
        (None, None),
    ],
    ids=["right", "wrong", "presented-none", "stored-none", "both-none"],
)
def test_verify_secret_does_the_same_work_on_every_path(
    monkeypatch: pytest.MonkeyPatch, presented: str | None, stored: bytes | None
) -> None:
    """One hash and one constant-time comparison of two digests, whatever is None."""
    hashed: list[str] = []
    compared: list[tuple[int, int]] = []
    real_hash = secrets_mod.hash_secret
    real_compare = secrets_mod.hmac.compare_digest

    def counting_hash(value: str) -> bytes:
        hashed.append(value)
        return real_hash(value)

    def counting_compare(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(secrets_mod, "hash_secret", counting_hash)
    monkeypatch.setattr(secrets_mod.hmac, "compare_digest", counting_compare)
    verify_secret(presented, stored)
    assert len(hashed) == 1
    assert compared == [(32, 32)]


# -- client secrets and identifiers ---------------------------------------------------------


def test_client_secret_has_at_least_256_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[int] = []
    real = secrets_mod.secrets.token_bytes

    def spy(n: int) -> bytes:
        requested.append(n)
        return real(n)

    monkeypatch.setattr(secrets_mod.secrets, "token_bytes", spy)
    value = new_client_secret()
    assert requested and requested[0] * 8 >= 256
    assert value.startswith(CLIENT_SECRET_PREFIX)
    assert len(value) == len(CLIENT_SECRET_PREFIX) + BODY_LEN + CRC_LEN
    assert is_well_formed(value, CLIENT_SECRET_PREFIX)


def test_client_secrets_do_not_repeat() -> None:
    assert len({new_client_secret() for _ in range(1000)}) == 1000


def test_client_id_and_internal_ids_are_unique_and_url_safe() -> None:
    client_ids = {new_client_id() for _ in range(1000)}
    ids = {new_id() for _ in range(1000)}
    assert len(client_ids) == 1000
    assert len(ids) == 1000
    assert all(len(c) == 22 and set(c) <= set(BASE62) for c in client_ids)  # 128 bits
    urlsafe = set(string.ascii_letters + string.digits + "-_")
    assert all(len(i) >= 22 and set(i) <= urlsafe for i in ids)
