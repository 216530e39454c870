"""The authorize endpoint with its sign-in and consent steps (OIDC Core §3.1.2, RFC 6749
§4.1).

- A pending authorization request is carried as the original query string and validated
  again at every step, so nothing a page posts back can widen or alter it.
- Sign-in: one generic error for a wrong username or password, and the same Argon2id work
  either way (``tokend.core.accounts``). The check runs on a thread, at most
  ``TOKEND_PASSWORD_HASH_CONCURRENCY`` at once in this process. Abuse limits
  (``tokend.core.throttle``): a throttled (username, address) or address is refused before
  the password is looked at; a failure counts; success adds nothing.
- Every sign-in starts a new browser session (no fixation) and a new CSRF cookie.
- Beside the password form, sign-in from another device (``crossdevice``): the login page
  shows a QR code, reloads itself while it waits, and finishes exactly as a password
  sign-in does once a phone allowed the request. ``GET`` on the login path shows the
  password form alone (no QR, no reloads).
- The login form's ``next`` is an authorization request, the account page, or ``/device``
  (with a well-formed user code at most): nothing else, so it is no open redirect.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokend.core import authorization as authz
from tokend.core.accounts import BrowserSession
from tokend.core.device import format_user_code, normalize_user_code
from tokend.core.errors import InvalidRequest, TooManyAttempts
from tokend.core.throttle import Attempt
from tokend.runtime import Runtime
from tokend.web.pages.crossdevice import CrossDevice
from tokend.web.pages.render import origin, scope_items, with_query
from tokend.web.pages.shared import ACCOUNT, AUTHORIZE, CONSENT, DEVICE, LOGIN, PageKit
from tokend.web.parsing import query_pairs
from tokend.web.throttling import source_address

INCORRECT = "Incorrect username or password."


class AuthorizeFlow:
    """``GET`` authorize, then ``POST`` login and consent as the request needs them."""

    def __init__(self, rt: Runtime, kit: PageKit) -> None:
        self.kit = kit
        self.issuer = rt.policy.issuer
        self._clock = rt.clock
        self._get_client = rt.store.get_client
        self._subjects = rt.subjects
        self._codes = rt.codes
        self._throttle = rt.throttle
        self._trusted = rt.settings.trusted_proxy_networks
        # At most this many Argon2id checks (64 MiB each) at once in this process: a flood
        # of sign-ins waits here, as coroutines, instead of exhausting memory and threads.
        self._hash_limiter = anyio.CapacityLimiter(rt.settings.password_hash_concurrency)
        self._cross = CrossDevice(rt.device, rt.throttle, kit, self.issuer, rt.clock)

    def routes(self) -> list[Route]:
        return [
            Route(AUTHORIZE, self.authorize, methods=["GET"]),
            Route(LOGIN, self.login, methods=["POST"]),
            Route(LOGIN, self.password_only, methods=["GET"]),
            Route(CONSENT, self.consent, methods=["POST"]),
        ]

    # -- the three steps -------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        raw_query: bytes = request.scope["query_string"]
        req = await self._validate(raw_query, 302)
        if isinstance(req, Response):
            return req
        session = await self.kit.current_session(request)
        query = raw_query.decode("utf-8")  # valid: _validate() decoded it
        if session is None or authz.needs_login(req, session.auth_time, self._clock.now()):
            if "none" in req.prompt:
                return self._to_client(req.error("login_required", "The user is not signed in."))
            return await self._login_step(request, req, query)
        return await self._consent_or_finish(request, req, session, query, 302)

    async def password_only(self, request: Request) -> Response:
        """The login page without the cross-device panel and its reloads ("Stop checking")."""
        raw_query: bytes = request.scope["query_string"]
        req = await self._validate(raw_query, 302)
        if isinstance(req, Response):
            return req
        query = raw_query.decode("utf-8")
        return self.kit.login_page(request, f"{AUTHORIZE}?{_after_sign_in(query)}", req)

    async def login(self, request: Request) -> Response:
        form = await self.kit.cookies.read_form(request)
        if form is None:
            return self.kit.forbidden()
        next_ = form.get("next", "")
        req: authz.AuthorizationRequest | None = None
        if next_.startswith(f"{AUTHORIZE}?"):
            pending = await self._validate(next_[len(AUTHORIZE) + 1 :], 303)
            if isinstance(pending, Response):
                return pending
            req = pending
        elif next_ != ACCOUNT and not is_device_next(next_):
            return self.kit.forbidden()
        username = form.get("username", "").strip()
        return await self._sign_in(request, next_, req, username, form.get("password", ""))

    async def consent(self, request: Request) -> Response:
        form = await self.kit.cookies.read_form(request)
        if form is None:
            return self.kit.forbidden()
        query = form.get("request", "")
        req = await self._validate(query, 303)
        if isinstance(req, Response):
            return req
        session = await self.kit.current_session(request)
        if session is None:
            return self.kit.login_page(request, f"{AUTHORIZE}?{query}", req)
        if form.get("decision") != "allow":
            return self._to_client(req.error("access_denied", "The user denied access."), 303)
        await self.kit.call(
            self.kit.accounts.save_consent, session.user_id, req.client.client_id, req.scopes
        )
        return await self._finish(req, session.user_id, session.auth_time, 303)

    # -- their parts -----------------------------------------------------------------------

    async def _login_step(
        self, request: Request, req: authz.AuthorizationRequest, query: str
    ) -> Response:
        """The login page, with the cross-device panel; or, once another device decided,
        the end of this authorization request."""
        step = await self._cross.step(request, req, query)
        if step.status == "approved" and step.user_id is not None and step.auth_time is not None:
            response = await self._finish(req, step.user_id, step.auth_time, 302)
        elif step.status == "denied":
            err = req.error("access_denied", "The user denied the sign-in on another device.")
            response = self._to_client(err)
        else:
            # The sign-in about to happen satisfies prompt=login and max_age: the request
            # the form carries must not ask for them again, or signing in would loop.
            next_ = f"{AUTHORIZE}?{_after_sign_in(query)}"
            response = self.kit.login_page(request, next_, req, cross=step.panel)
            if step.cookie is not None:
                self._cross.set_cookie(response, step.cookie)
            return response
        self._cross.clear_cookie(response, req)
        return response

    async def _validate(
        self, query: str | bytes, status: int
    ) -> authz.AuthorizationRequest | Response:
        """The authorization request, or the answer to a bad one: an error page if it cannot
        be sent back to the client, else a redirect (``status``) with the error."""
        try:
            try:
                pairs = query_pairs(query)
            except InvalidRequest as exc:  # too long, too many parameters, not UTF-8
                raise authz.FatalAuthorizationError(exc.description) from None
            req: authz.AuthorizationRequest = await self.kit.call(
                authz.validate, pairs, self._get_client
            )
        except authz.FatalAuthorizationError as exc:
            return self.kit.render.error(400, exc.description)
        except authz.RedirectableError as err:
            return self._to_client(err, status)
        return req

    async def _sign_in(
        self,
        request: Request,
        next_: str,
        req: authz.AuthorizationRequest | None,
        username: str,
        password: str,
    ) -> Response:
        accounts, call = self.kit.accounts, self.kit.call
        address = source_address(request, self._trusted)
        keys = self._throttle.policy.login_keys(username, address)
        try:
            await call(self._throttle.check, keys)
        except TooManyAttempts as exc:
            return self._too_many_attempts(request, next_, req, username, exc.retry_after)
        user = await call(accounts.user_named, username)
        user = await anyio.to_thread.run_sync(
            accounts.check_password, user, password, limiter=self._hash_limiter
        )
        if user is None:
            await call(self._throttle.failed, keys, Attempt(address, username=username))
            return self.kit.login_page(
                request, next_, req, status=400, error=INCORRECT, username=username[:255]
            )
        sid = await call(
            accounts.start_session, user.id, replacing=self.kit.cookies.session_id(request)
        )
        response = self.kit.render.redirect(next_, 303)
        self.kit.cookies.signed_in(response, sid)
        return response

    def _too_many_attempts(
        self,
        request: Request,
        next_: str,
        req: authz.AuthorizationRequest | None,
        username: str,
        retry_after: int,
    ) -> Response:
        minutes = max(1, -(-retry_after // 60))
        wait = "a minute" if minutes == 1 else f"{minutes} minutes"
        response = self.kit.login_page(
            request,
            next_,
            req,
            status=429,
            error=f"Too many failed sign-in attempts. Try again in {wait}.",
            username=username[:255],
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    async def _consent_or_finish(
        self,
        request: Request,
        req: authz.AuthorizationRequest,
        session: BrowserSession,
        query: str,
        status: int,
    ) -> Response:
        accounts = self.kit.accounts
        granted = await self.kit.call(accounts.consent, session.user_id, req.client.client_id)
        if not authz.needs_consent(req, granted):
            return await self._finish(req, session.user_id, session.auth_time, status)
        if "none" in req.prompt:
            return self._to_client(req.error("consent_required", "Consent is required."), status)
        return self.kit.form_page(
            request,
            "consent.html",
            action=CONSENT,
            client_name=req.client.name,
            username=session.username,
            scopes=scope_items(req.scopes),
            request_query=query,
            account_url=ACCOUNT,
            form_targets=(origin(req.redirect_uri),),
        )

    async def _finish(
        self, req: authz.AuthorizationRequest, user_id: str, auth_time: float, status: int
    ) -> Response:
        """Issue the code and send the browser back to the client with it: after a sign-in
        here (the session's user and auth_time) or on another device (the approver's)."""
        code = await self.kit.call(
            self._codes.issue,
            req,
            user_id=user_id,
            subject=self._subjects.subject(req.client, user_id),
            auth_time=auth_time,
            now=self._clock.now(),
        )
        params = {"code": code, "state": req.state, "iss": self.issuer}
        return self.kit.render.redirect(with_query(req.redirect_uri, params), status)

    def _to_client(self, err: authz.RedirectableError, status: int = 302) -> Response:
        """The error, to the client's redirect URI (RFC 6749 §4.1.2.1, RFC 9207 ``iss``)."""
        params = {
            "error": err.error,
            "error_description": err.description,
            "state": err.state,
            "iss": self.issuer,
        }
        return self.kit.render.redirect(with_query(err.redirect_uri, params), status)


def is_device_next(next_: str) -> bool:
    """Whether a login form may go on to ``next_`` on the /device side: ``/device`` itself,
    or ``/device?user_code=`` with a well-formed code written as the pages write it."""
    if next_ == DEVICE:
        return True
    prefix = f"{DEVICE}?user_code="
    if not next_.startswith(prefix):
        return False
    code = normalize_user_code(next_[len(prefix) :])
    return code is not None and next_[len(prefix) :] == format_user_code(code)


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
