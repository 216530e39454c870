"""Starting a token family: what the end of a successful authorization produces.

Used by the ``authorization_code`` grant and by ``tokend tokens issue`` (which mints grants
as if the user had completed the authorize step, DESIGN.md). A refresh token is issued only
when ``offline``/``offline_access`` was granted and the client may use the refresh grant.
"""

from __future__ import annotations

from tokend.core.minting import TokenMinter
from tokend.core.models import Client, Family, Policy, TokenResponse
from tokend.core.ports import Store, Transaction
from tokend.core.scopes import wants_refresh_token
from tokend.core.secrets import hash_secret, new_id, new_refresh_token


class FamilyIssuer:
    __slots__ = ("_minter", "_policy", "_store")

    def __init__(self, *, store: Store, minter: TokenMinter, policy: Policy) -> None:
        self._store = store
        self._minter = minter
        self._policy = policy

    def start(
        self,
        tx: Transaction,
        *,
        client: Client,
        user_id: str,
        subject: str,
        scopes: tuple[str, ...],
        now: float,
        auth_time: float | None = None,
        family_id: str | None = None,
        dpop_jkt: str | None = None,
    ) -> tuple[Family, str | None]:
        """Create the family (and its first refresh token, if granted) inside ``tx``; with
        ``dpop_jkt``, its refresh tokens are bound to that DPoP key (RFC 9449 §5)."""
        family = Family(
            id=family_id or new_id(),
            client_id=client.client_id,
            user_id=user_id,
            subject=subject,
            scopes=scopes,
            created_at=now,
            expires_at=now + self._policy.family_ttl(client),
            auth_time=auth_time if auth_time is not None else now,
            dpop_jkt=dpop_jkt,
        )
        tx.create_family(family)
        refresh_token = None
        if wants_refresh_token(scopes) and "refresh_token" in client.grant_types:
            refresh_token = new_refresh_token()
            tx.insert_refresh_token(
                hash_secret(refresh_token),
                family_id=family.id,
                created_at=now,
                expires_at=min(now + self._policy.idle_ttl(client), family.expires_at),
            )
        return family, refresh_token

    def respond(
        self,
        *,
        client: Client,
        family: Family,
        refresh_token: str | None,
        now: float,
        nonce: str | None = None,
        dpop_jkt: str | None = None,
    ) -> TokenResponse:
        """The token response; with ``dpop_jkt``, a DPoP-bound access token."""
        return self._minter.respond(
            client=client,
            subject=family.subject,
            scopes=family.scopes,
            now=now,
            ttl=self._policy.access_ttl(client),
            refresh_token=refresh_token,
            family_id=family.id,
            auth_time=family.auth_time,
            nonce=nonce,
            with_id_token=True,
            dpop_jkt=dpop_jkt,
        )

    def issue(
        self,
        *,
        client: Client,
        user_id: str,
        subject: str,
        scopes: tuple[str, ...],
        now: float,
        auth_time: float | None = None,
        nonce: str | None = None,
    ) -> TokenResponse:
        """Start a family in its own transaction and answer as the token endpoint would."""
        with self._store.transaction() as tx:
            family, refresh_token = self.start(
                tx,
                client=client,
                user_id=user_id,
                subject=subject,
                scopes=scopes,
                now=now,
                auth_time=auth_time,
            )
        return self.respond(
            client=client, family=family, refresh_token=refresh_token, now=now, nonce=nonce
        )
