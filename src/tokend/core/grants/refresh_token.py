"""The refresh token grant, RFC 6749 §6, with rotation and reuse detection (RFC 9700 §4.14.2).

Rules (DESIGN.md, "Refresh token rules"), each enforced below where it is quoted:

- rotation: the presented token is spent and exactly one successor issued, atomically;
- reuse of a spent token after the grace window revokes the whole family;
- inside the grace window the same client gets the same successor back while it is unspent;
- the family's absolute expiry is never extended; each token also has an idle expiry;
- ``scope`` may only narrow; the family keeps its original scope;
- a token presented by another client than its own is ``invalid_grant``;
- DPoP (RFC 9449 §5): the live token of a family bound to a key (``dpop_jkt``) refreshes
  only with a proof made with that key, else ``invalid_grant`` and nothing changes; a public
  client's first rotation with a proof binds its unbound family; a proof binds the new
  access token;
- a spent token is judged before any binding: outside the grace window it is reuse whatever
  proof (or none) comes with it, and inside it only the same client with the same key (or
  none, as at the rotation) is a retry; retries are bounded and recorded.
"""

from __future__ import annotations

import hmac
import logging
from typing import ClassVar

from tokend.core.errors import InvalidGrant, OAuthError
from tokend.core.events import EventKind
from tokend.core.grants import record_proof, require
from tokend.core.minting import TokenMinter
from tokend.core.models import (
    Client,
    DPoPProof,
    Family,
    Policy,
    SecurityEvent,
    StoredRefreshToken,
    TokenRequest,
    TokenResponse,
)
from tokend.core.ports import Store, Transaction
from tokend.core.scopes import narrow, parse_scope
from tokend.core.secrets import REFRESH_TOKEN_PREFIX, derive_successor, hash_secret, is_well_formed
from tokend.core.throttle import event_key

log = logging.getLogger("tokend.security")

_PROOF_REQUIRED = "The refresh token is bound to a DPoP key: send a DPoP proof made with it."
_OTHER_KEY = "The DPoP proof is made with another key than the refresh token is bound to."


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

    def handle(self, client: Client, request: TokenRequest, now: float) -> TokenResponse:
        params, dpop = request.params, request.dpop
        presented = require(params, "refresh_token")
        requested = parse_scope(params.get("scope"))
        if not is_well_formed(presented, REFRESH_TOKEN_PREFIX):
            raise InvalidGrant()  # typo, truncation or not ours: no database work at all
        jkt = None if dpop is None else dpop.jkt
        presented_hash = hash_secret(presented)
        # The successor depends on the DPoP key the token is rotated with (or none): a grace
        # retry with another key derives another successor, so it is judged as reuse.
        successor = derive_successor(self._derivation_key, presented, jkt)
        successor_hash = hash_secret(successor)

        rejection: OAuthError | None = None
        with self._store.transaction() as tx:
            record_proof(tx, dpop)
            stored = tx.find_refresh_token(presented_hash)
            if stored is None:
                raise InvalidGrant()
            family = stored.family
            if family.client_id != client.client_id:
                # RFC 6749 §6: "the refresh token is bound to the client to which it was issued".
                # Anyone holding a token can try this under a public client's id: one row per
                # (client, family) per window, with a count, so the trail cannot be flooded.
                tx.count_event(
                    _event(
                        EventKind.REFRESH_TOKEN_WRONG_CLIENT,
                        now,
                        client,
                        family,
                        request.address,
                        owner_client_id=family.client_id,
                    ),
                    key=event_key(
                        EventKind.REFRESH_TOKEN_WRONG_CLIENT, client.client_id, family.id
                    ),
                    window=self._policy.event_aggregation_window,
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
                    # The live token. Before any write: without the bound key (a missing proof
                    # or another key) nothing changes, and a bad scope changes nothing.
                    _check_binding(family, dpop, client)
                    scopes = narrow(family.scopes, requested)
                    # Spent, and its successor stored, as one step. Absolute expiry: the
                    # successor never outlives the family.
                    rotated = tx.rotate_refresh_token(
                        presented_hash,
                        at=now,
                        successor_hash=successor_hash,
                        family_id=family.id,
                        expires_at=min(now + self._policy.idle_ttl(client), family.expires_at),
                    )
                    if not rotated:
                        # Lost a compare-and-set race: judge the token as the winner left it.
                        stored = tx.find_refresh_token(presented_hash) or stored
                if rotated:
                    # RFC 9449 §5: "refresh tokens issued to public clients [...] MUST be
                    # bound to the DPoP public key": an unbound family is bound at its first
                    # rotation with a proof (compare-and-set). Only a rotation binds, never a
                    # spent token: its use is judged first, so a binding cannot shield a
                    # family from the real holder's reuse (docs/security.md, R1).
                    if (
                        jkt is not None
                        and client.public
                        and family.dpop_jkt is None
                        and not tx.bind_family_dpop(family.id, jkt)
                    ):
                        raise InvalidGrant(_OTHER_KEY)
                elif self._is_grace_retry(tx, client, stored, successor_hash, now, request.address):
                    scopes = narrow(family.scopes, requested)
                else:
                    # A spent token: reuse, whatever proof (or none) comes with it.
                    self._revoke_for_reuse(tx, client, stored, now, jkt, request.address)
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
            dpop_jkt=jkt,
        )

    def _is_grace_retry(
        self,
        tx: Transaction,
        client: Client,
        stored: StoredRefreshToken,
        successor_hash: bytes,
        now: float,
        address: str | None,
    ) -> bool:
        """A just-spent token presented again inside the grace window by the same client with
        the same DPoP key (or none, as when it was rotated), whose successor is still
        unspent, gets that same successor (lost responses, concurrent tabs), at most
        ``Policy.refresh_grace_retries`` times; each retry is a security event."""
        grace = self._policy.grace(client)
        if not (
            grace > 0
            and stored.spent_at is not None
            and now - stored.spent_at <= grace
            and stored.successor_hash is not None
            # Derived with the presented key: another key (or none) is not the same client.
            and hmac.compare_digest(stored.successor_hash, successor_hash)
            and tx.is_refresh_token_live(successor_hash)
        ):
            return False
        if not tx.count_grace_retry(stored.token_hash, limit=self._policy.refresh_grace_retries):
            return False  # past the bound: not a lost response but a replay storm; reuse
        family = stored.family
        tx.record_event(
            _event(
                EventKind.REFRESH_TOKEN_GRACE_RETRY,
                now,
                client,
                family,
                address,
                seconds_since_spent=now - stored.spent_at,
            )
        )
        return True

    @staticmethod
    def _revoke_for_reuse(
        tx: Transaction,
        client: Client,
        stored: StoredRefreshToken,
        now: float,
        jkt: str | None,
        address: str | None,
    ) -> None:
        """RFC 9700 §4.14.2: a spent token used again means it leaked; end the family."""
        family = stored.family
        tx.revoke_family(family.id, at=now, reason=EventKind.REFRESH_TOKEN_REUSE)
        tx.record_event(
            _event(
                EventKind.REFRESH_TOKEN_REUSE,
                now,
                client,
                family,
                address,
                spent_at=stored.spent_at,
                seconds_since_spent=now - (stored.spent_at or now),
                dpop=jkt is not None,
                family_dpop_bound=family.dpop_jkt is not None,
            )
        )


def _event(
    kind: EventKind,
    now: float,
    client: Client,
    family: Family,
    address: str | None,
    **detail: object,
) -> SecurityEvent:
    """A security event about ``family``, caused by a request of ``client`` from
    ``address``."""
    return SecurityEvent(
        kind,
        now,
        client_id=client.client_id,
        family_id=family.id,
        user_id=family.user_id,
        detail=detail,
        address=address,
    )


def _check_binding(family: Family, dpop: DPoPProof | None, client: Client) -> None:
    """RFC 9449 §5: a bound family's tokens are refreshed only with a proof of its key."""
    bound = family.dpop_jkt
    if bound is None:
        return
    if dpop is None:
        raise InvalidGrant(_PROOF_REQUIRED)
    if not hmac.compare_digest(dpop.jkt, bound):
        log.warning(
            "refresh token of DPoP-bound family %s presented with another key by client %s",
            family.id,
            client.client_id,
        )
        raise InvalidGrant(_OTHER_KEY)
