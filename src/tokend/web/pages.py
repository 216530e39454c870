"""The pages a person sees: the authorize endpoint with its sign-in and consent steps
(OIDC Core §3.1.2, RFC 6749 §4.1), and ``/account`` to see and revoke sessions.

Security habits here:
- CSRF: a random ``tokend_csrf`` cookie (HttpOnly) and, in every form, an HMAC of it and of
  the session cookie under a key derived from the system secret (signed double-submit, tied
  to the session): a token from before sign-in, or from another session, is refused. The
  CSRF cookie is replaced at every sign-in and sign-out. POSTs from another ``Origin`` are
  refused as well.
- The browser session is a random 256-bit id in an HttpOnly, SameSite=Lax cookie; only its
  SHA-256 is stored; it is replaced at every sign-in (no fixation). It ends at sign-out,
  "sign out everywhere", a password change and ``tokend tokens revoke --user``.
- On an https issuer both cookies are ``__Host-`` cookies (Secure, Path=/, no Domain), so a
  sibling subdomain or a plain-http response cannot plant or overwrite them (RFC 6265bis
  §4.1.3.2); cookies of the unprefixed names are then ignored. (HSTS: ``web.app``.)
- Strict CSP (no inline script or style, no external asset), frame-ancestors none,
  Referrer-Policy same-origin, no-store. ``form-action`` also names the client's redirect
  origin, since browsers apply it to the redirect that ends a form submission.
- One generic error for a wrong username or password, and the same Argon2id work either way.
- Pending authorization requests are carried as the original query string and validated
  again at every step, so nothing a page posts back can widen or alter them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tokend.core import authorization as authz
from tokend.core.errors import InvalidRequest, TooManyAttempts
from tokend.core.jose import b64url_encode
from tokend.core.secrets import hash_secret
from tokend.core.throttle import Attempt
from tokend.keys.material import derive
from tokend.runtime import Runtime
from tokend.store.accounts import BrowserSession
from tokend.web.parsing import MAX_PAGE_FORM_BYTES, parse_page_form, query_pairs, read_body
from tokend.web.throttling import source_address

AUTHORIZE = "/auth/v2/authorize"
LOGIN = "/auth/v2/authorize/login"
CONSENT = "/auth/v2/authorize/consent"
ACCOUNT = "/account"
ACCOUNT_REVOKE = "/account/revoke"
ACCOUNT_WITHDRAW = "/account/consents/withdraw"
LOGOUT = "/account/logout"
LOGOUT_EVERYWHERE = "/account/logout/everywhere"
CSS = "/auth/static/tokend.css"

SESSION_COOKIE = "tokend_session"
CSRF_COOKIE = "tokend_csrf"
HOST_PREFIX = "__Host-"  # on an https issuer
MAX_FORM_BYTES = MAX_PAGE_FORM_BYTES  # room for a whole authorization request in `next`

SCOPE_WORDS: dict[str, tuple[str, str]] = {
    "openid": (
        "Confirm it's you",
        "Know that you are signed in, with an identifier for your account.",
    ),
    "offline": ("Stay connected", "Keep access when you're not using it, until you revoke it."),
    "offline_access": (
        "Stay connected",
        "Keep access when you're not using it, until you revoke it.",
    ),
    "profile": ("See your profile", "Your name and profile picture."),
    "names": ("See your name", "Your first and family name."),
    "email": ("See your email address", ""),
    "phone": ("See your phone number", ""),
    "picture": ("See your profile picture", ""),
    "user_id": ("See your user ID", ""),
}

_STATIC = Path(__file__).parent / "static"
_TEMPLATES = Path(__file__).parent / "templates"
# Verifying against this when the username is unknown costs what a real check costs.
_DUMMY_HASH = PasswordHasher().hash(secrets.token_urlsafe(16))


def with_query(uri: str, params: dict[str, str | None]) -> str:
    """Add parameters to a redirect URI, keeping the query it already has (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"  # a native app's private-use scheme (RFC 8252 §7.1)


def _when(t: float) -> tuple[str, str]:
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%d %b %Y, %H:%M UTC"), d.isoformat()


def page_routes(rt: Runtime, call: Callable[..., Awaitable[Any]]) -> list[Route]:
    settings = rt.settings
    issuer = rt.policy.issuer
    issuer_origin = _origin(issuer)
    secure = issuer.startswith("https://")
    session_cookie = HOST_PREFIX + SESSION_COOKIE if secure else SESSION_COOKIE
    csrf_cookie_name = HOST_PREFIX + CSRF_COOKIE if secure else CSRF_COOKIE
    csrf_key = derive(settings.resolve_secret_key(), "csrf")
    session_ttl = settings.session_ttl
    hasher = PasswordHasher()
    # At most this many Argon2id checks (64 MiB each) at once in this process: a flood of
    # sign-ins waits here, as coroutines, instead of exhausting memory and threads.
    hash_limiter = anyio.CapacityLimiter(settings.password_hash_concurrency)
    trusted = settings.trusted_proxy_networks
    css_bytes = (_STATIC / "tokend.css").read_bytes()
    css_url = f"{CSS}?v={hashlib.sha256(css_bytes).hexdigest()[:12]}"
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(["html"]),
        auto_reload=False,
    )

    # -- helpers ---------------------------------------------------------------------------

    def session_id_of(request: Request) -> str:
        """The session cookie's value as sent ("" if none or not one of ours)."""
        sid = request.cookies.get(session_cookie, "")
        return sid if len(sid) <= 64 and sid.isascii() else ""

    def csrf_token(cookie: str, sid: str) -> str:
        """The form token: bound to the browser's CSRF cookie and to its session, so it stops
        working when either changes (sign-in, sign-out) and is worth nothing elsewhere."""
        message = f"{cookie}\n{sid}".encode()
        return b64url_encode(hmac.new(csrf_key, message, "sha256").digest())

    def set_csrf_cookie(response: Response, value: str) -> None:
        response.set_cookie(
            csrf_cookie_name, value, httponly=True, samesite="lax", secure=secure, path="/"
        )

    def page(
        template: str,
        status: int = 200,
        *,
        csrf_cookie: str | None = None,
        form_targets: tuple[str, ...] = (),
        **context: Any,
    ) -> Response:
        html = env.get_template(template).render(css_url=css_url, **context)
        form_action = " ".join(["'self'", *form_targets])
        headers = {
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            # Not no-referrer: with it browsers send `Origin: null` on our own form POSTs,
            # which the Origin check must refuse. same-origin still sends nothing elsewhere.
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
        }
        response = Response(html, status, headers, "text/html; charset=utf-8")
        if csrf_cookie is not None:
            set_csrf_cookie(response, csrf_cookie)
        return response

    def csrf_cookie_of(request: Request) -> str:
        value = request.cookies.get(csrf_cookie_name)
        if value and 20 <= len(value) <= 64 and value.isascii():
            return value
        return secrets.token_urlsafe(32)

    def form_page(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        cookie = csrf_cookie_of(request)
        token = csrf_token(cookie, session_id_of(request))
        return page(template, status, csrf_cookie=cookie, csrf_token=token, **ctx)

    async def read_form(request: Request) -> dict[str, str] | None:
        """The POSTed form, if its Origin and CSRF token are right; else None."""
        origin = request.headers.get("origin")
        if origin is not None and origin != issuer_origin:
            return None
        try:
            # The input discipline of every endpoint (tokend.web.parsing): a body our own
            # pages never send (a repeated field, a control character, not UTF-8) is not
            # from this site.
            form = parse_page_form(await read_body(request, MAX_FORM_BYTES))
        except InvalidRequest:
            return None
        cookie = request.cookies.get(csrf_cookie_name)
        token = form.get("csrf_token", "")
        expected = csrf_token(cookie, session_id_of(request)) if cookie else ""
        if not cookie or not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return form

    def forbidden() -> Response:
        return page(
            "error.html",
            403,
            message="This form has expired or did not come from this site. Go back and try again.",
        )

    async def current_session(request: Request) -> tuple[str | None, BrowserSession | None]:
        sid = session_id_of(request)
        if not sid:
            return None, None
        session = await call(rt.accounts.get_session, hash_secret(sid), now=rt.clock.now())
        return sid, session

    def redirect(url: str, status: int = 302) -> Response:
        # Our own pages are named by the issuer, never by the request's Host header.
        if url.startswith("/"):
            url = issuer + url
        return RedirectResponse(url, status, headers={"Cache-Control": "no-store"})

    def to_client_error(err: authz.RedirectableError, status: int = 302) -> Response:
        return redirect(
            with_query(
                err.redirect_uri,
                {
                    "error": err.error,
                    "error_description": err.description,
                    "state": err.state,
                    "iss": issuer,  # RFC 9207
                },
            ),
            status,
        )

    def scope_items(scopes: tuple[str, ...]) -> list[dict[str, str]]:
        items, seen = [], set()
        for s in scopes:
            title, detail = SCOPE_WORDS.get(s, (f"Access “{s}”", ""))
            if title not in seen:
                seen.add(title)
                items.append({"title": title, "detail": detail})
        return items

    async def validate(query: str | bytes) -> authz.AuthorizationRequest:
        try:
            pairs = query_pairs(query)
        except InvalidRequest as exc:  # too long, too many parameters, not UTF-8
            raise authz.FatalAuthorizationError(exc.description) from None
        return await call(authz.validate, pairs, rt.store.get_client)

    async def finish(
        req: authz.AuthorizationRequest, session: BrowserSession, status: int
    ) -> Response:
        subject = rt.subjects.subject(req.client, session.user_id)
        code = await call(
            rt.codes.issue,
            req,
            user_id=session.user_id,
            subject=subject,
            auth_time=session.auth_time,
            now=rt.clock.now(),
        )
        return redirect(
            with_query(req.redirect_uri, {"code": code, "state": req.state, "iss": issuer}),
            status,
        )

    def login_page(
        request: Request,
        next_: str,
        req: authz.AuthorizationRequest | None,
        *,
        status: int = 200,
        error: str | None = None,
        username: str = "",
    ) -> Response:
        targets = (_origin(req.redirect_uri),) if req is not None else ()
        return form_page(
            request,
            "login.html",
            status,
            action=LOGIN,
            next=next_,
            client_name=req.client.name if req is not None else None,
            error=error,
            username=username,
            form_targets=targets,
        )

    def too_many_attempts(
        request: Request,
        next_: str,
        req: authz.AuthorizationRequest | None,
        username: str,
        retry_after: int,
    ) -> Response:
        minutes = max(1, -(-retry_after // 60))
        wait = "a minute" if minutes == 1 else f"{minutes} minutes"
        response = login_page(
            request,
            next_,
            req,
            status=429,
            error=f"Too many failed sign-in attempts. Try again in {wait}.",
            username=username[:255],
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    async def consent_or_finish(
        request: Request,
        req: authz.AuthorizationRequest,
        session: BrowserSession,
        query: str,
        status: int,
    ) -> Response:
        granted = await call(rt.accounts.get_consent, session.user_id, req.client.client_id)
        if authz.needs_consent(req, granted):
            if "none" in req.prompt:
                return to_client_error(
                    req.error("consent_required", "Consent is required."), status
                )
            return form_page(
                request,
                "consent.html",
                action=CONSENT,
                client_name=req.client.name,
                username=session.username,
                scopes=scope_items(req.scopes),
                request_query=query,
                account_url=ACCOUNT,
                form_targets=(_origin(req.redirect_uri),),
            )
        return await finish(req, session, status)

    # -- routes ----------------------------------------------------------------------------

    async def authorize(request: Request) -> Response:
        raw_query: bytes = request.scope["query_string"]
        try:
            req = await validate(raw_query)
        except authz.FatalAuthorizationError as exc:
            return page("error.html", 400, message=exc.description)
        except authz.RedirectableError as err:
            return to_client_error(err)
        _, session = await current_session(request)
        now = rt.clock.now()
        query = raw_query.decode("utf-8")  # valid: validate() decoded it
        if session is None or authz.needs_login(req, session.auth_time, now):
            if "none" in req.prompt:
                return to_client_error(req.error("login_required", "The user is not signed in."))
            # The sign-in about to happen satisfies prompt=login and max_age: the request
            # the form carries must not ask for them again, or signing in would loop.
            return login_page(request, f"{AUTHORIZE}?{_after_sign_in(query)}", req)
        return await consent_or_finish(request, req, session, query, 302)

    async def login(request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return forbidden()
        next_ = form.get("next", "")
        req = None
        if next_.startswith(f"{AUTHORIZE}?"):
            try:
                req = await validate(next_[len(AUTHORIZE) + 1 :])
            except authz.FatalAuthorizationError as exc:
                return page("error.html", 400, message=exc.description)
            except authz.RedirectableError as err:
                return to_client_error(err, 303)
        elif next_ != ACCOUNT:
            return forbidden()
        username = form.get("username", "").strip()
        password = form.get("password", "")
        # Abuse limits (tokend.core.throttle): a throttled (username, address) or address is
        # refused before the password is looked at; a failure counts; success adds nothing.
        address = source_address(request, trusted)
        keys = rt.throttle.policy.login_keys(username, address)
        try:
            await call(rt.throttle.check, keys)
        except TooManyAttempts as exc:
            return too_many_attempts(request, next_, req, username, exc.retry_after)
        user = await call(rt.store.get_user_by_username, username) if username else None
        ok = await anyio.to_thread.run_sync(
            _verify_password, hasher, user, password, limiter=hash_limiter
        )
        if user is None or not ok:
            await call(rt.throttle.failed, keys, Attempt(address, username=username))
            return login_page(
                request,
                next_,
                req,
                status=400,
                error="Incorrect username or password.",
                username=username[:255],
            )
        old_sid, _ = await current_session(request)
        if old_sid:
            await call(rt.accounts.delete_session, hash_secret(old_sid))
        sid = secrets.token_urlsafe(32)
        now = rt.clock.now()
        await call(
            rt.accounts.create_session,
            hash_secret(sid),
            user_id=user.id,
            auth_time=now,
            now=now,
            ttl=session_ttl,
        )
        response = redirect(next_, 303)
        response.set_cookie(
            session_cookie,
            sid,
            max_age=session_ttl,
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )
        # A new CSRF cookie too: no form token from before the sign-in works after it.
        set_csrf_cookie(response, secrets.token_urlsafe(32))
        return response

    async def consent(request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return forbidden()
        query = form.get("request", "")
        try:
            req = await validate(query)
        except authz.FatalAuthorizationError as exc:
            return page("error.html", 400, message=exc.description)
        except authz.RedirectableError as err:
            return to_client_error(err, 303)
        _, session = await current_session(request)
        if session is None:
            return login_page(request, f"{AUTHORIZE}?{query}", req)
        if form.get("decision") != "allow":
            return to_client_error(req.error("access_denied", "The user denied access."), 303)
        await call(
            rt.accounts.save_consent,
            session.user_id,
            req.client.client_id,
            req.scopes,
            now=rt.clock.now(),
        )
        return await finish(req, session, 303)

    async def account(request: Request, notice: str | None = None) -> Response:
        _, session = await current_session(request)
        if session is None:
            return login_page(request, ACCOUNT, None)
        families = []
        for f in await call(rt.accounts.active_families, session.user_id, now=rt.clock.now()):
            granted, granted_iso = _when(f.granted_at)
            last_used, last_used_iso = _when(f.last_used_at)
            families.append(
                {
                    "family_id": f.family_id,
                    "client_name": f.client_name,
                    "scope": f.scope,
                    "granted": granted,
                    "granted_iso": granted_iso,
                    "last_used": last_used,
                    "last_used_iso": last_used_iso,
                }
            )
        consents = []
        for c in await call(rt.accounts.list_consents, session.user_id):
            granted, granted_iso = _when(c.granted_at)
            consents.append(
                {
                    "client_id": c.client_id,
                    "client_name": c.client_name,
                    "scopes": [item["title"] for item in scope_items(c.scopes)],
                    "granted": granted,
                    "granted_iso": granted_iso,
                }
            )
        return form_page(
            request,
            "account.html",
            username=session.username,
            families=families,
            consents=consents,
            notice=notice,
            revoke_url=ACCOUNT_REVOKE,
            withdraw_url=ACCOUNT_WITHDRAW,
            logout_url=LOGOUT,
            logout_everywhere_url=LOGOUT_EVERYWHERE,
        )

    async def account_action(request: Request, field: str, action: Callable[..., Any]) -> Response:
        """A form of /account that acts on one of the signed-in user's things by its id:
        ``action(user_id, id, now=...)``; back to /account."""
        form = await read_form(request)
        if form is None:
            return forbidden()
        _, session = await current_session(request)
        if session is None:
            return redirect(ACCOUNT, 303)
        value = form.get(field, "")
        if _is_id(value):  # else nothing has it (and no NUL reaches the database)
            await call(action, session.user_id, value, now=rt.clock.now())
        return redirect(ACCOUNT, 303)

    async def account_revoke(request: Request) -> Response:
        return await account_action(request, "family_id", rt.accounts.revoke_user_family)

    async def account_withdraw(request: Request) -> Response:
        return await account_action(request, "client_id", rt.accounts.withdraw_consent)

    def signed_out() -> Response:
        response = redirect(ACCOUNT, 303)
        response.delete_cookie(session_cookie, path="/", secure=secure, httponly=True)
        set_csrf_cookie(response, secrets.token_urlsafe(32))
        return response

    async def logout(request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return forbidden()
        sid, _ = await current_session(request)
        if sid:
            await call(rt.accounts.delete_session, hash_secret(sid))
        return signed_out()

    async def logout_everywhere(request: Request) -> Response:
        """End every browser session of the user, this one too. The applications keep the
        access the user gave them (OIDC Core §11: offline access outlives the sign-in);
        the account page revokes those one by one."""
        form = await read_form(request)
        if form is None:
            return forbidden()
        _, session = await current_session(request)
        if session is not None:
            await call(rt.accounts.end_user_sessions, session.user_id, now=rt.clock.now())
        return signed_out()

    async def css(request: Request) -> Response:
        return Response(
            css_bytes,
            200,
            {"Cache-Control": "public, max-age=31536000, immutable"},
            "text/css; charset=utf-8",
        )

    async def account_get(request: Request) -> Response:
        return await account(request)

    return [
        Route(AUTHORIZE, authorize, methods=["GET"]),
        Route(LOGIN, login, methods=["POST"]),
        Route(CONSENT, consent, methods=["POST"]),
        Route(ACCOUNT, account_get, methods=["GET"]),
        Route(ACCOUNT_REVOKE, account_revoke, methods=["POST"]),
        Route(ACCOUNT_WITHDRAW, account_withdraw, methods=["POST"]),
        Route(LOGOUT, logout, methods=["POST"]),
        Route(LOGOUT_EVERYWHERE, logout_everywhere, methods=["POST"]),
        Route(CSS, css, methods=["GET"]),
    ]


def _after_sign_in(query: str) -> str:
    """The authorization request without what a fresh sign-in satisfies: ``login`` in
    ``prompt`` (other values, e.g. ``consent``, stay) and ``max_age``."""
    pairs = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "prompt":
            value = " ".join(p for p in value.split() if p != "login")
        if name == "max_age" or (name == "prompt" and not value):
            continue
        pairs.append((name, value))
    return urlencode(pairs)


def _is_id(value: str) -> bool:
    """Could be a client or family id: 1 to 64 printable ASCII characters."""
    return 0 < len(value) <= 64 and value.isascii() and value.isprintable()


def _verify_password(hasher: PasswordHasher, user: Any, password: str) -> bool:
    """Argon2id verification; the same work when the user does not exist."""
    try:
        return hasher.verify(user.password_hash if user is not None else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
