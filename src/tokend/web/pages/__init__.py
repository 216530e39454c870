"""The pages a person sees: the authorize endpoint with its sign-in and consent steps
(OIDC Core §3.1.2, RFC 6749 §4.1), and ``/account`` to see and revoke sessions.

One module per concern, and ``page_routes`` the one door ``web.app`` calls:

- ``authorize``: authorize, login, consent (the flow that ends with a code);
- ``account``: ``/account`` and its forms (revoke, withdraw, sign out, sign out everywhere);
- ``device``: ``/device``, where a person allows another device (RFC 8628 §3.3);
- ``crossdevice``: the login page's QR code, bound to the browser's authorization request;
- ``csrf``: the two cookies (``__Host-`` names on an https issuer) and the CSRF rule;
- ``render``: the Jinja templates under a strict CSP, redirects, the stylesheet;
- ``shared``: the paths, and what both flows use (the sign-in form, the browser's session).

The rules themselves (the password check, sessions, consent) are the accounts service's,
``tokend.core.accounts``, which ``tokend.runtime`` builds.

Security habits here:
- CSRF: signed double-submit tied to the session, and the ``Origin`` check (``csrf``).
- The browser session is a random 256-bit id in an HttpOnly, SameSite=Lax cookie; only its
  SHA-256 is stored; it is replaced at every sign-in (no fixation). It ends at sign-out,
  "sign out everywhere", a password change and ``tokend tokens revoke --user``.
- Strict CSP (no inline script or style, no external asset), frame-ancestors none,
  Referrer-Policy same-origin, no-store. ``form-action`` also names the client's redirect
  origin, since browsers apply it to the redirect that ends a form submission.
- One generic error for a wrong username or password, and the same Argon2id work either way.
- Pending authorization requests are carried as the original query string and validated
  again at every step, so nothing a page posts back can widen or alter them.
"""

from __future__ import annotations

from starlette.routing import Route

from tokend.keys.material import derive
from tokend.runtime import Runtime
from tokend.web.pages.account import AccountPages
from tokend.web.pages.authorize import AuthorizeFlow
from tokend.web.pages.csrf import Cookies
from tokend.web.pages.device import DevicePages
from tokend.web.pages.render import CSS, Renderer
from tokend.web.pages.shared import Call, PageKit


def page_routes(rt: Runtime, call: Call) -> list[Route]:
    issuer = rt.policy.issuer
    render = Renderer(issuer)
    cookies = Cookies(
        issuer,
        csrf_key=derive(rt.settings.resolve_secret_key(), "csrf"),
        session_ttl=rt.accounts.session_ttl,
    )
    kit = PageKit(render, cookies, rt.accounts, call, rt.settings.trusted_proxy_networks)
    return [
        *AuthorizeFlow(rt, kit).routes(),
        *AccountPages(kit).routes(),
        *DevicePages(rt.device, rt.throttle, kit).routes(),
        Route(CSS, render.css, methods=["GET"]),
    ]
