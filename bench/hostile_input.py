"""What one unauthenticated request can make the server spend (issue 10 §3): hostile inputs
against their normal counterparts, measured in-process (no socket, so the numbers are the
server's own work).

- ``authorize``: ``GET /auth/v2/authorize`` through the ASGI app, a normal request against
  one with 5,000 distinct scope values (refused or not, the work is what counts);
- ``dpop``: checking a DPoP proof whose RSA key has a modulus-sized public exponent, against
  a normal RS256 proof with a new key (the key cache cold either way).

    .venv/bin/python bench/hostile_input.py [--n 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from tests.support.dpop import ProofKey, b64, compact  # noqa: E402

HTU = "https://issuer.test/auth/v2/token"
NOW = 1_800_000_000.0


def median_ms(fn: Callable[[], object], n: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def hostile_rsa_proof(bits: int = 2048) -> str:
    """An RS256 proof whose jwk has e = n - 2 (odd, < n: a well-formed RSA public key) and
    a signature the size of the modulus: verifying it is one ``bits``-bit exponentiation
    with a ``bits``-bit exponent. Beyond 2048 bits, n is any odd number (nobody checks that
    a public modulus has two prime factors); 3,072 bits is the most that pays, as OpenSSL
    refuses an exponent over 64 bits with a larger modulus."""
    if bits == 2048:
        n = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    else:
        n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    e = n - 2
    size = (n.bit_length() + 7) // 8
    jwk = {
        "kty": "RSA",
        "n": b64(n.to_bytes(size, "big")),
        "e": b64(e.to_bytes(size, "big")),
    }
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    payload = {"jti": "x", "htm": "POST", "htu": HTU, "iat": int(NOW)}
    signature = (n // 3).to_bytes(size, "big")
    return compact(header, payload, lambda _: signature)


def bench_dpop(n: int) -> dict[str, float]:
    from tokend.core.dpop import ProofVerifier
    from tokend.core.errors import InvalidDPoPProof

    normal = [ProofKey("RS256").proof(HTU, iat=NOW) for _ in range(n + 1)]
    normal_it = iter(normal)
    hostile = hostile_rsa_proof()
    huge = hostile_rsa_proof(3072)

    def check(proof: str) -> None:
        with contextlib.suppress(InvalidDPoPProof):
            ProofVerifier().verify([proof], htm="POST", htu=HTU, now=NOW)

    return {
        "dpop RS256 proof, new key (ms)": median_ms(lambda: check(next(normal_it)), n),
        "dpop RS256 proof, e = n - 2 (ms)": median_ms(lambda: check(hostile), n),
        "dpop RS256 proof, 3,072-bit n, e = n - 2 (ms)": median_ms(lambda: check(huge), 3),
    }


def bench_authorize(n: int) -> dict[str, float]:
    from starlette.testclient import TestClient

    from tokend.config import Settings
    from tokend.core.models import Client
    from tokend.core.secrets import new_client_id
    from tokend.runtime import build_runtime
    from tokend.web.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/bench.db",
            secret_key="bench-secret-key-0123456789-abcdefghijklmnop",
            issuer="https://issuer.test",
        )
        rt = build_runtime(settings, prepare=True)
        client = Client(
            client_id=new_client_id(),
            name="bench",
            public=True,
            secret_hash=None,
            grant_types=frozenset({"authorization_code", "refresh_token"}),
            redirect_uris=("https://app.example/cb",),
            scopes=("openid", "offline"),
        )
        rt.store.create_client(client, now=rt.clock.now())
        base = (
            f"/auth/v2/authorize?response_type=code&client_id={client.client_id}"
            "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=s"
            "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
            "&code_challenge_method=S256&scope="
        )
        normal = base + "openid+offline"
        hostile = base + "openid+" + "+".join(f"s{i}" for i in range(5000))
        with TestClient(create_app(settings, runtime=rt), base_url=settings.issuer) as http:
            http.follow_redirects = False
            out = {
                "authorize, normal request (ms)": median_ms(lambda: http.get(normal), n),
                "authorize, 5,000 scope values (ms)": median_ms(lambda: http.get(hostile), n),
            }
        rt.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    n = parser.parse_args().n
    for name, ms in {**bench_authorize(n), **bench_dpop(n)}.items():
        print(json.dumps({"case": name, "median_ms": round(ms, 3)}))


if __name__ == "__main__":
    main()
