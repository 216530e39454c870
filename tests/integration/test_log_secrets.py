"""A real `tokend serve --workers 2` with ``TOKEND_LOG_FORMAT=json``, ``TOKEND_LOG_LEVEL=debug``
and ``--access-log``, through a whole run: sign-in on the pages, code exchange with PKCE,
refresh, reuse detection, UserInfo (also with the token in the query, as a careless client
would), introspection, a DPoP-bound token, revocation, a code replay and a wrong client
secret. Every line it wrote (stdout and stderr, both workers and the supervisor) is one JSON
object with the fields of tokend.logs, a request's lines carry its id, and no secret the run
made appears in any line, not even its first or last 16 characters.

Without the access log's query cut (tokend.logs.AccessPath) the ``state`` and the access
token sent in a query would be in the access log: this test fails so."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tests.support.dpop import ProofKey
from tests.support.family import cheap_password_hash, register_client, register_user
from tests.support.server import running_server
from tests.web.helpers import basic, bearer, refresh
from tests.web.test_pages import Browser, Page, Party, authorize_url
from tokend.config import Settings
from tokend.runtime import build_runtime

pytestmark = pytest.mark.timeout(120)

TOKEN = "/auth/v2/token"
FIELDS = {"time", "level", "logger", "message"}


def test_a_full_run_writes_json_lines_and_no_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tokend.db'}"
    secret_key = secrets.token_urlsafe(48)
    rt = build_runtime(Settings(database_url=url, secret_key=secret_key), prepare=True)
    password = "pw-" + secrets.token_urlsafe(24)
    reg = register_client(rt, scopes="openid offline email")
    user = register_user(rt, password_hash=cheap_password_hash(password))
    rt.close()
    assert reg.secret is not None
    party = Party(reg.client, reg.secret, user, password)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = "st-" + secrets.token_urlsafe(24)
    wrong = "wrong-" + secrets.token_urlsafe(32)
    made: dict[str, str] = {
        "secret key": secret_key,
        "client secret": reg.secret,
        "password": password,
        "code verifier": verifier,
        "state": state,
        "wrong secret": wrong,
    }
    env = {
        "TOKEND_SECRET_KEY": secret_key,
        "TOKEND_LOG_FORMAT": "json",
        "TOKEND_LOG_LEVEL": "debug",
        "TOKEND_REFRESH_REUSE_GRACE": "0",  # a second use is reuse at once
    }
    output = tmp_path / "serve.log"
    with (
        running_server(url, workers=2, env=env, args=["--access-log"], output=output) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        auth = basic(*reg.basic)

        def call(rid: str, method: str, path: str, **kwargs: object) -> httpx.Response:
            headers = {**kwargs.pop("headers", {}), "X-Request-Id": rid}  # type: ignore[dict-item]
            r = http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            assert r.headers["x-request-id"] == rid
            return r

        # Sign in and consent on the pages.
        browser = Browser(http)  # type: ignore[arg-type]
        query = {"code_challenge": challenge.decode().rstrip("="), "code_challenge_method": "S256"}
        code = browser.grant(party, authorize_url(party, state=state, **query))["code"]
        made["code"] = code
        for name, value in http.cookies.items():
            made[f"cookie {name}"] = value
        for html in browser.html:
            for form in Page(html).forms:
                if "csrf_token" in form.hidden:
                    made["csrf token"] = form.hidden["csrf_token"]
        assert {"cookie tokend_session", "cookie tokend_csrf", "csrf token"} <= set(made)
        # The code, exchanged; its tokens refreshed.
        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": reg.client.redirect_uris[0],
            "code_verifier": verifier,
        }
        first = call("scan-exchange", "POST", TOKEN, data=exchange, headers=auth).json()
        second = call("scan-refresh", "POST", TOKEN, data=refresh(first["refresh_token"]),
                      headers=auth).json()  # fmt: skip
        for name, tokens in (("first", first), ("second", second)):
            for kind in ("access_token", "refresh_token", "id_token"):
                made[f"{name} {kind}"] = tokens[kind]
        access = second["access_token"]
        assert call("scan-userinfo", "GET", "/auth/v2/users/retrieve",
                    headers=bearer(access)).status_code == 200  # fmt: skip
        call("scan-query", "GET", f"/auth/v2/users/retrieve?access_token={access}")
        for token in (access, second["refresh_token"]):
            r = call("scan-introspect", "POST", "/auth/v2/introspect", data={"token": token},
                     headers=auth)  # fmt: skip
            assert r.json()["active"] is True
        # A DPoP-bound token from client credentials.
        key = ProofKey()
        proof = key.proof(base + TOKEN, iat=time.time())
        made["dpop proof"] = proof
        bound = call("scan-dpop", "POST", TOKEN, data={"grant_type": "client_credentials"},
                     headers={**auth, "DPoP": proof}).json()  # fmt: skip
        assert bound["token_type"] == "DPoP"
        made["dpop access token"] = bound["access_token"]
        # Reuse of the first refresh token: the family is revoked.
        r = call("scan-reuse", "POST", TOKEN, data=refresh(first["refresh_token"]), headers=auth)
        assert r.json()["error"] == "invalid_grant"
        r = call("scan-revoke", "POST", "/auth/v2/revoke",
                 data={"token": second["refresh_token"]}, headers=auth)  # fmt: skip
        assert r.status_code == 200
        r = call("scan-replay", "POST", TOKEN, data=exchange, headers=auth)
        assert r.json()["error"] == "invalid_grant"
        r = call("scan-wrong", "POST", TOKEN, data={"grant_type": "client_credentials"},
                 headers=basic(reg.client_id, wrong))  # fmt: skip
        assert r.status_code == 401
        forged = call("scan-forged", "GET", "/healthz")  # a well-formed id is kept
        assert forged.status_code == 200
        r = http.get("/healthz", headers={"X-Request-Id": 'x" {"level":"critical"}'})
        assert len(r.headers["x-request-id"]) == 32

    text = output.read_text()
    leaks = [
        (name, piece)
        for name, value in made.items()
        for piece in {value, value[:16], value[-16:]}
        if piece in text
    ]
    assert not leaks, leaks
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert lines and all(isinstance(line, dict) and set(line) >= FIELDS for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)
    by_request: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_request.setdefault(str(line.get("request_id")), []).append(line)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert all("request_id" in line and "?" not in line["http"]["path"] for line in access)
    # Each request's access line, and what tokend logged while answering it, carry its id.
    for rid in ("scan-reuse", "scan-replay"):
        loggers = {line["logger"] for line in by_request[rid]}
        assert {"uvicorn.access", "tokend.security"} <= loggers, (rid, by_request[rid])
    assert any(line["logger"] == "tokend.serve" and "serving" in line["message"] for line in lines)
    # Both workers (spawned processes) configured themselves from uvicorn's log_config.
    started = [line for line in lines if line["message"].startswith("Started server process")]
    assert len(started) == 2, started
