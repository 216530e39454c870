"""``/device``: the RFC 8628 verification page (§3.3), where a person signed in here allows
or denies a device (a TV, a CLI) or another browser (the login page's QR,
``crossdevice``).

- Sign in first (the login form of ``authorize``, with its throttling), then: type the
  code, or confirm the one the link carried (``?user_code=``, §3.3.1: shown, never looked
  up on a GET), then a consent page, then "go back to your device".
- Codes: case-insensitive, dash and spaces optional (``tokend.core.device``). A code that
  matches no live pending authorization gets one generic message and counts against the
  source address (``ThrottlePolicy.user_code``); a throttled address gets 429 with
  ``Retry-After`` before its code is looked at (§5.1: ~34.6 bits need a limit).
- Consent always asks, even for a client the person allowed before, names the client and
  the scopes, shows the code to compare, and warns plainly that the request came from
  another device (§5.4, remote phishing: someone sends the victim a code or a QR).
- Every form is a CSRF-protected POST bound to the session (``csrf``); the decision is a
  compare-and-set on a pending row (``DeviceFlow.approve``/``deny``): a second decision, or
  one after expiry, changes nothing and says so.
"""

from __future__ import annotations

import string

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokend.core.accounts import BrowserSession
from tokend.core.device import DeviceFlow, PendingDevice, format_user_code, normalize_user_code
from tokend.core.errors import TooManyAttempts
from tokend.core.throttle import Attempt, Throttle
from tokend.web.pages.render import scope_items, when
from tokend.web.pages.shared import ACCOUNT, DEVICE, PageKit

UNKNOWN = "That code is not valid, or it has expired. Check the code on your device and try again."
_MAX_ID = 32  # device_authorizations.id: base64url (tokend.core.secrets.new_id)
_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


class DevicePages:
    def __init__(self, device: DeviceFlow, throttle: Throttle, kit: PageKit) -> None:
        self._device = device
        self._throttle = throttle
        self.kit = kit

    def routes(self) -> list[Route]:
        return [
            Route(DEVICE, self.get, methods=["GET"]),
            Route(DEVICE, self.post, methods=["POST"]),
        ]

    async def get(self, request: Request) -> Response:
        typed = request.query_params.get("user_code")
        code = normalize_user_code(typed) if typed else None
        session = await self.kit.current_session(request)
        if session is None:
            next_ = f"{DEVICE}?user_code={format_user_code(code)}" if code else DEVICE
            return self.kit.login_page(request, next_, None)
        if code is None:
            error = UNKNOWN if typed else None
            return self._enter(request, session, status=400 if error else 200, error=error)
        return self.kit.form_page(
            request,
            "device.html",
            confirm=True,
            action=DEVICE,
            username=session.username,
            user_code=format_user_code(code),
        )

    async def post(self, request: Request) -> Response:
        form = await self.kit.cookies.read_form(request)
        if form is None:
            return self.kit.forbidden()
        session = await self.kit.current_session(request)
        if session is None:  # signed out in between: the CSRF token was the session's
            return self.kit.login_page(request, DEVICE, None)
        if form.get("step") == "decide":
            return await self._decide(request, form, session)
        return await self._look_up(request, form.get("user_code", ""), session)

    # -- the steps -------------------------------------------------------------------------

    async def _look_up(self, request: Request, typed: str, session: BrowserSession) -> Response:
        call = self.kit.call
        address = self.kit.address(request)
        keys = self._throttle.policy.user_code_keys(address)
        try:
            await call(self._throttle.check, keys)
        except TooManyAttempts as exc:
            return self._too_many(request, session, exc.retry_after)
        code = normalize_user_code(typed)
        if code is None:  # cannot match anything: no lookup, nothing learnt, not counted
            return self._enter(request, session, status=400, error=UNKNOWN, typed=typed)
        pending: PendingDevice | None = await call(self._device.pending, code)
        if pending is None:
            try:
                await call(self._throttle.failed, keys, Attempt(address))
            except TooManyAttempts as exc:
                return self._too_many(request, session, exc.retry_after)
            return self._enter(request, session, status=400, error=UNKNOWN, typed=typed)
        created, created_iso = when(pending.created_at)
        browser = pending.kind == "browser"
        return self.kit.form_page(
            request,
            "device_consent.html",
            action=DEVICE,
            client_name=pending.client_name,
            username=session.username,
            user_code=format_user_code(code),
            scopes=scope_items(pending.scopes),
            address=pending.address,
            created=created,
            created_iso=created_iso,
            here="phone or browser" if browser else "browser",
            there="browser" if browser else "device",
            authorization_id=pending.id,
            account_url=ACCOUNT,
        )

    async def _decide(
        self, request: Request, form: dict[str, str], session: BrowserSession
    ) -> Response:
        authorization_id = form.get("authorization", "")
        decision = form.get("decision")
        if (
            decision not in ("allow", "deny")
            or not 0 < len(authorization_id) <= _MAX_ID
            or not set(authorization_id) <= _ID_CHARS
        ):
            return self.kit.forbidden()  # not a form our pages send
        address = self.kit.address(request) or None
        if decision == "allow":
            done: bool = await self.kit.call(
                self._device.approve,
                authorization_id,
                user_id=session.user_id,
                auth_time=session.auth_time,
                address=address,
            )
        else:
            done = await self.kit.call(
                self._device.deny, authorization_id, address=address, user_id=session.user_id
            )
        if not done:
            return self.kit.render.page(
                "device_done.html",
                409,
                outcome="gone",
                title="This request is no longer waiting",
                message="It expired, or it was already allowed or denied. Nothing changed.",
                detail="If you still want to sign in, start again on your device.",
            )
        if decision == "allow":
            return self.kit.render.page(
                "device_done.html",
                outcome="allowed",
                title="You can go back to your device",
                message="You allowed the request. Your device continues by itself.",
                detail="You can close this page.",
            )
        return self.kit.render.page(
            "device_done.html",
            outcome="denied",
            title="Request denied",
            message="You denied the request: the other device gets no access to your account.",
            detail="You can close this page.",
        )

    # -- their parts -----------------------------------------------------------------------

    def _enter(
        self,
        request: Request,
        session: BrowserSession,
        *,
        status: int = 200,
        error: str | None = None,
        typed: str = "",
    ) -> Response:
        return self.kit.form_page(
            request,
            "device.html",
            status,
            confirm=False,
            action=DEVICE,
            username=session.username,
            user_code=typed[:32],
            error=error,
        )

    def _too_many(self, request: Request, session: BrowserSession, retry_after: int) -> Response:
        minutes = max(1, -(-retry_after // 60))
        wait = "a minute" if minutes == 1 else f"{minutes} minutes"
        response = self._enter(
            request,
            session,
            status=429,
            error=f"Too many wrong codes from your network. Try again in {wait}.",
        )
        response.headers["Retry-After"] = str(retry_after)
        return response
