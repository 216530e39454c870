"""Token revocation, RFC 7009, free of HTTP.

``RevocationService.revoke(credentials, params)`` returns nothing or raises ``OAuthError``
(``invalid_client``, or ``invalid_request`` without a ``token``). The rules:

- The client authenticates exactly as at the token endpoint (``tokend.core.client_auth``):
  confidential clients with their secret, public clients with their ``client_id`` alone
  (RFC 7009 §2.1 allows this; §5 notes the trade-off).
- A refresh token ends its whole family (the grant): every refresh token rotated from it and
  every access token issued from it, which carry the family as ``sid`` and are refused by
  userinfo and introspection once the family is revoked (§2.1: "SHOULD also invalidate all
  access tokens based on the same authorization grant"). Any token of the family will do,
  spent ones too: a client that lost a rotation response can still end its session.
- An access token (a JWT we signed and that has not expired) goes on the deny list by its
  ``jti`` until its ``exp``; the family it came from stays valid (§2.1 makes that a MAY).
- §2.1: "the authorization server first validates the client credentials ... and then
  verifies whether the token was issued to the client making the revocation request": a
  token of another client is left alone (and the attempt recorded as a security event).
  Anyone can make that attempt (a public client's id is no secret), so it is aggregated:
  at most one row per (client, source address) per ``event_window`` seconds, with a count
  (``Transaction.count_event``); a flood adds no rows.
- §2.2: "invalid tokens do not cause an error response": unknown, malformed, expired,
  foreign and already revoked tokens all end in the same silent success.
- ``token_type_hint`` is optional, and unknown values are ignored (§2.1). The hint is never
  needed: refresh tokens (``tkd_rt_`` + checksum) and access tokens (compact JWS) cannot be
  mistaken for each other, so every token is looked up where it can exist, whatever the
  hint says (which §2.1 asks for: "extend its search across all of its supported token
  types"); ``unsupported_token_type`` is therefore never returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from tokend.core.bearer import AccessTokenCheck, InvalidToken, TokenVerifier
from tokend.core.client_auth import authenticate_client
from tokend.core.clock import Clock
from tokend.core.events import EventKind
from tokend.core.grants import require
from tokend.core.models import Client, ClientCredentials, Policy, SecurityEvent, StoredRefreshToken
from tokend.core.ports import Transaction
from tokend.core.secrets import REFRESH_TOKEN_PREFIX, hash_secret, is_well_formed
from tokend.core.throttle import event_key, network_of

REVOKED_BY_CLIENT = "client"  # token_families.revoked_reason
MAX_JTI_LENGTH = 64  # the deny list's column


class RevocationStore(Protocol):
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction (``tokend.core.ports.Store``)."""
        ...

    def get_client(self, client_id: str) -> Client | None:
        """The client, or None if unknown."""
        ...

    def peek_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        """The token with this hash and its family, or None: a plain read that takes no
        lock (an unknown token costs no write transaction)."""
        ...

    def revoke_access_token(
        self,
        jti: str,
        *,
        client_id: str,
        at: float,
        expires_at: float,
        event: SecurityEvent | None = None,
    ) -> bool:
        """Deny-list the access token until ``expires_at``; False if it already was. With
        ``event``, record it in the same transaction when the token is newly deny-listed."""
        ...


class RevocationService:
    __slots__ = ("_access_tokens", "_clock", "_event_window", "_store")

    def __init__(
        self,
        *,
        store: RevocationStore,
        verifier: TokenVerifier,
        policy: Policy,
        clock: Clock,
        event_window: float = 3600.0,
    ) -> None:
        self._store = store
        self._event_window = event_window
        self._access_tokens = AccessTokenCheck(verifier, policy)
        self._clock = clock

    def revoke(
        self, credentials: ClientCredentials, params: Mapping[str, str], *, address: str = ""
    ) -> None:
        """``address``: the request's source address (for the audit trail's aggregation)."""
        client = authenticate_client(credentials, self._store.get_client)
        token = require(params, "token")
        now = self._clock.now()
        if is_well_formed(token, REFRESH_TOKEN_PREFIX):
            self._revoke_refresh_token(client, token, now, address)
        else:
            self._revoke_access_token(client, token, now, address)

    def _revoke_refresh_token(self, client: Client, token: str, now: float, address: str) -> None:
        stored = self._store.peek_refresh_token(hash_secret(token))
        if stored is None:
            return
        family = stored.family
        if family.client_id != client.client_id:
            self._record_wrong_client(
                client, family.client_id, now, family_id=family.id, address=address
            )
            return
        if family.revoked_at is not None:
            return  # already revoked: nothing to do, and nothing to say (§2.2)
        with self._store.transaction() as tx:
            if tx.revoke_family(family.id, at=now, reason=REVOKED_BY_CLIENT):
                tx.record_event(
                    SecurityEvent(
                        EventKind.TOKEN_REVOKED_BY_CLIENT,
                        now,
                        client_id=client.client_id,
                        family_id=family.id,
                        user_id=family.user_id,
                        detail={"token_type": "refresh_token"},
                        address=address or None,
                    )
                )

    def _revoke_access_token(self, client: Client, token: str, now: float, address: str) -> None:
        try:
            access, claims = self._access_tokens.check(token, now)
        except InvalidToken:
            return  # not ours, not an access token, or already expired
        if access.client_id != client.client_id:
            self._record_wrong_client(
                client, access.client_id, now, family_id=access.family_id, address=address
            )
            return
        jti = claims.get("jti")
        if not (isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH):
            return  # every token we mint has one; a token without it cannot be deny-listed
        self._store.revoke_access_token(
            jti,
            client_id=client.client_id,
            at=now,
            expires_at=access.expires_at,
            event=SecurityEvent(
                EventKind.TOKEN_REVOKED_BY_CLIENT,
                now,
                client_id=client.client_id,
                family_id=access.family_id,
                # The token's ``sub`` (pairwise for some clients): not a user id.
                detail={"token_type": "access_token", "sub": access.subject},
                address=address or None,
            ),
        )

    def _record_wrong_client(
        self,
        client: Client,
        owner_client_id: str,
        now: float,
        *,
        family_id: str | None,
        address: str,
    ) -> None:
        """A client holds another client's token: worth an operator's look, never an answer.
        One row per (client, address) per window, counting the attempts."""
        network = network_of(address)
        with self._store.transaction() as tx:
            tx.count_event(
                SecurityEvent(
                    EventKind.REVOCATION_WRONG_CLIENT,
                    now,
                    client_id=client.client_id,
                    family_id=family_id,
                    detail={"owner_client_id": owner_client_id},
                    address=address or None,
                ),
                key=event_key(EventKind.REVOCATION_WRONG_CLIENT, client.client_id, network),
                window=self._event_window,
            )
