"""What every page flow uses: the paths, and ``PageKit`` (pages with a CSRF-protected form,
the refusal of a bad form, the browser's session, the sign-in form)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.accounts import Accounts, BrowserSession
from tokend.core.authorization import AuthorizationRequest
from tokend.web.pages.csrf import Cookies
from tokend.web.pages.render import Renderer, origin
from tokend.web.throttling import Network, source_address

AUTHORIZE = "/auth/v2/authorize"
LOGIN = "/auth/v2/authorize/login"
CONSENT = "/auth/v2/authorize/consent"
ACCOUNT = "/account"
ACCOUNT_REVOKE = "/account/revoke"
ACCOUNT_WITHDRAW = "/account/consents/withdraw"
LOGOUT = "/account/logout"
LOGOUT_EVERYWHERE = "/account/logout/everywhere"
DEVICE = "/device"  # RFC 8628 verification URI (and the cross-device QR's link)

# Runs a storage call where the app runs them (``web.app``: on the loop for SQLite, else
# on a bounded thread pool).
Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PageKit:
    render: Renderer
    cookies: Cookies
    accounts: Accounts
    call: Call
    trusted: Sequence[Network] = ()  # TOKEND_TRUSTED_PROXIES

    def address(self, request: Request) -> str:
        """The request's source address (``tokend.web.throttling.source_address``)."""
        return source_address(request, self.trusted)

    def form_page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        """A page with a form: its CSRF token, and the CSRF cookie the token is bound to."""
        cookie = self.cookies.csrf_cookie(request)
        token = self.cookies.csrf_token(cookie, self.cookies.session_id(request))
        response = self.render.page(template, status, csrf_token=token, **ctx)
        self.cookies.set_csrf(response, cookie)
        return response

    def forbidden(self) -> Response:
        return self.render.error(
            403, "This form has expired or did not come from this site. Go back and try again."
        )

    async def current_session(self, request: Request) -> BrowserSession | None:
        sid = self.cookies.session_id(request)
        if not sid:
            return None
        session: BrowserSession | None = await self.call(self.accounts.session, sid)
        return session

    def login_page(
        self,
        request: Request,
        next_: str,
        req: AuthorizationRequest | None,
        *,
        status: int = 200,
        error: str | None = None,
        username: str = "",
        **extra: Any,
    ) -> Response:
        """The sign-in form, which then goes on to ``next_`` (the authorization request
        ``req``; else the account page or ``/device``). ``extra``: the cross-device panel's
        context (``tokend.web.pages.crossdevice``)."""
        device = next_ == DEVICE or next_.startswith(f"{DEVICE}?")
        purpose = "to connect your other device" if device else "to manage your account"
        targets = (origin(req.redirect_uri),) if req is not None else ()
        return self.form_page(
            request,
            "login.html",
            status,
            action=LOGIN,
            next=next_,
            client_name=req.client.name if req is not None else None,
            purpose=purpose,
            error=error,
            username=username,
            form_targets=targets,
            **extra,
        )
