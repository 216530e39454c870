"""The refresh token grant, RFC 6749 §6, with rotation and reuse detection (RFC 9700 §4.14.2).

Rules (DESIGN.md, "Refresh token rules"), each enforced below where it is quoted:

- rotation: the presented token is spent and exactly one successor issued, atomically;
- reuse of a spent token after the grace window revokes the whole family;
- inside the grace window the same client gets the same successor back while it is unspent;
- the family's absolute expiry is never extended; each token also has an idle expiry;
- ``scope`` may only narrow; the family keeps its original scope;
- a token presented by another client than its own is ``invalid_grant``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import ClassVar

from tokend.core.errors import InvalidGrant, OAuthError
from tokend.core.grants import require
from tokend.core.minting import TokenMinter
from tokend.core.models import Client, Policy, SecurityEvent, StoredRefreshToken, TokenResponse
from tokend.core.ports import Store, Transaction
from tokend.core.scopes import narrow, parse_scope
from tokend.core.secrets import REFRESH_TOKEN_PREFIX, derive_successor, hash_secret, is_well_formed

log = logging.getLogger("tokend.security")

EVENT_REUSE = "refresh_token_reuse"
EVENT_WRONG_CLIENT = "refresh_token_wrong_client"


class RefreshTokenGrant:
    grant_type: ClassVar[str] = "refresh_token"

    __slots__ = ("_derivation_key", "_minter", "_policy", "_store")

    def __init__(
        self, *, store: Store, minter: TokenMinter, policy: Policy, derivation_key: bytes
    ) -> None:
        self._store = store
        self._minter = minter
        self._policy = policy
        self._derivation_key = derivation_key

    def handle(self, client: Client, params: Mapping[str, str], now: float) -> TokenResponse:
        presented = require(params, "refresh_token")
        requested = parse_scope(params.get("scope"))
        if not is_well_formed(presented, REFRESH_TOKEN_PREFIX):
            raise InvalidGrant()  # typo, truncation or not ours: no database work at all
        presented_hash = hash_secret(presented)
        successor = derive_successor(self._derivation_key, presented)
        successor_hash = hash_secret(successor)

        rejection: OAuthError | None = None
        with self._store.transaction() as tx:
            stored = tx.find_refresh_token(presented_hash)
            if stored is None:
                raise InvalidGrant()
            family = stored.family
            if family.client_id != client.client_id:
                # RFC 6749 §6: "the refresh token is bound to the client to which it was issued".
                tx.record_event(
                    SecurityEvent(
                        EVENT_WRONG_CLIENT,
                        now,
                        client_id=client.client_id,
                        family_id=family.id,
                        user_id=family.user_id,
                        detail={"owner_client_id": family.client_id},
                    )
                )
                rejection = InvalidGrant()
            elif family.revoked_at is not None:
                raise InvalidGrant("The refresh token has been revoked.")
            elif now >= family.expires_at or (stored.spent_at is None and now >= stored.expires_at):
                # Idle expiry is for a token left unused; a spent one goes on to the grace
                # window or reuse detection below, whatever its own expiry.
                raise InvalidGrant("The refresh token has expired.")
            else:
                rotated = False
                if stored.spent_at is None:
                    # Checked before any write: a bad scope changes nothing.
                    scopes = narrow(family.scopes, requested)
                    rotated = tx.spend_refresh_token(
                        presented_hash, at=now, successor_hash=successor_hash
                    )
                if rotated:
                    # Absolute expiry: the successor never outlives the family.
                    tx.insert_refresh_token(
                        successor_hash,
                        family_id=family.id,
                        created_at=now,
                        expires_at=min(now + self._policy.idle_ttl(client), family.expires_at),
                    )
                elif self._is_grace_retry(tx, client, stored, successor_hash, now):
                    scopes = narrow(family.scopes, requested)
                else:
                    self._revoke_for_reuse(tx, client, stored, now)
                    rejection = InvalidGrant()
        if rejection is not None:
            raise rejection
        return self._minter.respond(
            client=client,
            subject=family.subject,
            scopes=scopes,
            now=now,
            ttl=self._policy.access_ttl(client),
            refresh_token=successor,
            family_id=family.id,
            auth_time=family.auth_time,
            with_id_token=True,  # OIDC Core §12.2, when the (narrowed) scope has openid
        )

    def _is_grace_retry(
        self,
        tx: Transaction,
        client: Client,
        stored: StoredRefreshToken,
        successor_hash: bytes,
        now: float,
    ) -> bool:
        """A just-spent token presented again inside the grace window, whose successor is
        still unspent, gets that same successor (lost responses, concurrent tabs)."""
        if stored.spent_at is None:
            # Lost a compare-and-set race: re-read the winner's result under the lock.
            fresh = tx.find_refresh_token(stored.token_hash)
            if fresh is None or fresh.spent_at is None:
                return False
            stored = fresh
        grace = self._policy.grace(client)
        return (
            grace > 0
            and now - stored.spent_at <= grace
            and stored.successor_hash is not None
            and hmac.compare_digest(stored.successor_hash, successor_hash)
            and tx.is_refresh_token_spent(successor_hash) is False
        )

    @staticmethod
    def _revoke_for_reuse(
        tx: Transaction, client: Client, stored: StoredRefreshToken, now: float
    ) -> None:
        """RFC 9700 §4.14.2: a spent token used again means it leaked; end the family."""
        family = stored.family
        tx.revoke_family(family.id, at=now, reason=EVENT_REUSE)
        tx.record_event(
            SecurityEvent(
                EVENT_REUSE,
                now,
                client_id=client.client_id,
                family_id=family.id,
                user_id=family.user_id,
                detail={
                    "spent_at": stored.spent_at,
                    "seconds_since_spent": now - (stored.spent_at or now),
                },
            )
        )
        log.warning(
            "refresh token reuse: family %s of client %s revoked", family.id, client.client_id
        )
