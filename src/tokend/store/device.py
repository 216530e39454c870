"""Device authorizations outside the token endpoint: ``tokend.core.device.DeviceStorage``
(a device or a waiting browser starts one, the /device pages find and decide it, the
waiting browser completes it). The token endpoint's side (a poll, a redemption) runs in the
grant's ``SqlTransaction`` (``find_device_authorization`` and the statements beside it in
``tokend.store.statements``).

Every decision is a compare-and-set on the row's status (``pending`` to ``approved`` or
``denied``; ``approved`` to ``redeemed``), so two tabs, two people or two racing requests
never both win; a decision's security event is recorded in its transaction."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from tokend.core.device import APPROVED, PENDING, REDEEMED, PendingDevice, StoredDevice
from tokend.core.models import SecurityEvent
from tokend.store.connections import Database
from tokend.store.events import recording
from tokend.store.schema import clients, device_authorizations
from tokend.store.statements import DEVICE_COLUMNS, device_from_row

da = device_authorizations.c
# What the /device pages show: the row and its client's name.
_PENDING = select(
    da.id, da.client_id, clients.c.name, da.kind, da.scope, da.address, da.created_at,
    da.expires_at,
).select_from(device_authorizations.join(clients, clients.c.client_id == da.client_id))  # fmt: skip


class Devices(Database):
    def create_device_authorization(self, row: StoredDevice) -> bool:
        values = {f: getattr(row, f) for f in StoredDevice.__slots__}
        values["scope"] = " ".join(values.pop("scopes"))
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(device_authorizations), values)
        except IntegrityError:
            return False  # a code hash already taken (or the client gone): draw again
        return True

    def pending_device(self, user_code_hash: bytes, *, now: float) -> PendingDevice | None:
        stmt = _PENDING.where(
            da.user_code_hash == user_code_hash, da.status == PENDING, da.expires_at > now
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        did, cid, name, kind, scope, address, created, expires = row
        return PendingDevice(did, cid, name, kind, tuple(scope.split()), address, created, expires)

    def decide_device_authorization(
        self,
        authorization_id: str,
        *,
        status: str,
        user_id: str | None,
        auth_time: float | None,
        now: float,
        event: SecurityEvent,
    ) -> bool:
        stmt = (
            update(device_authorizations)
            .where(da.id == authorization_id, da.status == PENDING, da.expires_at > now)
            .values(status=status, user_id=user_id, auth_time=auth_time, decided_at=now)
            .returning(da.client_id)
        )
        with recording(self.engine.begin()) as w:
            row = w.conn.execute(stmt).first()
            if row is None:
                return False
            w.record(event, client_id=row.client_id)
        return True

    def peek_device_authorization(self, device_code_hash: bytes) -> StoredDevice | None:
        with self._read() as conn:
            row = conn.execute(
                select(*DEVICE_COLUMNS).where(da.device_code_hash == device_code_hash)
            ).first()
        return None if row is None else device_from_row(row)

    def redeem_browser_authorization(self, authorization_id: str, *, now: float) -> bool:
        stmt = (
            update(device_authorizations)
            .where(da.id == authorization_id, da.status == APPROVED, da.expires_at > now)
            .values(status=REDEEMED)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1
