"""``/account``: the signed-in user's applications (token families) and consents, and the
forms that revoke one, withdraw one, sign out, or sign out everywhere. Every form is
CSRF-checked (``csrf``) and answers with a 303 back to ``/account``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokend.core.accounts import ConsentView, FamilyView
from tokend.web.pages.render import scope_items, when
from tokend.web.pages.shared import (
    ACCOUNT,
    ACCOUNT_REVOKE,
    ACCOUNT_WITHDRAW,
    LOGOUT,
    LOGOUT_EVERYWHERE,
    PageKit,
)


class AccountPages:
    def __init__(self, kit: PageKit) -> None:
        self.kit = kit

    def routes(self) -> list[Route]:
        return [
            Route(ACCOUNT, self.account, methods=["GET"]),
            Route(ACCOUNT_REVOKE, self.revoke, methods=["POST"]),
            Route(ACCOUNT_WITHDRAW, self.withdraw, methods=["POST"]),
            Route(LOGOUT, self.logout, methods=["POST"]),
            Route(LOGOUT_EVERYWHERE, self.logout_everywhere, methods=["POST"]),
        ]

    async def account(self, request: Request) -> Response:
        session = await self.kit.current_session(request)
        if session is None:
            return self.kit.login_page(request, ACCOUNT, None)
        accounts, call = self.kit.accounts, self.kit.call
        families = await call(accounts.active_families, session.user_id)
        consents = await call(accounts.consents, session.user_id)
        return self.kit.form_page(
            request,
            "account.html",
            username=session.username,
            families=[_family_row(f) for f in families],
            consents=[_consent_row(c) for c in consents],
            notice=None,
            revoke_url=ACCOUNT_REVOKE,
            withdraw_url=ACCOUNT_WITHDRAW,
            logout_url=LOGOUT,
            logout_everywhere_url=LOGOUT_EVERYWHERE,
        )

    async def revoke(self, request: Request) -> Response:
        return await self._act_on(request, "family_id", self.kit.accounts.revoke_family)

    async def withdraw(self, request: Request) -> Response:
        return await self._act_on(request, "client_id", self.kit.accounts.withdraw_consent)

    async def logout(self, request: Request) -> Response:
        form = await self.kit.cookies.read_form(request)
        if form is None:
            return self.kit.forbidden()
        sid = self.kit.cookies.session_id(request)
        if sid:
            await self.kit.call(self.kit.accounts.end_session, sid)
        return self._signed_out()

    async def logout_everywhere(self, request: Request) -> Response:
        """End every browser session of the user, this one too. The applications keep the
        access the user gave them (OIDC Core §11: offline access outlives the sign-in);
        the account page revokes those one by one."""
        form = await self.kit.cookies.read_form(request)
        if form is None:
            return self.kit.forbidden()
        session = await self.kit.current_session(request)
        if session is not None:
            await self.kit.call(
                self.kit.accounts.sign_out_everywhere,
                session.user_id,
                address=self.kit.address(request),
            )
        return self._signed_out()

    async def _act_on(self, request: Request, field: str, action: Callable[..., Any]) -> Response:
        """A form that acts on one of the signed-in user's things by its id:
        ``action(user_id, id)``; back to /account."""
        form = await self.kit.cookies.read_form(request)
        if form is None:
            return self.kit.forbidden()
        session = await self.kit.current_session(request)
        if session is None:
            return self.kit.render.redirect(ACCOUNT, 303)
        value = form.get(field, "")
        if _is_id(value):  # else nothing has it (and no NUL reaches the database)
            await self.kit.call(action, session.user_id, value, address=self.kit.address(request))
        return self.kit.render.redirect(ACCOUNT, 303)

    def _signed_out(self) -> Response:
        response = self.kit.render.redirect(ACCOUNT, 303)
        self.kit.cookies.signed_out(response)
        return response


def _family_row(f: FamilyView) -> dict[str, Any]:
    granted, granted_iso = when(f.granted_at)
    last_used, last_used_iso = when(f.last_used_at)
    return {
        "family_id": f.family_id,
        "client_name": f.client_name,
        "scope": f.scope,
        "granted": granted,
        "granted_iso": granted_iso,
        "last_used": last_used,
        "last_used_iso": last_used_iso,
    }


def _consent_row(c: ConsentView) -> dict[str, Any]:
    granted, granted_iso = when(c.granted_at)
    return {
        "client_id": c.client_id,
        "client_name": c.client_name,
        "scopes": [item["title"] for item in scope_items(c.scopes)],
        "granted": granted,
        "granted_iso": granted_iso,
    }


def _is_id(value: str) -> bool:
    """Could be a client or family id: 1 to 64 printable ASCII characters."""
    return 0 < len(value) <= 64 and value.isascii() and value.isprintable()
