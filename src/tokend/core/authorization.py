"""The authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1) and its codes (§4.1.2).

``validate`` turns the query of ``GET /auth/v2/authorize`` into an ``AuthorizationRequest``
or raises one of two kinds of error (RFC 6749 §4.1.2.1):

- ``FatalAuthorizationError``: the client or redirect URI cannot be trusted (unknown client,
  missing/unregistered/repeated redirect URI). The user sees an error page; the server
  MUST NOT redirect.
- ``RedirectableError``: everything else; the user agent goes back to the (verified)
  redirect URI with ``error``, ``error_description`` and ``state``.

Codes are single-use, live 60 s, and are bound to the client, the redirect URI, the PKCE
challenge and the nonce; only their hash is stored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tokend.core import pkce
from tokend.core.errors import InvalidScope
from tokend.core.models import Client, StoredCode
from tokend.core.params import check as check_params
from tokend.core.ports import Store
from tokend.core.scopes import OPENID, parse_scope
from tokend.core.secrets import hash_secret

CODE_TTL = 60
# A client id longer than storage holds (clients.client_id is 64 characters) is unknown
# without asking storage.
MAX_CLIENT_ID_LENGTH = 64
CODE_PREFIX = "tkd_ac_"
_PROMPTS = frozenset({"none", "login", "consent", "select_account"})


class FatalAuthorizationError(Exception):
    """An error shown to the user on our own page, never sent to the redirect URI."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class RedirectableError(Exception):
    """An error returned to the client at its redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: frozenset[str]
    max_age: int | None

    def error(self, error: str, description: str) -> RedirectableError:
        return RedirectableError(error, description, self.redirect_uri, self.state)


def validate(
    pairs: Sequence[tuple[str, str]], lookup: Callable[[str], Client | None]
) -> AuthorizationRequest:
    """Validate an authorization request given as (name, value) pairs from the query.

    The parameter rules are ``tokend.core.params``'s: a problem with ``client_id`` or
    ``redirect_uri`` (repeated, even empty; a control character) is fatal, and checked
    before the client is looked up, so such input never reaches storage; a problem with
    any other parameter is ``invalid_request`` at the verified redirect URI, without
    ``state`` when ``state`` is the one at fault."""
    checked = check_params(pairs)
    params, problems = checked.values, checked.problems

    client_id = params.get("client_id")
    if "client_id" in problems or not client_id:
        raise FatalAuthorizationError("The request has no valid client_id.")
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise FatalAuthorizationError("The client is not registered with this server.")
    client = lookup(client_id)
    if client is None:
        raise FatalAuthorizationError("The client is not registered with this server.")
    redirect_uri = params.get("redirect_uri")
    if "redirect_uri" in problems or not redirect_uri:
        raise FatalAuthorizationError("The request has no valid redirect_uri.")
    # RFC 9700 §4.1.3 / OIDC Core §3.1.2.1: exact string comparison, no pattern matching.
    if redirect_uri not in client.redirect_uris:
        raise FatalAuthorizationError("The redirect_uri is not registered for this client.")

    state = None if "state" in problems else params.get("state")
    fail = _redirector(redirect_uri, state)
    problem = checked.first_problem()
    if problem is not None:
        raise fail("invalid_request", problem)
    if params.get("response_type") != "code":
        if "response_type" not in params:
            raise fail("invalid_request", "The response_type parameter is required.")
        raise fail("unsupported_response_type", "Only response_type=code is supported.")
    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "The client may not use the authorization code flow.")
    if "request" in params or "request_uri" in params:
        raise fail(
            "request_not_supported" if "request" in params else "request_uri_not_supported",
            "Request objects are not supported.",
        )
    try:
        scopes = parse_scope(params.get("scope"))
    except InvalidScope as exc:
        raise fail("invalid_scope", exc.description) from None
    if OPENID not in scopes:
        raise fail("invalid_scope", "The scope must include openid.")
    allowed = set(client.scopes)
    extra = [s for s in scopes if s not in allowed]
    if extra:
        raise fail("invalid_scope", "The requested scope is not allowed for this client.")

    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise fail("invalid_request", "code_challenge_method without code_challenge.")
        if client.public:
            # RFC 9700 §2.1.1: public clients MUST use PKCE.
            raise fail("invalid_request", "Public clients must send a PKCE code_challenge (S256).")
    else:
        if method != pkce.S256:
            # RFC 7636 §4.3 defaults a missing method to plain, which we do not accept.
            raise fail("invalid_request", "code_challenge_method must be S256.")
        if not pkce.is_valid_challenge(challenge):
            raise fail("invalid_request", "The code_challenge is malformed.")

    prompt = frozenset(params.get("prompt", "").split())
    if not prompt <= _PROMPTS or ("none" in prompt and len(prompt) > 1):
        raise fail("invalid_request", "The prompt parameter is invalid.")
    max_age = None
    if "max_age" in params:
        raw = params["max_age"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
            raise fail("invalid_request", "The max_age parameter must be a non-negative integer.")
        max_age = int(raw)
    nonce = params.get("nonce")
    if nonce is not None and len(nonce) > 512:
        raise fail("invalid_request", "The nonce is too long.")

    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        nonce=nonce,
        code_challenge=challenge,
        prompt=prompt,
        max_age=max_age,
    )


def _redirector(redirect_uri: str, state: str | None) -> Callable[[str, str], RedirectableError]:
    def make(error: str, description: str) -> RedirectableError:
        return RedirectableError(error, description, redirect_uri, state)

    return make


def request_digest(request: AuthorizationRequest) -> bytes:
    """SHA-256 of the request as validated (canonical: every field that shapes the code, in
    a fixed order, whatever the order or encoding of the query it came from). A cross-device
    sign-in is bound to it (``tokend.core.device``): its approval completes this request and
    no other, even in the same browser."""
    canonical = [
        request.client.client_id,
        request.redirect_uri,
        list(request.scopes),
        request.state,
        request.nonce,
        request.code_challenge,
        sorted(request.prompt),
        request.max_age,
    ]
    data = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).digest()


def cross_device_allowed(request: AuthorizationRequest) -> bool:
    """Whether the login page may offer sign-in from another device: not when the client
    asks for a fresh sign-in (``prompt=login``, ``max_age``), which an approval by a phone
    signed in earlier would not be (OIDC Core §3.1.2.1)."""
    return "login" not in request.prompt and request.max_age is None


def needs_login(request: AuthorizationRequest, auth_time: float | None, now: float) -> bool:
    """OIDC Core §3.1.2.1: prompt=login, or max_age exceeded, forces a fresh sign-in."""
    if auth_time is None or "login" in request.prompt:
        return True
    return request.max_age is not None and now - auth_time > request.max_age


def needs_consent(request: AuthorizationRequest, granted: frozenset[str] | None) -> bool:
    """Ask unless the user already granted every requested scope to this client."""
    if "consent" in request.prompt or granted is None:
        return True
    return not set(request.scopes) <= granted


def new_code() -> str:
    return CODE_PREFIX + secrets.token_urlsafe(32)


class CodeIssuer:
    """Issues the code at the end of a successful authorization (RFC 6749 §4.1.2)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def issue(
        self,
        request: AuthorizationRequest,
        *,
        user_id: str,
        subject: str,
        auth_time: float,
        now: float,
    ) -> str:
        code = new_code()
        with self._store.transaction() as tx:
            tx.insert_authorization_code(
                StoredCode(
                    code_hash=hash_secret(code),
                    client_id=request.client.client_id,
                    user_id=user_id,
                    subject=subject,
                    redirect_uri=request.redirect_uri,
                    scopes=request.scopes,
                    nonce=request.nonce,
                    code_challenge=request.code_challenge,
                    auth_time=auth_time,
                    created_at=now,
                    expires_at=now + CODE_TTL,
                )
            )
        return code
