"""``tokend.core.device.DeviceStorage`` in memory, over a ``MemoryStore``'s state (so the
device grant, which reads the same rows inside the store's transactions, sees them)."""

from __future__ import annotations

from dataclasses import replace

from tests.core.memory_store import MemoryStore
from tokend.core.device import PendingDevice, StoredDevice
from tokend.core.models import SecurityEvent


class MemoryDeviceStorage:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def _rows(self) -> dict[str, StoredDevice]:
        return self.store.state.devices

    def create_device_authorization(self, row: StoredDevice) -> bool:
        with self.store.transaction():
            rows = self._rows()
            if row.client_id not in self.store.clients:
                return False  # the SQL foreign key
            taken = any(
                r.user_code_hash == row.user_code_hash or r.device_code_hash == row.device_code_hash
                for r in rows.values()
            )
            if taken or row.id in rows:
                return False  # the SQL unique indexes
            rows[row.id] = row
            return True

    def pending_device(self, user_code_hash: bytes, *, now: float) -> PendingDevice | None:
        with self.store.transaction():
            for r in self._rows().values():
                if (
                    r.user_code_hash == user_code_hash
                    and r.status == "pending"
                    and r.expires_at > now
                ):
                    client = self.store.clients[r.client_id]
                    return PendingDevice(
                        r.id, r.client_id, client.name, r.kind, r.scopes, r.address,
                        r.created_at, r.expires_at,
                    )  # fmt: skip
        return None

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
        with self.store.transaction() as tx:
            rows = self._rows()
            row = rows.get(authorization_id)
            if row is None or row.status != "pending" or row.expires_at <= now:
                return False
            rows[authorization_id] = replace(
                row, status=status, user_id=user_id, auth_time=auth_time, decided_at=now
            )
            tx.record_event(replace(event, client_id=row.client_id))
            return True

    def peek_device_authorization(self, device_code_hash: bytes) -> StoredDevice | None:
        with self.store.transaction() as tx:
            return tx.find_device_authorization(device_code_hash)

    def redeem_browser_authorization(self, authorization_id: str, *, now: float) -> bool:
        with self.store.transaction():
            rows = self._rows()
            row = rows.get(authorization_id)
            if row is None or row.status != "approved" or row.expires_at <= now:
                return False
            rows[authorization_id] = replace(row, status="redeemed")
            return True
