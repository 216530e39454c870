"""Sign-in from another device on the login page of the authorize endpoint (Didit's QR
flow, DESIGN.md): beside the password form, a QR code and a link to
``/device?user_code=...`` bound to this browser's pending authorization request.

- The binding: ``DeviceFlow.start_browser`` with the SHA-256 of the validated request
  (``authorization.request_digest``); its device code, the waiting browser's secret, goes in
  an HttpOnly, SameSite=Lax cookie (Secure, ``__Secure-`` name on an https issuer) scoped to
  the authorize path, named after the request's digest so two tabs with two requests do not
  overwrite each other's. Its outcome needs the cookie AND the same request
  (``browser_outcome``): a cookie presented with another request completes nothing.
- A reload finds the live pending row through the cookie and shows the same code: a page
  view creates no row. A new row (no cookie, or it expired) counts against the source
  address (``ThrottlePolicy.device_start``); past it the page offers the password only.
- The page reloads itself (``<meta http-equiv="refresh">``, no script) while the row is
  pending: approved on the phone -> the code is issued as after a password sign-in;
  denied -> ``access_denied`` to the client; expired -> a fresh QR.
- Not offered when the request asks for a fresh sign-in (``prompt=login``, ``max_age``):
  a phone signed in earlier would not satisfy it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from tokend.core import authorization as authz
from tokend.core.clock import Clock
from tokend.core.device import DeviceFlow, format_user_code, normalize_user_code
from tokend.core.errors import TooManyAttempts
from tokend.core.throttle import Attempt, Throttle
from tokend.web.pages.shared import AUTHORIZE, DEVICE, LOGIN, PageKit

COOKIE = "tokend_xd_"  # + 16 hex digits of the request's digest
SECURE_PREFIX = "__Secure-"  # on an https issuer (Path is not "/", so not __Host-)
# Seconds between the waiting page's reloads. Each reload clears what the person was typing
# in the password form beside the QR: short enough that the page goes on soon after the
# phone's approval (which itself takes longer: unlock, scan, confirm, allow), long enough
# to type a username and password between two reloads; "Stop checking" turns it off.
REFRESH_SECONDS = 10
_MAX_COOKIE = 200


@dataclass(frozen=True, slots=True)
class Panel:
    """What the login page shows beside the password form (``login.html``)."""

    user_code: str
    link: str  # the QR's: absolute, for the phone
    href: str  # the same on this page, relative (no external link: CSP, tests)
    link_text: str
    qr_svg: Markup
    refresh_url: str
    refresh_seconds: int
    password_only_url: str
    expires_minutes: int
    reloaded: bool  # the page reloaded itself: no autofocus yanking the person's focus


@dataclass(frozen=True, slots=True)
class Step:
    """Where this browser's cross-device sign-in stands on this page view."""

    status: Literal["approved", "denied", "pending", "none"]
    user_id: str | None = None
    auth_time: float | None = None
    panel: Panel | None = None
    cookie: tuple[str, str, int] | None = None  # (name, value, max-age) to set


class CrossDevice:
    def __init__(
        self, device: DeviceFlow, throttle: Throttle, kit: PageKit, issuer: str, clock: Clock
    ) -> None:
        self._device = device
        self._throttle = throttle
        self._kit = kit
        self._issuer = issuer
        self._secure = issuer.startswith("https://")
        self._clock = clock

    def cookie_name(self, request_hash: bytes) -> str:
        prefix = SECURE_PREFIX if self._secure else ""
        return f"{prefix}{COOKIE}{request_hash[:8].hex()}"

    async def step(self, request: Request, req: authz.AuthorizationRequest, query: str) -> Step:
        """The outcome for this browser and request, or the panel to show (starting a
        cross-device sign-in if none is pending)."""
        if not authz.cross_device_allowed(req):
            return Step("none")
        call = self._kit.call
        request_hash = authz.request_digest(req)
        name = self.cookie_name(request_hash)
        device_code, user_code, expires_at = _parse(request.cookies.get(name, ""))
        if device_code:
            outcome = await call(self._device.browser_outcome, device_code, request_hash)
            if outcome.status == "approved":
                return Step("approved", outcome.user_id, outcome.auth_time)
            if outcome.status == "denied":
                return Step("denied")
            if outcome.status == "pending":
                panel = self._panel(query, user_code, expires_at, reloaded=True)
                return Step("pending", panel=panel)
        address = self._kit.address(request)
        try:
            # Counted before the row is made (checked=False: a full window refuses here).
            await call(
                self._throttle.failed,
                self._throttle.policy.device_start_keys(address),
                Attempt(address),
                checked=False,
            )
        except TooManyAttempts:
            return Step("none")
        started = await call(
            self._device.start_browser,
            req.client,
            req.scopes,
            request_hash=request_hash,
            address=address or None,
        )
        expires = int(self._clock.now()) + started.expires_in
        code = normalize_user_code(started.user_code) or ""
        value = f"{started.device_code}.{code}.{expires}"
        panel = self._panel(query, code, expires, reloaded=False)
        return Step("pending", panel=panel, cookie=(name, value, started.expires_in))

    def set_cookie(self, response: Response, cookie: tuple[str, str, int]) -> None:
        name, value, max_age = cookie
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=AUTHORIZE,
            httponly=True,
            secure=self._secure,
            samesite="lax",
        )

    def clear_cookie(self, response: Response, req: authz.AuthorizationRequest) -> None:
        name = self.cookie_name(authz.request_digest(req))
        response.delete_cookie(name, path=AUTHORIZE, secure=self._secure, httponly=True)

    def _panel(self, query: str, user_code: str, expires_at: int, *, reloaded: bool) -> Panel:
        formatted = format_user_code(user_code)
        link = f"{self._issuer}{DEVICE}?user_code={formatted}"
        qr = segno.make(link, error="m")
        svg = qr.svg_inline(
            scale=4, dark="#000", light="#fff", omitsize=True, svgclass=None, lineclass=None
        )
        minutes = max(1, math.ceil((expires_at - self._clock.now()) / 60))
        return Panel(
            user_code=formatted,
            link=link,
            href=f"{DEVICE}?user_code={formatted}",
            link_text=f"{self._issuer}{DEVICE}",
            qr_svg=Markup(svg),  # noqa: S704 - segno's own SVG of our own link: no input markup
            refresh_url=f"{AUTHORIZE}?{query}",
            refresh_seconds=REFRESH_SECONDS,
            password_only_url=f"{LOGIN}?{query}",
            expires_minutes=minutes,
            reloaded=reloaded,
        )


def _parse(value: str) -> tuple[str, str, int]:
    """The cookie's (device code, user code, expiry), or empty values if it is not ours."""
    if not value or len(value) > _MAX_COOKIE or not value.isascii():
        return "", "", 0
    parts = value.split(".")
    if len(parts) != 3 or not parts[2].isdigit():
        return "", "", 0
    code = normalize_user_code(parts[1])
    if code is None:
        return "", "", 0
    return parts[0], code, int(parts[2])
