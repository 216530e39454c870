"""The signing key ring over the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.conftest import ISSUER, SECRET_KEY
from tests.support.family import first_family
from tokend.config import Settings
from tokend.core.bearer import InvalidToken
from tokend.core.clock import FrozenClock, SystemClock
from tokend.keys.material import Sealer, derive
from tokend.keys.ring import KeyRing, NoSigningKey, generate_private_key, public_jwk
from tokend.runtime import build_runtime
from tokend.store import SqlStore
from tokend.store.engine import create_db_engine, migrate

CLAIMS = {"iss": ISSUER, "sub": "s", "aud": ISSUER, "iat": 1, "exp": 2**40}


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    engine = create_db_engine(db_url)
    migrate(engine)
    yield SqlStore(engine)
    engine.dispose()


def ring(store: SqlStore, clock: FrozenClock, **kw) -> KeyRing:  # type: ignore[no-untyped-def]
    kw.setdefault("master_secret", SECRET_KEY)
    return KeyRing(store, clock=clock, **kw)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_int(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def thumbprint(public_key) -> str:  # type: ignore[no-untyped-def]
    """RFC 7638 §3, written out independently of tokend: required members only,
    lexicographic order, no whitespace, SHA-256, base64url."""
    if isinstance(public_key, rsa.RSAPublicKey):
        nums = public_key.public_numbers()
        canon = f'{{"e":"{b64u_int(nums.e)}","kty":"RSA","n":"{b64u_int(nums.n)}"}}'
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        nums = public_key.public_numbers()
        x, y = (b64u(v.to_bytes(32, "big")) for v in (nums.x, nums.y))
        canon = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    else:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        canon = f'{{"crv":"Ed25519","kty":"OKP","x":"{b64u(raw)}"}}'
    return b64u(hashlib.sha256(canon.encode()).digest())


def decode(token: str, jwks: dict, **kw) -> dict:  # type: ignore[type-arg]
    """Verify like a relying party: pick the JWKS entry by the header's kid."""
    header = jwt.get_unverified_header(token)
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    key = jwt.PyJWK(jwk)
    return jwt.decode(token, key.key, algorithms=[jwk["alg"]], options={"verify_aud": False}, **kw)


def pkcs8(private_key) -> bytes:  # type: ignore[no-untyped-def]
    return private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- creation and storage ----------------------------------------------------------------------


def test_first_ensure_creates_one_rs256_key(store: SqlStore, clock: FrozenClock) -> None:
    assert store.list_keys() == []
    r = ring(store, clock)
    [made] = r.ensure()
    assert made.alg == "RS256" and made.retired_at is None and made.created_at == clock.now()
    [stored] = store.list_keys()
    assert stored == made
    assert r.current_kid() == made.kid
    assert r.ensure() == []  # idempotent
    assert ring(store, clock).ensure() == []  # and across instances
    assert len(store.list_keys()) == 1
    key = r._current["RS256"].key
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    token = r.sign_access_token(CLAIMS)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": made.kid, "typ": "at+jwt"}
    assert decode(token, r.jwks)["sub"] == "s"


def test_private_key_is_stored_encrypted(store: SqlStore, clock: FrozenClock) -> None:
    r = ring(store, clock)
    [rec] = r.ensure()
    private = r._current["RS256"].key
    der = pkcs8(private)
    assert der not in rec.private_key
    # Not even the private exponent, in any common encoding.
    d = private.private_numbers().d
    d_bytes = d.to_bytes((d.bit_length() + 7) // 8, "big")
    assert d_bytes not in rec.private_key
    assert b64u(d_bytes).encode() not in rec.private_key
    assert b"PRIVATE KEY" not in rec.private_key
    assert "d" not in json.loads(rec.public_jwk)  # only the public half is published
    # Sealed with a key derived from the master secret, bound to the kid.
    assert Sealer(SECRET_KEY).open(rec.private_key, rec.kid.encode()) == der
    with pytest.raises(InvalidTag):
        Sealer(SECRET_KEY).open(rec.private_key, b"another-kid")
    with pytest.raises(InvalidTag):
        Sealer("another-master-secret-0123456789abcdef").open(rec.private_key, rec.kid.encode())
    # Sealing is randomised: the same key sealed twice differs.
    assert Sealer(SECRET_KEY).seal(der, b"k") != Sealer(SECRET_KEY).seal(der, b"k")


def test_ring_with_wrong_master_secret_cannot_load(store: SqlStore, clock: FrozenClock) -> None:
    ring(store, clock).ensure()
    other = ring(store, clock, master_secret="a-completely-different-secret-0123456789")
    with pytest.raises(InvalidTag):
        other.load()


def test_derived_keys_are_purpose_bound() -> None:
    assert derive(SECRET_KEY, "a") != derive(SECRET_KEY, "b")
    assert derive(SECRET_KEY, "a") == derive(SECRET_KEY, "a")
    assert derive(SECRET_KEY + "x", "a") != derive(SECRET_KEY, "a")
    assert len(derive(SECRET_KEY, "a")) == 32


# -- kid = RFC 7638 thumbprint ----------------------------------------------------------------


class _Holder:
    """Stands in for a private key: public_jwk only needs ``public_key()``."""

    def __init__(self, pub) -> None:  # type: ignore[no-untyped-def]
        self._pub = pub

    def public_key(self):  # type: ignore[no-untyped-def]
        return self._pub


RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJEC"
    "PebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvz"
    "qY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZ"
    "u0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_kid_matches_rfc7638_example() -> None:
    """RFC 7638 §3.1: this RSA key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs."""
    n = int.from_bytes(base64.urlsafe_b64decode(RFC7638_N + "=" * (-len(RFC7638_N) % 4)), "big")
    pub = rsa.RSAPublicNumbers(65537, n).public_key()
    expected = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert thumbprint(pub) == expected  # our independent helper is right
    jwk = public_jwk(_Holder(pub), "RS256")
    assert jwk["kid"] == expected
    assert (jwk["n"], jwk["e"], jwk["kty"], jwk["alg"], jwk["use"]) == (
        RFC7638_N,
        "AQAB",
        "RSA",
        "RS256",
        "sig",
    )


def test_kid_is_jwk_thumbprint(store: SqlStore, clock: FrozenClock) -> None:
    for alg in ("RS256", "ES256", "EdDSA"):
        r = ring(store, clock, access_token_alg=alg)
        r.ensure()
        key = r._current[alg].key
        assert r.current_kid(alg) == thumbprint(key.public_key())
        [jwk] = [k for k in r.jwks["keys"] if k["kid"] == r.current_kid(alg)]
        assert jwk["alg"] == alg and jwk["use"] == "sig"
        # The published JWK is that same public key.
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert jwt.PyJWK(jwk).key.public_bytes(*spki) == key.public_key().public_bytes(*spki)


# -- rotation -----------------------------------------------------------------------------------


def test_rotate_retires_previous_key(store: SqlStore, clock: FrozenClock) -> None:
    r = ring(store, clock, retention=1000)
    r.ensure()
    old_kid = r.current_kid()
    old_token = r.sign_access_token(CLAIMS)
    old_id_token = r.sign_id_token(CLAIMS)

    clock.advance(50)
    new = r.rotate("RS256")
    assert r.reload_if_changed() is True
    assert r.current_kid() == new.kid != old_kid
    by_kid = {k.kid: k for k in store.list_keys()}
    assert by_kid[old_kid].retired_at == clock.now()
    assert by_kid[new.kid].retired_at is None
    assert [k.kid for k in store.list_keys() if k.retired_at is None] == [new.kid]

    new_token = r.sign_access_token(CLAIMS)
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    assert jwt.get_unverified_header(r.sign_id_token(CLAIMS))["kid"] == new.kid
    # Both keys published, newest first; tokens signed before the rotation still verify.
    assert [k["kid"] for k in r.jwks["keys"]] == [new.kid, old_kid]
    assert json.loads(r.jwks_json) == r.jwks
    for t in (old_token, old_id_token, new_token):
        assert decode(t, r.jwks)["sub"] == "s"
    assert set(r.verification_keys()) == {new.kid, old_kid}

    # Just before the retention passes: still published.
    clock.advance(999)
    r.load()
    assert old_kid in {k["kid"] for k in r.jwks["keys"]}
    # After it: gone from the JWKS (and so from verification), the current key stays.
    clock.advance(2)
    r.load()
    assert [k["kid"] for k in r.jwks["keys"]] == [new.kid]
    with pytest.raises(ValueError):
        decode(old_token, r.jwks)


def test_retired_key_leaves_jwks_of_a_running_ring(store: SqlStore, clock: FrozenClock) -> None:
    """A long-running server only calls ``reload_if_changed``; the retired key must still
    drop out of its JWKS once the retention has passed, without another rotation."""
    r = ring(store, clock, retention=1000)
    r.ensure()
    old_kid = r.current_kid()
    r.rotate("RS256")
    r.reload_if_changed()
    assert old_kid in {k["kid"] for k in r.jwks["keys"]}
    clock.advance(500)
    r.reload_if_changed()
    assert old_kid in {k["kid"] for k in r.jwks["keys"]}
    clock.advance(501)
    r.reload_if_changed()
    assert old_kid not in {k["kid"] for k in r.jwks["keys"]}
    assert old_kid not in r.verification_keys()
    assert r.reload_if_changed() is False  # nothing left to expire, nothing changed


def test_rotate_retires_only_same_alg(store: SqlStore, clock: FrozenClock) -> None:
    r = ring(store, clock, access_token_alg="ES256")
    made = r.ensure()
    assert sorted(m.alg for m in made) == ["ES256", "RS256"]
    rs_kid, es_kid = r.current_kid("RS256"), r.current_kid("ES256")
    clock.advance(1)
    new_es = r.rotate("ES256")
    r.reload_if_changed()
    assert r.current_kid("RS256") == rs_kid
    assert r.current_kid("ES256") == new_es.kid != es_kid
    active = {k.alg: k.kid for k in store.list_keys() if k.retired_at is None}
    assert active == {"RS256": rs_kid, "ES256": new_es.kid}


def test_unsupported_alg(store: SqlStore, clock: FrozenClock) -> None:
    with pytest.raises(ValueError):
        ring(store, clock, access_token_alg="HS256")
    with pytest.raises(ValueError):
        ring(store, clock).rotate("none")
    assert store.list_keys() == []


# -- algorithms -----------------------------------------------------------------------------------


KEY_TYPES = {
    "RS256": rsa.RSAPrivateKey,
    "PS256": rsa.RSAPrivateKey,
    "ES256": ec.EllipticCurvePrivateKey,
    "EdDSA": ed25519.Ed25519PrivateKey,
}


def test_access_token_alg(store: SqlStore, clock: FrozenClock) -> None:
    for alg, key_type in KEY_TYPES.items():
        r = ring(store, clock, access_token_alg=alg)
        r.ensure()
        assert isinstance(r._current[alg].key, key_type)
        at = r.sign_access_token(CLAIMS)
        assert jwt.get_unverified_header(at) == {
            "alg": alg,
            "kid": r.current_kid(),
            "typ": "at+jwt",
        }
        assert decode(at, r.jwks)["sub"] == "s"
        idt = r.sign_id_token(CLAIMS)
        assert jwt.get_unverified_header(idt) == {
            "alg": "RS256",
            "kid": r.current_kid("RS256"),
            "typ": "JWT",
        }
        assert decode(idt, r.jwks)["sub"] == "s"
        if alg != "RS256":
            # A token is bound to its key: an RS256 signature under this kid fails.
            forged = jwt.encode(
                CLAIMS,
                r._current["RS256"].key,
                algorithm="RS256",
                headers={"kid": r.current_kid(alg)},
            )
            with pytest.raises(jwt.InvalidTokenError):
                decode(forged, r.jwks)
    # One RS256 key shared by all the rings, one key per other algorithm.
    assert sorted(k.alg for k in store.list_keys()) == ["ES256", "EdDSA", "PS256", "RS256"]


def test_signing_alg_setting_end_to_end(db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """TOKEND_SIGNING_ALG selects the access-token algorithm; ID tokens stay RS256."""
    clock = FrozenClock(time.time())  # tokens are verified against the real time
    for alg in ("ES256", "EdDSA"):
        monkeypatch.setenv("TOKEND_SIGNING_ALG", alg)
        settings = Settings(database_url=db_url, secret_key=SECRET_KEY, issuer=ISSUER)
        assert settings.signing_alg == alg
        rt = build_runtime(settings, clock=clock, prepare=True)
        try:
            assert rt.keys.access_token_alg == alg
            family = first_family(
                rt, name="c", public=True, client_scopes="openid", scopes="openid"
            )
            client, u, resp = family.client, family.user, family.first
            assert jwt.get_unverified_header(resp.access_token)["alg"] == alg
            assert jwt.get_unverified_header(resp.id_token)["alg"] == "RS256"
            claims = decode(resp.access_token, rt.keys.jwks, issuer=ISSUER)
            assert claims["sub"] == u.id and claims["client_id"] == client.client_id
            id_claims = decode(resp.id_token, rt.keys.jwks, issuer=ISSUER)
            assert id_claims["aud"] == client.client_id
            assert {"RS256", alg} <= {k["alg"] for k in rt.keys.jwks["keys"]}
        finally:
            rt.close()


# -- several processes ---------------------------------------------------------------------------


def test_second_ring_picks_up_rotation(db_url: str, store: SqlStore, clock: FrozenClock) -> None:
    r1 = ring(store, clock)
    r1.ensure()
    other_store = SqlStore(create_db_engine(db_url))  # another process: its own engine
    try:
        r2 = ring(other_store, clock)
        r2.load()
        assert r2.current_kid() == r1.current_kid()
        assert r2.reload_if_changed() is False
        old_kid = r1.current_kid()

        new = r1.rotate("RS256")
        assert r2.current_kid() == old_kid  # not yet
        assert r2.reload_if_changed() is True
        assert r2.current_kid() == new.kid
        assert {k["kid"] for k in r2.jwks["keys"]} == {new.kid, old_kid}
        assert r2.reload_if_changed() is False
        token = r2.sign_access_token(CLAIMS)
        r1.reload_if_changed()
        assert decode(token, r1.jwks)["sub"] == "s"

        # Even two rotations at the same instant are noticed.
        r1.rotate("RS256")
        newest = r1.rotate("RS256")
        assert r2.reload_if_changed() is True
        assert r2.current_kid() == newest.kid
    finally:
        other_store.engine.dispose()


def test_a_key_per_algorithm_on_first_need_one_winner_across_processes(db_url: str) -> None:
    """Runtimes on one database (separate processes: each its own engine) that all need a
    PS256 key at once, for a client registered with it: exactly one key is stored, every
    ring signs with that one, and a token one ring signs verifies at the others at once."""
    n = 4
    stores = [SqlStore(create_db_engine(db_url)) for _ in range(n)]
    rings = [KeyRing(s, master_secret=SECRET_KEY, clock=SystemClock()) for s in stores]
    rings[0].ensure()
    for r in rings[1:]:
        r.load()
    barrier = threading.Barrier(n)
    tokens: list[str] = []
    errors: list[BaseException] = []

    def sign(r: KeyRing) -> None:
        try:
            barrier.wait()
            tokens.append(r.sign_access_token(CLAIMS, "PS256"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sign, args=(r,)) for r in rings]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        [ps] = [k for k in stores[0].list_keys() if k.alg == "PS256"]
        assert ps.retired_at is None
        assert {jwt.get_unverified_header(t)["kid"] for t in tokens} == {ps.kid}
        assert sorted(r.current_kid("PS256") for r in rings) == [ps.kid] * n
        # A ring that has not seen a new key yet finds it by its kid (one reload).
        late = KeyRing(stores[1], master_secret=SECRET_KEY, clock=SystemClock())
        late.load()
        es = rings[0].sign_access_token(CLAIMS, "ES256")  # made now, by rings[0]
        assert late.verify(es)[1] == CLAIMS
        with pytest.raises(InvalidToken):  # a made-up kid: refused
            late.verify(_relabel(es, kid="no-such-kid"))
    finally:
        for s in stores:
            s.engine.dispose()


def test_ensure_makes_the_clients_algorithms_and_rotate_one_of_them(
    store: SqlStore, clock: FrozenClock
) -> None:
    r = ring(store, clock)
    made = r.ensure(("PS256", "EdDSA"))
    assert sorted(m.alg for m in made) == ["EdDSA", "PS256", "RS256"]
    assert r.ensure(("PS256", "EdDSA")) == []
    with pytest.raises(ValueError):
        r.ensure(("HS256",))
    with pytest.raises(NoSigningKey):
        r.sign_id_token(CLAIMS, "none")
    before = {alg: r.current_kid(alg) for alg in ("RS256", "PS256", "EdDSA")}
    clock.advance(1)
    new = r.rotate("PS256")
    r.reload_if_changed()
    assert r.current_kid("PS256") == new.kid != before["PS256"]
    assert r.current_kid("RS256") == before["RS256"]
    assert r.current_kid("EdDSA") == before["EdDSA"]
    assert {before["PS256"], new.kid} <= {k["kid"] for k in r.jwks["keys"]}


def _relabel(token: str, **header: str) -> str:
    h, rest = token.split(".", 1)
    decoded = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    return b64u(json.dumps({**decoded, **header}).encode()) + "." + rest


def test_delete_keys_retired_before(store: SqlStore, clock: FrozenClock) -> None:
    r = ring(store, clock, retention=100)
    r.ensure()
    old = r.current_kid()
    clock.advance(10)
    r.rotate("RS256")
    assert store.delete_keys_retired_before(clock.now() - 100) == 0
    clock.advance(200)
    assert store.delete_keys_retired_before(clock.now() - 100) == 1
    assert old not in {k.kid for k in store.list_keys()}
    assert len(store.list_keys()) == 1
    assert r.reload_if_changed() is True
    assert [k["kid"] for k in r.jwks["keys"]] == [r.current_kid()]


def test_concurrent_first_start_leaves_one_current_key(db_url: str, store: SqlStore) -> None:
    """Many processes starting at once on a fresh database (``tokend serve`` on several
    machines) each run ``ensure``: afterwards exactly one key per algorithm is current."""
    n = 6
    stores = [SqlStore(create_db_engine(db_url)) for _ in range(n)]
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def start(s: SqlStore) -> None:
        try:
            r = KeyRing(s, master_secret=SECRET_KEY, clock=SystemClock())
            barrier.wait()
            r.ensure()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.engine.dispose()
    assert errors == []
    current = [k for k in store.list_keys() if k.retired_at is None]
    assert [k.alg for k in current] == ["RS256"]


# -- verifying our own tokens (tokend.core.bearer.TokenVerifier) ---------------------------------


def test_verification_keys_are_built_once_per_load(store: SqlStore, clock: FrozenClock) -> None:
    r = ring(store, clock)
    r.ensure()
    keys = r.verification_keys()
    assert r.verification_keys() is keys  # no per-request work
    assert set(keys) == {k["kid"] for k in r.jwks["keys"]}
    assert all(isinstance(k, jwt.PyJWK) for k in keys.values())
    with pytest.raises(TypeError):
        keys["x"] = keys[r.current_kid()]  # type: ignore[index]  # read-only
    old = r.current_kid()
    r.rotate("RS256")
    r.load()
    assert r.verification_keys() is not keys
    assert set(r.verification_keys()) == {old, r.current_kid()}  # the retired key verifies


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_verify_own_tokens(store: SqlStore, clock: FrozenClock, alg: str) -> None:
    r = ring(store, clock, access_token_alg=alg)
    r.ensure()
    for token, typ in ((r.sign_access_token(CLAIMS), "at+jwt"), (r.sign_id_token(CLAIMS), "JWT")):
        header, claims = r.verify(token)
        assert claims == CLAIMS
        assert header["typ"] == typ and header["kid"] in r.verification_keys()


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_tokens_are_what_pyjwt_makes_and_verifies(
    store: SqlStore, clock: FrozenClock, alg: str
) -> None:
    """The ring serialises the JWS itself around PyJWT's signing algorithm: the result must
    verify with ``jwt.decode`` under the published key, and for RS256 (deterministic
    signatures) be byte for byte what ``jwt.encode`` makes."""
    r = ring(store, clock, access_token_alg=alg)
    r.ensure()
    claims = {**CLAIMS, "cnf": {"jkt": "abc"}, "scope": "openid offline"}
    token = r.sign_access_token(claims)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": r.current_kid(), "typ": "at+jwt"}
    key = r.verification_keys()[header["kid"]]
    decoded = jwt.decode(
        token, key.key, algorithms=[alg], options={"verify_aud": False, "verify_exp": False}
    )
    assert decoded == claims
    if alg == "RS256":
        signing_key = r._key("RS256")
        expected = jwt.encode(
            claims,
            signing_key.key,
            algorithm="RS256",
            headers={"kid": header["kid"], "typ": "at+jwt"},
        )
        assert token == expected
    # Two tokens with two typs: each header is its own.
    id_header = jwt.get_unverified_header(r.sign_id_token(CLAIMS))
    assert id_header["typ"] == "JWT" and id_header["alg"] == "RS256"


def test_verify_refuses_a_token_over_the_length_limit_before_decoding_it(
    store: SqlStore, clock: FrozenClock
) -> None:
    """Issue 10 §3: an access token arrives before anyone is authenticated; one validly
    signed but longer than ``MAX_TOKEN_LENGTH`` is refused before it is matched or decoded."""
    from tokend.keys.ring import MAX_TOKEN_LENGTH

    r = ring(store, clock, access_token_alg="ES256")
    r.ensure()
    fits = r.sign_access_token({**CLAIMS, "pad": "a" * (MAX_TOKEN_LENGTH // 2)})
    assert r.verify(fits)[1]["pad"]
    too_long = r.sign_access_token({**CLAIMS, "pad": "a" * MAX_TOKEN_LENGTH})
    with pytest.raises(InvalidToken):
        r.verify(too_long)


def _segments(header: dict, claims: dict) -> str:  # type: ignore[type-arg]
    return b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())


def test_verify_refuses_everything_else(store: SqlStore, clock: FrozenClock) -> None:
    r = ring(store, clock, access_token_alg="ES256")
    r.ensure()
    good = r.sign_access_token(CLAIMS)
    header = jwt.get_unverified_header(good)
    head, payload, sig = good.split(".")
    our_key = r._current["ES256"].key
    foreign = generate_private_key("ES256")

    def signed(jws_header: object, body: bytes = json.dumps(CLAIMS).encode()) -> str:
        """Validly signed by our ES256 key, whatever the header and payload say."""
        signing_input = b64u(json.dumps(jws_header).encode()) + "." + b64u(body)
        es256 = jwt.get_algorithm_by_name("ES256")
        return signing_input + "." + b64u(es256.sign(signing_input.encode(), our_key))

    assert r.verify(signed(header))[1] == CLAIMS  # the helper signs right
    pem = r.verification_keys()[header["kid"]].key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = _segments({**header, "alg": "HS256"}, CLAIMS)
    hs_sig = b64u(hmac.new(pem, hs_input.encode(), hashlib.sha256).digest())
    # ES256 signatures are 64 bytes: 86 base64url digits, the last one with 4 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = alphabet[alphabet.index(sig[-1]) ^ 1]
    assert base64.urlsafe_b64decode(sig[:-1] + stray + "==") == base64.urlsafe_b64decode(sig + "==")
    bad = {
        # Validly signed, but the header or payload is wrong.
        "header-alg-none": signed({**header, "alg": "none"}),
        "header-alg-hs256": signed({**header, "alg": "HS256"}),
        "header-alg-es384": signed({**header, "alg": "ES384"}),
        "header-without-alg": signed({k: v for k, v in header.items() if k != "alg"}),
        "header-not-an-object": signed([header]),
        "crit": signed({**header, "crit": ["x"], "x": 1}),  # RFC 7515 §4.1.11
        "payload-not-an-object": signed(header, b"[1]"),
        "payload-not-json": signed(header, b"{"),
        # Not validly signed by the key the header names.
        "alg-none": _segments({**header, "alg": "none"}, CLAIMS) + ".",
        "hs256-with-public-key": hs_input + "." + hs_sig,
        "foreign-key-our-kid": jwt.encode(CLAIMS, foreign, "ES256", headers=header),
        # Our RS256 key's kid on an ES256 signature: the key's own alg is the only one.
        "other-alg-for-kid": jwt.encode(
            CLAIMS, foreign, "ES256", headers={"kid": r.current_kid("RS256")}
        ),
        "unknown-kid": jwt.encode(CLAIMS, foreign, "ES256", headers={"kid": "nope"}),
        "no-kid": _segments({"alg": "ES256", "typ": "at+jwt"}, CLAIMS) + "." + sig,
        "tampered": head + "." + b64u(json.dumps({**CLAIMS, "sub": "x"}).encode()) + "." + sig,
        # Not a compact JWS in canonical base64url.
        "non-canonical-base64url": f"{head}.{payload}.{sig[:-1]}{stray}",
        "padded": good + "==",
        "non-ascii": good + "\u00e9",
        "four-segments": good + ".abc",
        "not-a-jwt": "abc",
        "empty": "",
    }
    accepted = []
    for name, token in bad.items():
        try:
            r.verify(token)
        except InvalidToken:
            continue
        accepted.append(name)
    assert accepted == []
