"""The UserInfo endpoint's domain (OIDC Core §5.3), in the Didit shape plus the standard
claims (§5.4).

``UserInfoService.userinfo(access_token)`` returns the claims object or raises
``InvalidToken`` (401) / ``InsufficientScope`` (403). The token must be a user's access
token: signed by us, ours (``iss``, ``aud``, ``typ``), unexpired, from a token family
(``sid``) that still exists and is not revoked, of a user who still exists, and granting
``openid``.

Claims by scope (``userinfo_claims``); a value that is not known is left out, never null
(§5.3.2):

=============== ===================================== ====================================
scope           Didit                                 OIDC Core §5.4
=============== ===================================== ====================================
(always)        ``sub``                               ``sub``
names, profile  ``names: {first_name, family_name,    ``given_name``, ``family_name``,
                full_name, is_verified}``             ``name``
picture,        ``picture``                           ``picture``
profile
email           ``email: {email, is_verified,         ``email_verified``
                is_primary}``
phone           ``phone: {phone_number, is_verified,  ``phone_number``,
                is_primary}``                         ``phone_number_verified``
=============== ===================================== ====================================

Didit's ``email`` object and the standard ``email`` string claim share one name; the
Didit shape is this service's contract (DESIGN.md), so ``email`` is the object and the
address is ``email.email``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tokend.core.bearer import (
    AccessTokenCheck,
    InsufficientScope,
    InvalidToken,
    RevokedAccessTokens,
    TokenVerifier,
    check_binding,
    check_not_revoked,
)
from tokend.core.clock import Clock
from tokend.core.models import Family, Policy
from tokend.core.scopes import OPENID


class UserProfile(Protocol):
    """The profile fields of a user (``tokend.core.models.User`` has them)."""

    @property
    def email(self) -> str | None: ...
    @property
    def email_verified(self) -> bool: ...
    @property
    def given_name(self) -> str | None: ...
    @property
    def family_name(self) -> str | None: ...
    @property
    def phone_number(self) -> str | None: ...
    @property
    def phone_number_verified(self) -> bool: ...
    @property
    def picture(self) -> str | None: ...


class UserInfoStore(RevokedAccessTokens, Protocol):
    def get_family_and_user(self, family_id: str) -> tuple[Family, UserProfile | None] | None:
        """The token family (revoked or not) and its user (None if the user no longer
        exists), in one read; None if the family does not exist (any more)."""
        ...


def _known(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def userinfo_claims(subject: str, scopes: Iterable[str], user: UserProfile) -> dict[str, object]:
    """The UserInfo response for ``subject`` (the ``sub`` of the token) by granted scope."""
    granted = set(scopes)
    out: dict[str, object] = {"sub": subject}
    profile = "profile" in granted
    if profile or "names" in granted:
        given, family = user.given_name, user.family_name
        full = " ".join(n for n in (given, family) if n) or None
        if full is not None:
            # Names are whatever the user or an operator entered: never verified here.
            out["names"] = _known(
                first_name=given, family_name=family, full_name=full, is_verified=False
            )
            out.update(_known(given_name=given, family_name=family, name=full))
    if (profile or "picture" in granted) and user.picture is not None:
        out["picture"] = user.picture
    if "email" in granted and user.email is not None:
        verified = bool(user.email_verified)
        out["email"] = {"email": user.email, "is_verified": verified, "is_primary": True}
        out["email_verified"] = verified
    if "phone" in granted and user.phone_number is not None:
        verified = bool(user.phone_number_verified)
        out["phone"] = {
            "phone_number": user.phone_number,
            "is_verified": verified,
            "is_primary": True,
        }
        out["phone_number"] = user.phone_number
        out["phone_number_verified"] = verified
    return out


class UserInfoService:
    __slots__ = ("_access_tokens", "_clock", "_store")

    def __init__(
        self, *, verifier: TokenVerifier, store: UserInfoStore, policy: Policy, clock: Clock
    ) -> None:
        self._access_tokens = AccessTokenCheck(verifier, policy)
        self._store = store
        self._clock = clock

    def userinfo(self, access_token: str, dpop_jkt: str | None = None) -> dict[str, object]:
        """``dpop_jkt``: the key thumbprint of the request's checked DPoP proof when the
        token came with the DPoP scheme (RFC 9449 §7), None for Bearer."""
        token, claims = self._access_tokens.check(access_token, self._clock.now())
        check_not_revoked(claims, self._store)
        check_binding(token, dpop_jkt)
        if token.family_id is None:
            # client_credentials (RFC 9068 §2.2: sub is the client): nobody's user info.
            raise InvalidToken("The access token was not issued to a user.")
        found = self._store.get_family_and_user(token.family_id)
        if found is None or found[0].revoked_at is not None:
            raise InvalidToken("The access token has been revoked.")
        family, user = found
        if family.client_id != token.client_id or family.subject != token.subject:
            raise InvalidToken()
        # OIDC Core §5.3: the UserInfo endpoint serves tokens of an OpenID request.
        if OPENID not in token.scopes:
            raise InsufficientScope(OPENID)
        if user is None:
            raise InvalidToken("The user of this access token no longer exists.")
        return userinfo_claims(token.subject, token.scopes, user)
