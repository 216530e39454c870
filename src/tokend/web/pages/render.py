"""How the pages answer: HTML from the Jinja templates under a strict Content-Security-Policy,
redirects named by the issuer, the stylesheet, and the wording of scopes and dates."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

CSS = "/auth/static/tokend.css"

_WEB = Path(__file__).parent.parent
_STATIC = _WEB / "static"
_TEMPLATES = _WEB / "templates"

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


def with_query(uri: str, params: dict[str, str | None]) -> str:
    """Add parameters to a redirect URI, keeping the query it already has (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def origin(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"  # a native app's private-use scheme (RFC 8252 §7.1)


def when(t: float) -> tuple[str, str]:
    """A time as shown on a page, and as its ``datetime`` attribute."""
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%d %b %Y, %H:%M UTC"), d.isoformat()


def scope_items(scopes: tuple[str, ...]) -> list[dict[str, str]]:
    """The scopes in words, each wording once."""
    items, seen = [], set()
    for s in scopes:
        title, detail = SCOPE_WORDS.get(s, (f"Access “{s}”", ""))
        if title not in seen:
            seen.add(title)
            items.append({"title": title, "detail": detail})
    return items


class Renderer:
    """Pages, redirects and the stylesheet of one issuer."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.css_bytes = (_STATIC / "tokend.css").read_bytes()
        self.css_url = f"{CSS}?v={hashlib.sha256(self.css_bytes).hexdigest()[:12]}"
        self._env = Environment(
            loader=FileSystemLoader(_TEMPLATES),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
        )

    def page(
        self,
        template: str,
        status: int = 200,
        *,
        form_targets: tuple[str, ...] = (),
        **context: Any,
    ) -> Response:
        """The template as an HTML page. Strict CSP (no inline script or style, no external
        asset); ``form-action`` also names ``form_targets``, since browsers apply it to the
        redirect that ends a form submission."""
        html = self._env.get_template(template).render(css_url=self.css_url, **context)
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
        return Response(html, status, headers, "text/html; charset=utf-8")

    def error(self, status: int, message: str) -> Response:
        return self.page("error.html", status, message=message)

    def redirect(self, url: str, status: int = 302) -> Response:
        # Our own pages are named by the issuer, never by the request's Host header.
        if url.startswith("/"):
            url = self.issuer + url
        return RedirectResponse(url, status, headers={"Cache-Control": "no-store"})

    async def css(self, request: Request) -> Response:
        return Response(
            self.css_bytes,
            200,
            {"Cache-Control": "public, max-age=31536000, immutable"},
            "text/css; charset=utf-8",
        )
