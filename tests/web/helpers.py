"""Assertions and request builders shared by the HTTP tests of tests/web."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote_plus

import httpx
from sqlalchemy import Engine, create_engine, func, select

from tests.support.postgres import free_port
from tokend.store.connections import Engines
from tokend.store.engine import create_hot_engine
from tokend.store.schema import metadata, refresh_tokens, token_families

TOKEN = "/auth/v2/token"
TOKEN_SLASH = "/auth/v2/token/"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An Authorization header as RFC 6749 §2.3.1 says: each part form-urlencoded (UTF-8),
    then ``id:secret`` in base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def raw_basic(value: bytes) -> dict[str, str]:
    """An Authorization header whose decoded credentials are exactly ``value``."""
    return {"Authorization": "Basic " + base64.b64encode(value).decode("ascii")}


def refresh(token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, **extra}


def assert_no_store(r: httpx.Response) -> None:
    assert r.headers.get("cache-control") == "no-store", r.headers
    assert r.headers.get("pragma") == "no-cache", r.headers


def assert_tokens(r: httpx.Response) -> dict[str, Any]:
    """A successful RFC 6749 §5.1 response; returns its body."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["access_token"], str)
    assert isinstance(body["expires_in"], int)
    return body


def assert_oauth_error(
    r: httpx.Response, error: str, status: int | None = None, *, leaks: tuple[str, ...] = ()
) -> dict[str, str]:
    """An RFC 6749 §5.2 error: the status for ``error``, JSON ``{error, error_description}``
    and nothing else, no-store headers, ``WWW-Authenticate: Basic`` on ``invalid_client``,
    and none of ``leaks`` (secrets, tokens, the raw input) nor a stack trace in the body."""
    if status is None:
        status = 401 if error == "invalid_client" else 400
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    body = r.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    if error == "invalid_client":
        assert r.headers["www-authenticate"].startswith("Basic"), r.headers
    for text in ("Traceback", 'File "', "sqlalchemy", "psycopg", "sqlite", *leaks):
        if text:
            assert text not in r.text, f"{text!r} leaked into {r.text!r}"
    return body


def storage_snapshot(engine: Engine) -> dict[str, object]:
    """Everything a token endpoint request could change: the row count of every table, and
    every refresh token's spent_at/successor and every family's revocation. Not the abuse
    counters: a failed authentication is counted there by design (tokend.core.throttle)."""
    with engine.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
            if t.name != "abuse_counters"
        }
        tokens = sorted(
            (bytes(h), spent, None if succ is None else bytes(succ))
            for h, spent, succ in conn.execute(
                select(
                    refresh_tokens.c.token_hash,
                    refresh_tokens.c.spent_at,
                    refresh_tokens.c.successor_hash,
                )
            )
        )
        families = sorted(
            tuple(row)
            for row in conn.execute(
                select(
                    token_families.c.id,
                    token_families.c.revoked_at,
                    token_families.c.revoked_reason,
                )
            )
        )
    return {"counts": counts, "refresh_tokens": tokens, "token_families": families}


def unreachable_engines(rt: Any, tmp_path: Any) -> Engines:
    """Engines of the runtime's backend whose database cannot be reached (on PostgreSQL the
    server's two: psycopg, and asyncpg for the endpoints' work); ``close()`` after use."""
    if rt.is_sqlite:
        return Engines(create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'tokend.db'}"))
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/tokend"
    sync = create_engine(
        url.replace("postgresql:", "postgresql+psycopg:"), connect_args={"connect_timeout": 2}
    )
    return Engines(sync, create_hot_engine(url))


# -- the UserInfo endpoint (RFC 6750 bearer errors) --------------------------------------------

USERINFO = "/auth/v2/users/retrieve"
_CHALLENGE = re.compile(
    r'Bearer error="([a-z_]+)", '
    r'error_description="([\x20\x21\x23-\x5b\x5d-\x7e]+)"(, scope="([^"]+)")?'
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_bearer_error(
    r: httpx.Response, error: str, status: int, *, leaks: tuple[str, ...] = ()
) -> dict[str, str]:
    """An RFC 6750 §3 error: the status, the JSON of assert_oauth_error, and the challenge
    ``Bearer error="...", error_description="..."`` (plus ``scope`` on insufficient_scope)
    whose values match the body's."""
    body = assert_oauth_error(r, error, status, leaks=leaks)
    m = _CHALLENGE.fullmatch(r.headers["www-authenticate"])
    assert m, r.headers["www-authenticate"]
    assert m.group(1) == error and m.group(2) == body["error_description"]
    assert (m.group(4) is not None) == (error == "insufficient_scope")
    return body


# -- revocation (RFC 7009) and introspection (RFC 7662) ---------------------------------------

REVOKE = "/auth/v2/revoke"
INTROSPECT = "/auth/v2/introspect"
INACTIVE = {"active": False}


def assert_revoked_response(r: httpx.Response) -> None:
    """RFC 7009 §2.2: 200, and nothing in the body; no-store like the token endpoint."""
    assert r.status_code == 200, r.text
    assert r.content == b""
    assert "content-type" not in r.headers
    assert_no_store(r)


def introspection(r: httpx.Response) -> dict[str, Any]:
    """A successful RFC 7662 §2.2 response; returns its body."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == JSON
    assert_no_store(r)
    body = r.json()
    assert isinstance(body.get("active"), bool), body
    if not body["active"]:
        assert body == INACTIVE  # "MUST NOT include any additional information"
    return body
