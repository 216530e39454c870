"""The device authorization grant at the token endpoint, RFC 8628 §3.4-3.5. The device code
was issued by ``tokend.core.device.DeviceFlow`` (``POST /auth/v2/device/authorize``).

- the device code MUST have been issued to the authenticated client (another client's
  code is ``invalid_grant``, and its poll changes nothing);
- while the user has not decided: ``authorization_pending``; a poll sooner than the
  interval after the previous one is ``slow_down``, and the interval grows by 5 seconds
  "for this and all subsequent requests" (§3.5), so the next poll is judged against it;
  each poll is remembered (the error is raised after the transaction commits);
- ``access_denied`` once the user denied it, ``expired_token`` once it expired;
- redeemed once: a compare-and-set on the approved row, under its row lock; a second
  redemption is ``invalid_grant``, revokes what the first one issued and is recorded
  (as for an authorization code, RFC 6749 §4.1.2: the code leaked);
- a "browser" row (cross-device sign-in) is never redeemable here: it completes a
  waiting browser (``DeviceFlow.browser_outcome``) and nothing else;
- tokens as for the code flow, through the same ``FamilyIssuer``: a refresh token with
  ``offline``/``offline_access`` (and the refresh grant), an ID token with ``openid`` and
  ``auth_time``, DPoP binding when a proof comes (the family's refresh tokens too, for a
  public client).
"""

from __future__ import annotations

from typing import ClassVar

from tokend.core.device import (
    APPROVED,
    DENIED,
    DEVICE_CODE_GRANT,
    KIND_DEVICE,
    MAX_POLL_INTERVAL,
    PENDING,
    REDEEMED,
    SLOW_DOWN_STEP,
)
from tokend.core.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidGrant,
    OAuthError,
    SlowDown,
)
from tokend.core.events import EventKind
from tokend.core.grants import record_proof, replayed, require
from tokend.core.issuance import FamilyIssuer
from tokend.core.models import Client, TokenRequest, TokenResponse
from tokend.core.ports import Store
from tokend.core.secrets import DEVICE_CODE_PREFIX, hash_secret, is_well_formed, new_id
from tokend.core.subjects import Subjects

_INVALID = "The device code is invalid or already used."


class DeviceCodeGrant:
    grant_type: ClassVar[str] = DEVICE_CODE_GRANT

    __slots__ = ("_issuer", "_store", "_subjects")

    def __init__(self, *, store: Store, issuer: FamilyIssuer, subjects: Subjects) -> None:
        self._store = store
        self._issuer = issuer
        self._subjects = subjects

    def handle(self, client: Client, request: TokenRequest, now: float) -> TokenResponse:
        dpop = request.dpop
        device_code = require(request.params, "device_code")
        if not is_well_formed(device_code, DEVICE_CODE_PREFIX):
            raise InvalidGrant(_INVALID)  # typo, truncation or not ours: no database work
        jkt = None if dpop is None else dpop.jkt

        rejection: OAuthError | None = None
        with self._store.transaction() as tx:
            record_proof(tx, dpop)
            row = tx.find_device_authorization(hash_secret(device_code))
            if row is None or row.kind != KIND_DEVICE or row.client_id != client.client_id:
                raise InvalidGrant(_INVALID)  # rolls back: another client's poll counts nothing
            if row.status == REDEEMED:
                replayed(
                    tx,
                    EventKind.DEVICE_CODE_REPLAY,
                    now=now,
                    client_id=client.client_id,
                    family_id=row.family_id,
                    user_id=row.user_id,
                    address=request.address,
                )
                rejection = InvalidGrant(_INVALID)
            elif row.status == DENIED:
                raise AccessDenied()
            elif now >= row.expires_at:
                raise ExpiredToken()
            elif row.status == PENDING:
                interval = row.interval
                if row.last_polled_at is not None and now - row.last_polled_at < interval:
                    interval = min(interval + SLOW_DOWN_STEP, MAX_POLL_INTERVAL)
                    rejection = SlowDown(
                        f"Polling too fast: wait at least {interval} seconds between requests."
                    )
                else:
                    rejection = AuthorizationPending()
                tx.record_device_poll(row.id, at=now, interval=interval)
            elif row.status != APPROVED or row.user_id is None:
                raise InvalidGrant(_INVALID)
            else:
                family_id = new_id()
                if not tx.redeem_device_authorization(row.id, at=now, family_id=family_id):
                    raise InvalidGrant(_INVALID)
                family, refresh_token = self._issuer.start(
                    tx,
                    client=client,
                    user_id=row.user_id,
                    subject=self._subjects.subject(client, row.user_id),
                    scopes=row.scopes,
                    now=now,
                    auth_time=row.auth_time,
                    family_id=family_id,
                    dpop_jkt=jkt if client.public else None,
                )
        if rejection is not None:
            raise rejection
        return self._issuer.respond(
            client=client, family=family, refresh_token=refresh_token, now=now, dpop_jkt=jkt
        )
