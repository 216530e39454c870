"""Cost of checking one DPoP proof (tokend.core.dpop.ProofVerifier.verify), by algorithm,
with the key cache warm (a client's usual case: the same key proof after proof) and cold
(a new key every time), plus the replay-cache INSERT on SQLite. A direct loop, no HTTP.

    .venv/bin/python bench/dpop_proofs.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.dpop import ProofKey  # noqa: E402

from tokend.core.dpop import ProofVerifier  # noqa: E402

HTU = "https://issuer.test/auth/v2/token"
NOW = 1_800_000_000.0


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm up
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    results: dict[str, float] = {}
    for alg in ("ES256", "RS256", "EdDSA"):
        key = ProofKey(alg)
        proof = key.proof(HTU, iat=NOW)
        warm = ProofVerifier()
        results[f"{alg} warm"] = per_call_us(
            lambda v=warm, p=proof: v.verify([p], htm="POST", htu=HTU, now=NOW), n
        )
        keys = [ProofKey(alg) for _ in range(min(n, 200))]
        proofs = [k.proof(HTU, iat=NOW) for k in keys]
        it = iter(range(10**9))

        def cold(proofs=proofs, it=it) -> None:  # type: ignore[no-untyped-def]
            ProofVerifier().verify([proofs[next(it) % len(proofs)]], htm="POST", htu=HTU, now=NOW)

        results[f"{alg} cold"] = per_call_us(cold, min(n, 200))

    # The replay-cache statement on SQLite, inside a transaction of its own.
    from tokend.store import SqlStore
    from tokend.store.engine import create_db_engine, migrate

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
        migrate(engine)
        store = SqlStore(engine)
        results["replay insert (own tx, SQLite)"] = per_call_us(
            lambda: store.record_dpop_proof(os.urandom(32), expires_at=NOW + 120), n
        )

        def in_tx() -> None:
            with store.transaction() as tx:
                tx.record_dpop_proof(os.urandom(32), expires_at=NOW + 120)

        def bare_tx() -> None:
            with store.transaction():
                pass

        results["empty tx (SQLite)"] = per_call_us(bare_tx, n)
        results["tx with replay insert (SQLite)"] = per_call_us(in_tx, n)
        engine.dispose()
    for name, us in results.items():
        print(json.dumps({"case": name, "us_per_call": round(us, 1)}))


if __name__ == "__main__":
    main()
