"""The client library's DPoP (RFC 9449): ``DPoPKey`` and its proofs (checked by the server's
own verifier and the independent test helpers), and ``OAuthClient``, ``AsyncOAuthClient``
and ``RefreshingAuth`` with a key against the real app, in-process: bound tokens, a public
client's bound refresh tokens, ``Authorization: DPoP`` with ``ath`` at a resource, and
server nonces (remembered, and one retry when the server asks for one)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from anyio.from_thread import BlockingPortal
from starlette.applications import Starlette

from tests.client.dpop_support import DeafKey, deaf_key, server_key
from tests.client.support import (
    REDIRECT_URI,
    SyncASGITransport,
    as_client_token,
    issue,
    register_client,
    sign_in_and_consent,
)
from tests.conftest import ISSUER, SECRET_KEY, RegisteredClient
from tests.support.dpop import ath, thumbprint
from tests.support.family import nonce_runtime
from tokend.client import (
    AsyncOAuthClient,
    DPoPKey,
    InvalidGrant,
    InvalidToken,
    MemoryTokenStore,
    OAuthClient,
    RefreshingAuth,
    TokenResponse,
    UseDPoPNonce,
)
from tokend.core.dpop import DPoPNonces, ProofVerifier
from tokend.core.jose import jwk_thumbprint
from tokend.core.models import User
from tokend.keys.material import derive
from tokend.runtime import Runtime
from tokend.web.app import create_app

TOKEN = f"{ISSUER}/auth/v2/token"
USERINFO = f"{ISSUER}/auth/v2/users/retrieve"


class Capture(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Keeps every request (all headers) that reaches the inner transport, and its status."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: list[tuple[httpx.Request, int]] = []
        self._lock = threading.Lock()

    def _keep(self, request: httpx.Request, status: int) -> None:
        # A copy: a client retrying re-signs (mutates) the same request object.
        kept = httpx.Request(request.method, request.url, headers=request.headers.copy())
        with self._lock:
            self.sent.append((kept, status))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self.inner.handle_request(request)
        self._keep(request, response.status_code)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await self.inner.handle_async_request(request)
        self._keep(request, response.status_code)
        return response

    def to(self, path: str) -> list[tuple[httpx.Request, int]]:
        return [(r, s) for r, s in self.sent if r.url.path == path]

    @property
    def statuses(self) -> list[int]:
        """The statuses of the token and UserInfo requests (discovery left out)."""
        return [s for r, s in self.sent if not r.url.path.startswith("/.well-known/")]


@pytest.fixture
def capture(app: Starlette, portal: BlockingPortal) -> Capture:
    return Capture(SyncASGITransport(app, portal))


@pytest.fixture
def dhttp(capture: Capture) -> Iterator[httpx.Client]:
    with httpx.Client(transport=capture, base_url=ISSUER) as client:
        yield client


@pytest.fixture(scope="module")
def nonce_app(rt: Runtime) -> Iterator[Starlette]:
    """The real app with DPoP nonces required, on the module's database and clock."""
    with nonce_runtime(rt) as runtime:
        yield create_app(runtime.settings, runtime=runtime)


@pytest.fixture
def nonce_capture(nonce_app: Starlette, portal: BlockingPortal) -> Capture:
    return Capture(SyncASGITransport(nonce_app, portal))


@pytest.fixture
def nhttp(nonce_capture: Capture) -> Iterator[httpx.Client]:
    with httpx.Client(transport=nonce_capture, base_url=ISSUER) as client:
        yield client


@pytest.fixture
def key(rt: Runtime) -> DPoPKey:
    return server_key(rt)


def oauth(
    http: httpx.Client, reg: RegisteredClient, key: DPoPKey | None, **kwargs: Any
) -> OAuthClient:
    return OAuthClient.from_issuer(
        ISSUER,
        client_id=reg.client_id,
        client_secret=reg.secret,
        http_client=http,
        dpop_key=key,
        **kwargs,
    )


def claims_of(rt: Runtime, access_token: str) -> dict[str, Any]:
    return rt.keys.verify(access_token)[1]


def verify_proof(proof: str, method: str, url: str, rt: Runtime, **kwargs: Any) -> Any:
    """The server's own check of a proof the client made."""
    return ProofVerifier().verify([proof], htm=method, htu=url, now=rt.clock.now(), **kwargs)


# -- DPoPKey ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_proofs_pass_the_servers_checks(rt: Runtime, alg: str) -> None:
    key = server_key(rt, alg)
    assert key.alg == alg
    assert key.thumbprint == thumbprint(key.jwk) == jwk_thumbprint(key.jwk, alg)
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key.jwk)
    proof = key.proof("post", TOKEN + "?x=1#frag")
    header = jwt.get_unverified_header(proof)
    assert header == {"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk}
    claims = jwt.decode(proof, options={"verify_signature": False})
    assert claims["htm"] == "POST" and claims["htu"] == TOKEN
    assert claims["iat"] == int(rt.clock.now())
    assert "ath" not in claims and "nonce" not in claims
    assert verify_proof(proof, "POST", TOKEN, rt).jkt == key.thumbprint
    with_token = key.proof("GET", USERINFO, access_token="tok", nonce="n-1")
    claims = jwt.decode(with_token, options={"verify_signature": False})
    assert claims["ath"] == ath("tok") and claims["nonce"] == "n-1"
    assert verify_proof(with_token, "GET", USERINFO, rt, access_token="tok")


def test_every_proof_has_its_own_jti(key: DPoPKey) -> None:
    jtis = {jwt.decode(key.proof("POST", TOKEN), options={"verify_signature": False})["jti"]
            for _ in range(20)}  # fmt: skip
    assert len(jtis) == 20


def test_nonces_are_remembered_per_origin(key: DPoPKey) -> None:
    response = httpx.Response(
        200, headers={"DPoP-Nonce": "abc"}, request=httpx.Request("POST", TOKEN)
    )
    assert key.remember_nonce(response) is True
    assert key.nonce_for(USERINFO) == "abc"  # same origin
    assert key.nonce_for("https://issuer.test:8443/x") is None
    assert key.nonce_for("http://issuer.test/x") is None
    claims = jwt.decode(key.proof("GET", USERINFO), options={"verify_signature": False})
    assert claims["nonce"] == "abc"
    assert key.remember_nonce(httpx.Response(200, request=httpx.Request("GET", TOKEN))) is False


def test_pem_round_trip_keeps_the_key(key: DPoPKey) -> None:
    assert DPoPKey.from_pem(key.to_pem()).thumbprint == key.thumbprint
    sealed = key.to_pem(b"pass phrase")
    assert b"ENCRYPTED" in sealed
    assert DPoPKey.from_pem(sealed, password=b"pass phrase").thumbprint == key.thumbprint


def test_repr_shows_no_key_material(key: DPoPKey) -> None:
    assert repr(key) == f"DPoPKey(alg='ES256', thumbprint={key.thumbprint!r})"


def test_unfit_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    with pytest.raises(ValueError):
        DPoPKey(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError):
        DPoPKey(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(TypeError):
        DPoPKey(b"not a key")
    with pytest.raises(ValueError):
        DPoPKey.generate("HS256")


def test_importing_the_client_does_not_import_cryptography() -> None:
    """Only httpx is needed until a DPoPKey is made."""
    code = "import json, sys; import tokend.client; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not [m for m in json.loads(out.stdout) if m.startswith("cryptography")]


# -- OAuthClient ------------------------------------------------------------------------------


def test_token_requests_carry_a_proof_and_get_bound_tokens(
    rt, dhttp, capture, reg, user, key
) -> None:  # type: ignore[no-untyped-def]
    family = issue(rt, reg, user)
    tokens = oauth(dhttp, reg, key).refresh(family.refresh_token)
    assert tokens.token_type == "DPoP"
    assert claims_of(rt, tokens.access_token)["cnf"] == {"jkt": key.thumbprint}
    [(request, status)] = capture.to("/auth/v2/token")
    assert status == 200
    assert verify_proof(request.headers["dpop"], "POST", TOKEN, rt)
    assert request.headers["authorization"].startswith("Basic ")  # client auth unchanged


def test_without_a_key_nothing_changes(rt, dhttp, capture, reg, user) -> None:  # type: ignore[no-untyped-def]
    tokens = oauth(dhttp, reg, None).refresh(issue(rt, reg, user).refresh_token)
    assert tokens.token_type == "Bearer"
    assert "dpop" not in capture.sent[-1][0].headers


def test_userinfo_with_the_dpop_scheme(rt, dhttp, capture, reg, user, key) -> None:  # type: ignore[no-untyped-def]
    client = oauth(dhttp, reg, key)
    tokens = client.refresh(issue(rt, reg, user).refresh_token)
    for presented in (tokens, tokens.access_token):
        assert client.userinfo(presented)["sub"]
        request, status = capture.to("/auth/v2/users/retrieve")[-1]
        assert status == 200
        assert request.headers["authorization"] == f"DPoP {tokens.access_token}"
        proof = request.headers["dpop"]
        assert verify_proof(proof, "GET", USERINFO, rt, access_token=tokens.access_token)
    # A bound token sent as Bearer (a client without the key) is refused.
    with pytest.raises(InvalidToken):
        oauth(dhttp, reg, None).userinfo(tokens.access_token)


def test_a_bearer_token_response_stays_bearer_with_a_key(rt, dhttp, capture, reg, user, key):  # type: ignore[no-untyped-def]
    bearer = as_client_token(issue(rt, reg, user))
    assert bearer.token_type == "Bearer"
    assert oauth(dhttp, reg, key).userinfo(bearer)["sub"]
    request, _ = capture.to("/auth/v2/users/retrieve")[-1]
    assert request.headers["authorization"] == f"Bearer {bearer.access_token}"
    assert "dpop" not in request.headers


def test_public_client_code_flow_binds_its_refresh_tokens(rt, dhttp, user, key) -> None:  # type: ignore[no-untyped-def]
    reg = register_client(rt, public=True)
    client = oauth(dhttp, reg, key, redirect_uri=REDIRECT_URI)
    request = client.authorization_url(scope="openid offline")
    callback = sign_in_and_consent(dhttp, request.url, user.username)
    tokens = client.complete_authorization(callback, request)
    assert tokens.token_type == "DPoP"
    # Without the key, or with another, the refresh token is useless...
    with pytest.raises(InvalidGrant):
        oauth(dhttp, reg, None).refresh(tokens.refresh_token)
    with pytest.raises(InvalidGrant):
        oauth(dhttp, reg, server_key(rt)).refresh(tokens.refresh_token)
    # ...and still good with it (the refusals spent nothing).
    rt.clock.advance(1)
    again = client.refresh(tokens.refresh_token)
    assert claims_of(rt, again.access_token)["cnf"] == {"jkt": key.thumbprint}


def test_nonce_asked_for_then_remembered(rt, nhttp, nonce_capture, reg, user, key) -> None:  # type: ignore[no-untyped-def]
    client = oauth(nhttp, reg, key)
    tokens = client.refresh(issue(rt, reg, user).refresh_token)
    assert tokens.token_type == "DPoP"
    sent = nonce_capture.to("/auth/v2/token")
    assert [status for _, status in sent] == [400, 200]  # use_dpop_nonce, then with it
    first, retry = (jwt.decode(r.headers["dpop"], options={"verify_signature": False})
                    for r, _ in sent)  # fmt: skip
    assert "nonce" not in first and retry["nonce"] == key.nonce_for(TOKEN)
    assert first["jti"] != retry["jti"]
    # Known now: the next requests need no retry (userinfo shares the origin).
    tokens = client.refresh(tokens.refresh_token)
    assert client.userinfo(tokens)["sub"]
    assert nonce_capture.statuses[2:] == [200, 200]
    # Stale after two periods: asked again, and the retry succeeds, at both endpoints.
    rt.clock.advance(600)
    tokens = client.refresh(tokens.refresh_token)
    rt.clock.advance(600)
    assert client.userinfo(tokens)["sub"]
    assert nonce_capture.statuses[4:] == [400, 200, 401, 200]


def test_a_client_deaf_to_nonces_gets_one_retry_then_the_error(rt, nhttp, nonce_capture, reg, user):  # type: ignore[no-untyped-def]
    key = DeafKey(server_key(rt)._key, clock=rt.clock.now)
    with pytest.raises(UseDPoPNonce):
        oauth(nhttp, reg, key).refresh(issue(rt, reg, user).refresh_token)
    assert nonce_capture.statuses == [400, 400]


def test_nonces_are_the_servers(rt: Runtime, key: DPoPKey) -> None:
    """What the nonce app hands out is the server's stateless nonce (so every process of
    the server accepts it)."""
    nonces = DPoPNonces(derive(SECRET_KEY, "dpop-nonce"))
    response = httpx.Response(
        400,
        json={"error": "use_dpop_nonce"},
        headers={"DPoP-Nonce": nonces.current(rt.clock.now())},
        request=httpx.Request("POST", TOKEN),
    )
    key.remember_nonce(response)
    assert nonces.is_valid(key.nonce_for(TOKEN), rt.clock.now())


# -- RefreshingAuth ---------------------------------------------------------------------------


def _bound_token(rt: Runtime, http: httpx.Client, reg: RegisteredClient, user: User,
                 key: DPoPKey) -> TokenResponse:  # fmt: skip
    """A DPoP-bound token response of a fresh family, which the client believes expired."""
    tokens = oauth(http, reg, key).refresh(issue(rt, reg, user).refresh_token)
    return TokenResponse.from_dict({**tokens.to_dict(), "expires_at": 0})


@pytest.mark.parametrize("nonces", [False, True], ids=["no_nonce", "nonce"])
def test_refreshing_auth_refreshes_with_a_proof_and_calls_with_dpop(
    rt, dhttp, nhttp, capture, nonce_capture, reg, user, nonces
) -> None:  # type: ignore[no-untyped-def]
    http, cap = (nhttp, nonce_capture) if nonces else (dhttp, capture)
    key = server_key(rt)
    store = MemoryTokenStore(_bound_token(rt, http, reg, user, key))
    cap.sent.clear()
    client = oauth(http, reg, DPoPKey(key._key, clock=rt.clock.now))  # nonces not known yet
    with httpx.Client(transport=cap, base_url=ISSUER, auth=RefreshingAuth(client, store)) as api:
        r = api.get("/auth/v2/users/retrieve")
    assert r.status_code == 200, r.text
    saved = store.load()
    assert saved is not None and saved.token_type == "DPoP"
    assert cap.statuses == ([400, 200, 200] if nonces else [200, 200])
    refresh, _ = cap.to("/auth/v2/token")[-1]
    assert verify_proof(refresh.headers["dpop"], "POST", TOKEN, rt)
    call, _ = cap.to("/auth/v2/users/retrieve")[-1]
    assert call.headers["authorization"] == f"DPoP {saved.access_token}"
    assert verify_proof(call.headers["dpop"], "GET", USERINFO, rt, access_token=saved.access_token)


def test_refreshing_auth_retries_a_resource_asking_for_a_new_nonce(
    rt, nhttp, nonce_capture, reg, user
) -> None:  # type: ignore[no-untyped-def]
    key = server_key(rt)
    token = _bound_token(rt, nhttp, reg, user, key)
    store = MemoryTokenStore(TokenResponse.from_dict({**token.to_dict(), "expires_at": 4e9}))
    client = oauth(nhttp, reg, key)
    rt.clock.advance(600)  # the nonce the key knows is stale now
    nonce_capture.sent.clear()
    auth = RefreshingAuth(client, store)
    with httpx.Client(transport=nonce_capture, base_url=ISSUER, auth=auth) as api:
        r = api.get("/auth/v2/users/retrieve")
    assert r.status_code == 200, r.text
    assert nonce_capture.statuses == [401, 200]  # no refresh: just the nonce


def test_async_client_and_auth_with_dpop(rt, nonce_app, reg, user) -> None:  # type: ignore[no-untyped-def]
    key = server_key(rt)

    async def run() -> tuple[TokenResponse, int, list[int]]:
        cap = Capture(httpx.ASGITransport(nonce_app))
        async with httpx.AsyncClient(transport=cap, base_url=ISSUER) as http:
            client = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=reg.client_id, client_secret=reg.secret,
                http_client=http, dpop_key=key,
            )  # fmt: skip
            tokens = await client.refresh(issue(rt, reg, user).refresh_token)
            assert (await client.userinfo(tokens))["sub"]
            store = MemoryTokenStore(TokenResponse.from_dict({**tokens.to_dict(), "expires_at": 0}))
            rt.clock.advance(600)  # stale nonce: the refresh is asked for a new one
            auth = RefreshingAuth(client, store)
            async with httpx.AsyncClient(transport=cap, base_url=ISSUER, auth=auth) as api:
                r = await api.get("/auth/v2/users/retrieve")
            saved = store.load()
            assert isinstance(saved, TokenResponse)
            return saved, r.status_code, cap.statuses

    saved, status, statuses = asyncio.run(run())
    assert status == 200
    assert saved.token_type == "DPoP"
    assert claims_of(rt, saved.access_token)["cnf"] == {"jkt": key.thumbprint}
    # refresh (nonce asked, retried), userinfo, refresh (asked again, retried), the call
    assert statuses == [400, 200, 200, 400, 200, 200]


# -- a client that requires nonces (Client.dpop_nonce_required), TOKEND_DPOP_NONCE=off -------


@pytest.fixture
def strict(rt: Runtime) -> RegisteredClient:
    """A confidential client registered with ``--dpop-nonce``."""
    return register_client(rt, dpop_nonce_required=True)


def test_a_client_that_requires_nonces_works_transparently(
    rt, dhttp, capture, strict, user, key
) -> None:  # type: ignore[no-untyped-def]
    """On a server with nonces off, a client registered with ``--dpop-nonce``: the first
    token request is asked for a nonce and retried once with it, the next ones carry it
    from the start, and UserInfo (which requires none here) takes the bound token."""
    client = oauth(dhttp, strict, key)
    family = issue(rt, strict, user)
    tokens = client.refresh(family.refresh_token)
    assert tokens.token_type == "DPoP"
    assert claims_of(rt, tokens.access_token)["cnf"] == {"jkt": key.thumbprint}
    assert capture.statuses == [400, 200]  # use_dpop_nonce, then with it
    first, retry = (jwt.decode(r.headers["dpop"], options={"verify_signature": False})
                    for r, _ in capture.to("/auth/v2/token"))  # fmt: skip
    assert "nonce" not in first and retry["nonce"] == key.nonce_for(TOKEN)
    # The refusal changed nothing: the family's first refresh token was spent once, by the
    # retry, whose successor now works (no reuse detected, no family revoked).
    tokens = client.refresh(tokens.refresh_token)
    assert client.client_credentials().token_type == "DPoP"
    assert client.userinfo(tokens)["sub"]
    assert capture.statuses[2:] == [200, 200, 200]
    # Two periods on the nonce is stale: asked again, once, for each grant.
    rt.clock.advance(600)
    tokens = client.refresh(tokens.refresh_token)
    assert capture.statuses[5:] == [400, 200]
    rt.clock.advance(600)
    assert client.client_credentials().token_type == "DPoP"
    assert capture.statuses[7:] == [400, 200]


def test_a_client_that_requires_nonces_with_refreshing_auth_and_async(
    rt, app, strict, user
) -> None:  # type: ignore[no-untyped-def]
    key = server_key(rt)

    async def run() -> tuple[TokenResponse, int, list[int]]:
        cap = Capture(httpx.ASGITransport(app))
        async with httpx.AsyncClient(transport=cap, base_url=ISSUER) as http:
            client = await AsyncOAuthClient.from_issuer(
                ISSUER, client_id=strict.client_id, client_secret=strict.secret,
                http_client=http, dpop_key=key,
            )  # fmt: skip
            family = issue(rt, strict, user)
            store = MemoryTokenStore(TokenResponse.from_dict({**family.to_dict(), "expires_at": 0}))
            auth = RefreshingAuth(client, store)
            async with httpx.AsyncClient(transport=cap, base_url=ISSUER, auth=auth) as api:
                r = await api.get("/auth/v2/users/retrieve")
            saved = store.load()
            assert isinstance(saved, TokenResponse)
            return saved, r.status_code, cap.statuses

    saved, status, statuses = asyncio.run(run())
    assert status == 200
    assert saved.token_type == "DPoP"
    assert claims_of(rt, saved.access_token)["cnf"] == {"jkt": key.thumbprint}
    # refresh (nonce asked, retried with it), then the call with the DPoP-bound token
    assert statuses == [400, 200, 200]


def test_a_client_deaf_to_nonces_gets_the_error_once_retried(rt, dhttp, capture, strict, user):  # type: ignore[no-untyped-def]
    with pytest.raises(UseDPoPNonce):
        oauth(dhttp, strict, deaf_key(rt)).refresh(issue(rt, strict, user).refresh_token)
    assert capture.statuses == [400, 400]
