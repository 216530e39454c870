"""The minimal probe of issue 6: what a refresh costs on this stack with nothing but the
essential work, to compare tokend against.

uvicorn (x2 workers, uvloop, httptools), Starlette, one POST route that

1. parses the form body (``refresh_token=...``; every other field is ignored),
2. on the worker's own stdlib sqlite3 connection (WAL, ``synchronous=NORMAL``, a busy
   timeout), in one ``BEGIN IMMEDIATE`` transaction: UPDATEs the presented token's row as
   used, compare-and-set (``WHERE token = ? AND used_at IS NULL``; no row changed is a 400),
   and INSERTs a fresh random token,
3. signs one RS256 JWT (PyJWT; the key is loaded once per worker from a PEM file that both
   workers share),
4. answers ``{access_token, token_type, expires_in, refresh_token}``.

No client authentication, no validation, no hashing of tokens, no families: the floor. It
speaks the refresh grant's wire format, so bench/refresh.lua chains it unchanged.

Env: PROBE_DB (the SQLite file), PROBE_KEY (the PEM private key). Both are made, and the DB
seeded with one token per connection, by ``init``/``seed`` below (bench/run.py --probe).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCHEMA = """CREATE TABLE IF NOT EXISTS refresh_tokens (
    token TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    used_at REAL
)"""
ISSUER = "http://probe.test"
TTL = 3600
HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
INVALID = b'{"error":"invalid_grant"}'

_state: dict[str, Any] = {}


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def init(db_path: Path, key_path: Path) -> None:
    """Create the table and the RSA-2048 signing key (once, before the workers start)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    db = connect(db_path)
    db.execute(SCHEMA)
    db.close()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def seed(db_path: Path, count: int) -> list[str]:
    """``count`` fresh unused tokens (one per wrk connection)."""
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    db = connect(db_path)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO refresh_tokens (token, created_at) VALUES (?, ?)",
        [(t, time.time()) for t in tokens],
    )
    db.execute("COMMIT")
    db.close()
    return tokens


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    from cryptography.hazmat.primitives import serialization

    _state["db"] = connect(os.environ["PROBE_DB"])
    _state["key"] = serialization.load_pem_private_key(
        Path(os.environ["PROBE_KEY"]).read_bytes(), password=None
    )
    yield
    _state["db"].close()


async def token(request: Request) -> Response:
    params = dict(parse_qsl((await request.body()).decode("latin-1")))
    presented = params.get("refresh_token", "")
    db: sqlite3.Connection = _state["db"]
    now = time.time()
    fresh = secrets.token_urlsafe(32)
    db.execute("BEGIN IMMEDIATE")
    try:
        used = db.execute(
            "UPDATE refresh_tokens SET used_at = ? WHERE token = ? AND used_at IS NULL",
            (now, presented),
        ).rowcount
        if used != 1:
            db.execute("ROLLBACK")
            return Response(INVALID, 400, HEADERS, "application/json")
        db.execute("INSERT INTO refresh_tokens (token, created_at) VALUES (?, ?)", (fresh, now))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    iat = int(now)
    access = jwt.encode(
        {
            "iss": ISSUER,
            "sub": "probe-user",
            "aud": ISSUER,
            "client_id": "probe",
            "scope": "offline",
            "iat": iat,
            "exp": iat + TTL,
            "jti": uuid.uuid4().hex,
        },
        _state["key"],
        algorithm="RS256",
        headers={"kid": "probe", "typ": "at+jwt"},
    )
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": TTL,
        "refresh_token": fresh,
    }
    out = json.dumps(body, separators=(",", ":")).encode()
    return Response(out, 200, HEADERS, "application/json")


app = Starlette(routes=[Route("/auth/v2/token", token, methods=["POST"])], lifespan=lifespan)
