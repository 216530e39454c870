"""The direct token route (web/app.py ``_TokendApp``) answers byte for byte as the router does.

Two apps on two copies of one SQLite database, with the same frozen clock and the same
random bytes for each request: one serves the token endpoint on its direct route, the other
has the direct route removed, so that every request goes through Starlette's middleware and
router. The same requests go to both in lockstep (every grant, every error code, the DPoP
nonce challenge, 429 with Retry-After, form and JSON bodies, the trailing slash, other
methods, failures of the storage) and the answers must be equal: status, every header in
order (there is no Date header in-process) and body. And a middleware added to the app stops
it from starting, since the direct route would skip it.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import ISSUER, SECRET_KEY, RegisteredClient
from tests.core.world import CHALLENGE, REDIRECT_URI, VERIFIER
from tests.support.dpop import ProofKey
from tests.web.helpers import JSON, TOKEN, TOKEN_SLASH, basic, refresh
from tokend.config import Settings
from tokend.core.authorization import validate
from tokend.core.clock import FrozenClock
from tokend.core.errors import TemporarilyUnavailable
from tokend.core.models import Client, User
from tokend.core.secrets import hash_secret, new_client_id, new_client_secret, new_id
from tokend.runtime import Runtime, build_runtime
from tokend.web.app import create_app

LIMIT = 3  # failed client authentications before 429


class CountingStack:
    """Wraps an app's middleware stack: how many HTTP requests went through it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@dataclass
class Setup:
    conf: RegisteredClient
    public: RegisteredClient
    nonce: RegisteredClient  # requires DPoP nonces
    no_refresh: RegisteredClient
    tokens: dict[str, str]  # refresh tokens by name
    codes: dict[str, str]  # authorization codes by name


def _settings(path: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{path}",
        secret_key=SECRET_KEY,
        issuer=ISSUER,
        client_auth_failure_limit=LIMIT,
        client_auth_address_failure_limit=20,
        throttle_window=900,
    )


def _client(rt: Runtime, *, public: bool = False, **overrides: Any) -> RegisteredClient:
    secret = None if public else new_client_secret()
    grants = overrides.pop("grant_types", ("authorization_code", "refresh_token"))
    client = Client(
        client_id=new_client_id(),
        name="twin",
        public=public,
        secret_hash=None if secret is None else hash_secret(secret),
        grant_types=frozenset(grants if public else (*grants, "client_credentials")),
        redirect_uris=(REDIRECT_URI,),
        scopes=("openid", "offline", "email"),
        **overrides,
    )
    rt.store.create_client(client, now=rt.clock.now())
    return RegisteredClient(client, secret)


def _code(rt: Runtime, reg: RegisteredClient, user: User) -> str:
    query = [
        ("response_type", "code"),
        ("client_id", reg.client_id),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid offline"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    t = rt.clock.now()
    subject = rt.subjects.subject(reg.client, user.id)
    return rt.codes.issue(
        validate(query, rt.store.get_client), user_id=user.id, subject=subject, auth_time=t, now=t
    )


def _populate(rt: Runtime) -> Setup:
    user = User(id=new_id(), username="alice", password_hash="$argon2id$unused")
    rt.store.create_user(user, now=rt.clock.now())
    setup = Setup(
        conf=_client(rt),
        public=_client(rt, public=True),
        nonce=_client(rt, public=True, dpop_nonce_required=True),
        no_refresh=_client(rt, grant_types=("authorization_code",)),
        tokens={},
        codes={},
    )
    for name, reg in [("conf", setup.conf), ("public", setup.public), ("nonce", setup.nonce)]:
        family = rt.issuer.issue(
            client=reg.client,
            user_id=user.id,
            subject=rt.subjects.subject(reg.client, user.id),
            scopes=("openid", "offline"),
            now=rt.clock.now(),
        )
        assert family.refresh_token is not None
        setup.tokens[name] = family.refresh_token
    setup.codes["public"] = _code(rt, setup.public, user)
    setup.codes["conf"] = _code(rt, setup.conf, user)
    return setup


class Twins:
    """The same requests to both apps; their answers, compared."""

    def __init__(self, direct: TestClient, routed: TestClient, runtimes: list[Runtime]) -> None:
        self.direct = direct
        self.routed = routed
        self.runtimes = runtimes
        self.stacks = [CountingStack(c.app.middleware_stack) for c in (direct, routed)]  # type: ignore[attr-defined]
        for client, stack in zip((direct, routed), self.stacks, strict=True):
            client.app.middleware_stack = stack  # type: ignore[attr-defined]
        self._seed = 0

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._seed += 1
        answers = []
        for client in (self.direct, self.routed):
            _SEED[0] = self._seed  # the same "random" bytes for the same request
            answers.append(client.request(method, path, **kwargs))
        direct, routed = answers
        assert direct.status_code == routed.status_code, (direct.text, routed.text)
        assert _raw_headers(direct) == _raw_headers(routed)
        # The request id (tokend.logs) on both: the same, made of the same "random" bytes.
        assert len(direct.headers["x-request-id"]) == 32
        assert direct.content == routed.content
        return direct


_SEED = [0]
_random = random.Random()


def _token_bytes(nbytes: int | None = None) -> bytes:
    _random.seed(_SEED[0])
    _SEED[0] += 1_000_003
    return _random.randbytes(32 if nbytes is None else nbytes)


def _raw_headers(r: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in r.headers.raw if k.lower() != b"date"]


@pytest.fixture
def twins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Twins, Setup]]:
    first = build_runtime(_settings(str(tmp_path / "a.db")), clock=FrozenClock(), prepare=True)
    setup = _populate(first)
    first.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")  # the same keys, clients and tokens
    monkeypatch.setattr(secrets, "token_bytes", _token_bytes)
    runtimes = [
        build_runtime(_settings(str(tmp_path / name)), clock=FrozenClock())
        for name in ("a.db", "b.db")
    ]
    apps = [create_app(rt.settings, runtime=rt) for rt in runtimes]
    apps[1].direct_routes.clear()  # type: ignore[attr-defined]
    with (
        TestClient(apps[0], base_url=ISSUER, raise_server_exceptions=False) as direct,
        TestClient(apps[1], base_url=ISSUER, raise_server_exceptions=False) as routed,
    ):
        yield Twins(direct, routed, runtimes), setup


def test_the_direct_route_answers_as_the_router_does(twins, monkeypatch) -> None:
    both, s = twins
    conf = basic(*s.conf.basic)

    # Every grant, both paths, both body types, every client authentication method.
    r = both.send("POST", TOKEN, data=refresh(s.tokens["conf"]), headers=conf)
    assert r.status_code == 200 and "refresh_token" in r.json()
    rotated = r.json()["refresh_token"]
    body = json.dumps(refresh(rotated, client_id=s.conf.client_id, client_secret=s.conf.secret))
    r = both.send("POST", TOKEN_SLASH, content=body, headers={"Content-Type": JSON})
    assert r.status_code == 200
    r = both.send("POST", TOKEN, data=refresh(s.tokens["public"], client_id=s.public.client_id))
    assert r.status_code == 200
    exchange = {"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI,
                "code_verifier": VERIFIER}  # fmt: skip
    r = both.send("POST", TOKEN, data={**exchange, "code": s.codes["conf"]}, headers=conf)
    assert r.status_code == 200 and "id_token" in r.json()
    r = both.send("POST", TOKEN, data={"grant_type": "client_credentials"}, headers=conf)
    assert r.status_code == 200

    # DPoP: a bound token with the current nonce; the nonce challenge; a bad proof.
    key = ProofKey("ES256")
    now = both.runtimes[0].clock.now()
    proof = {"DPoP": key.proof(ISSUER + TOKEN, iat=now)}
    data = {**exchange, "code": s.codes["public"], "client_id": s.public.client_id}
    r = both.send("POST", TOKEN, data=data, headers=proof)
    assert r.json()["token_type"] == "DPoP" and "dpop-nonce" in r.headers
    nonce_refresh = refresh(s.tokens["nonce"], client_id=s.nonce.client_id)
    proof = {"DPoP": key.proof(ISSUER + TOKEN, iat=now)}
    r = both.send("POST", TOKEN, data=nonce_refresh, headers=proof)
    assert r.json()["error"] == "use_dpop_nonce" and "dpop-nonce" in r.headers
    proof = {"DPoP": key.proof(ISSUER + TOKEN, iat=now, nonce=r.headers["dpop-nonce"])}
    assert both.send("POST", TOKEN, data=nonce_refresh, headers=proof).status_code == 200
    r = both.send("POST", TOKEN, data=refresh(rotated), headers={**conf, "DPoP": "not.a.jwt"})
    assert r.json()["error"] == "invalid_dpop_proof"

    # Every RFC 6749 §5.2 error the endpoint gives, on both paths and body types.
    errors: list[tuple[str, str, dict[str, Any]]] = [
        ("invalid_request", TOKEN, {"data": {"refresh_token": "x"}, "headers": conf}),
        ("invalid_request", TOKEN_SLASH, {"content": b"{", "headers": {"Content-Type": JSON}}),
        ("invalid_request", TOKEN, {"content": b"a" * 70_000, "headers": conf}),  # 413
        ("invalid_client", TOKEN, {"data": refresh(rotated, client_id="nobody")}),
        ("invalid_grant", TOKEN, {"data": refresh("tkd_rt_nothing"), "headers": conf}),
        ("unauthorized_client", TOKEN, {
            "data": refresh(s.tokens["conf"]), "headers": basic(*s.no_refresh.basic)}),
        ("unsupported_grant_type", TOKEN, {"data": {"grant_type": "password"}, "headers": conf}),
        ("invalid_scope", TOKEN_SLASH, {
            "data": {"grant_type": "client_credentials", "scope": "admin"}, "headers": conf}),
    ]  # fmt: skip
    for error, path, kwargs in errors:
        assert both.send("POST", path, **kwargs).json()["error"] == error

    # A client guessing secrets: invalid_client (401, Basic challenge), then 429.
    wrong = basic(s.conf.client_id, "wrong")
    for _ in range(LIMIT):
        r = both.send("POST", TOKEN, data={"grant_type": "client_credentials"}, headers=wrong)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    r = both.send("POST", TOKEN, data={"grant_type": "client_credentials"}, headers=wrong)
    assert r.status_code == 429 and "retry-after" in r.headers

    # Other methods on the token paths: the router's 405, on both apps alike.
    for method, path in [("GET", TOKEN), ("PUT", TOKEN_SLASH), ("DELETE", TOKEN)]:
        assert both.send(method, path).status_code == 405

    # A busy database (503) and an unexpected failure (500), raised inside the endpoint.
    def busy(client_id: str) -> None:
        raise TemporarilyUnavailable(debug="database is locked")

    def boom(client_id: str) -> None:
        raise RuntimeError("internal detail")

    for failure, status in [(busy, 503), (boom, 500)]:
        for rt in both.runtimes:
            monkeypatch.setattr(rt.store, "get_client", failure)
        data = refresh(rotated, client_id=s.public.client_id)  # (conf is throttled by now)
        assert both.send("POST", TOKEN, data=data).status_code == status

    # The direct app answered the token POSTs without its middleware stack; the other did not.
    direct_stack, routed_stack = both.stacks
    assert direct_stack.calls == 3  # the three 405s
    assert routed_stack.calls == both._seed


def test_middleware_on_the_app_stops_it_from_starting(rt) -> None:
    app = create_app(rt.settings, runtime=rt)
    app.add_middleware(GZipMiddleware)
    with pytest.raises(RuntimeError, match="direct token route"):
        app.build_middleware_stack()
    # At the lifespan startup:
    with pytest.raises(RuntimeError, match="direct token route"), TestClient(app, base_url=ISSUER):
        pass
    app = create_app(rt.settings, runtime=rt)
    app.user_middleware.append(Middleware(GZipMiddleware))
    client = TestClient(app, base_url=ISSUER)  # no lifespan: the first request
    with pytest.raises(RuntimeError, match="direct token route"):
        client.post(TOKEN, data={"grant_type": "client_credentials"})
