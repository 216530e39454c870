"""The pages' two cookies and the CSRF rule.

- CSRF: a random ``tokend_csrf`` cookie (HttpOnly) and, in every form, an HMAC of it and of
  the session cookie under a key derived from the system secret (signed double-submit, tied
  to the session): a token from before sign-in, or from another session, is refused. The
  CSRF cookie is replaced at every sign-in and sign-out. POSTs from another ``Origin`` are
  refused as well, and so is a body our own pages never send.
- The browser session cookie carries the session's random id (``tokend.core.accounts``);
  HttpOnly, SameSite=Lax.
- On an https issuer both cookies are ``__Host-`` cookies (Secure, Path=/, no Domain), so a
  sibling subdomain or a plain-http response cannot plant or overwrite them (RFC 6265bis
  §4.1.3.2); cookies of the unprefixed names are then ignored. (HSTS: ``web.app``.)
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.errors import InvalidRequest
from tokend.core.jose import b64url_encode
from tokend.web.pages.render import origin
from tokend.web.parsing import MAX_PAGE_FORM_BYTES, parse_page_form, read_body

SESSION_COOKIE = "tokend_session"
CSRF_COOKIE = "tokend_csrf"
HOST_PREFIX = "__Host-"  # on an https issuer
MAX_FORM_BYTES = MAX_PAGE_FORM_BYTES  # room for a whole authorization request in `next`


class Cookies:
    """The session and CSRF cookies of one issuer, and the form check that uses them."""

    def __init__(self, issuer: str, *, csrf_key: bytes, session_ttl: int) -> None:
        self.secure = issuer.startswith("https://")
        prefix = HOST_PREFIX if self.secure else ""
        self.session_name = prefix + SESSION_COOKIE
        self.csrf_name = prefix + CSRF_COOKIE
        self._issuer_origin = origin(issuer)
        self._csrf_key = csrf_key
        self._session_ttl = session_ttl

    def session_id(self, request: Request) -> str:
        """The session cookie's value as sent ("" if none or not one of ours)."""
        sid = request.cookies.get(self.session_name, "")
        return sid if len(sid) <= 64 and sid.isascii() else ""

    def csrf_token(self, cookie: str, sid: str) -> str:
        """The form token: bound to the browser's CSRF cookie and to its session, so it stops
        working when either changes (sign-in, sign-out) and is worth nothing elsewhere."""
        message = f"{cookie}\n{sid}".encode()
        return b64url_encode(hmac.new(self._csrf_key, message, "sha256").digest())

    def csrf_cookie(self, request: Request) -> str:
        """The browser's CSRF cookie if it has a usable one, else a new value."""
        value = request.cookies.get(self.csrf_name)
        if value and 20 <= len(value) <= 64 and value.isascii():
            return value
        return secrets.token_urlsafe(32)

    async def read_form(self, request: Request) -> dict[str, str] | None:
        """The POSTed form, if its Origin and CSRF token are right; else None."""
        sent_from = request.headers.get("origin")
        if sent_from is not None and sent_from != self._issuer_origin:
            return None
        try:
            # The input discipline of every endpoint (tokend.web.parsing): a body our own
            # pages never send (a repeated field, a control character, not UTF-8) is not
            # from this site.
            form = parse_page_form(await read_body(request, MAX_FORM_BYTES))
        except InvalidRequest:
            return None
        cookie = request.cookies.get(self.csrf_name)
        token = form.get("csrf_token", "")
        expected = self.csrf_token(cookie, self.session_id(request)) if cookie else ""
        if not cookie or not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return form

    def set_csrf(self, response: Response, value: str) -> None:
        response.set_cookie(
            self.csrf_name, value, httponly=True, samesite="lax", secure=self.secure, path="/"
        )

    def signed_in(self, response: Response, sid: str) -> None:
        """The new session's cookie, and a new CSRF cookie: no form token from before the
        sign-in works after it."""
        response.set_cookie(
            self.session_name,
            sid,
            max_age=self._session_ttl,
            httponly=True,
            samesite="lax",
            secure=self.secure,
            path="/",
        )
        self.set_csrf(response, secrets.token_urlsafe(32))

    def signed_out(self, response: Response) -> None:
        """No session cookie, and a new CSRF cookie."""
        response.delete_cookie(self.session_name, path="/", secure=self.secure, httponly=True)
        self.set_csrf(response, secrets.token_urlsafe(32))
