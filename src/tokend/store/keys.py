"""Signing keys: ``tokend.keys.storage.KeyStorage``, the storage the key ring needs."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update

from tokend.core.models import SecurityEvent
from tokend.keys.storage import KeyRecord
from tokend.store.connections import Database
from tokend.store.events import recording
from tokend.store.schema import signing_keys

sk = signing_keys.c


class Keys(Database):
    def insert_key(
        self,
        record: KeyRecord,
        *,
        retire_alg: str | None = None,
        event: SecurityEvent | None = None,
    ) -> None:
        """Store a new key; retire the previous active keys of ``retire_alg`` in the same
        transaction so that exactly one key per algorithm is current; ``event`` recorded
        with it (the number of keys retired added to its detail)."""
        with recording(self.engine.begin()) as trail:
            conn = trail.conn
            retired = 0
            if conn.dialect.name == "postgresql":
                # Serialise key writers (SQLite: BEGIN IMMEDIATE already does), so that the
                # UPDATE below sees a key another process has just inserted: without it two
                # concurrent first starts leave two current keys of one algorithm.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7424052)")
            if retire_alg is not None:
                retired = conn.execute(
                    update(signing_keys)
                    .where(sk.alg == retire_alg, sk.retired_at.is_(None))
                    .values(retired_at=record.created_at)
                ).rowcount
            conn.execute(
                insert(signing_keys),
                {f: getattr(record, f) for f in KeyRecord.__slots__},
            )
            trail.record(event, detail={"keys_retired": retired})

    def insert_first_key(self, record: KeyRecord) -> bool:
        """Store ``record`` unless an active key of its algorithm exists (the writers' lock
        taken as in ``insert_key``, so racing processes store exactly one); whether it was."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7424052)")
            active = conn.execute(
                select(sk.kid).where(sk.alg == record.alg, sk.retired_at.is_(None)).limit(1)
            ).first()
            if active is not None:
                return False
            conn.execute(
                insert(signing_keys),
                {f: getattr(record, f) for f in KeyRecord.__slots__},
            )
            return True

    def list_keys(self) -> list[KeyRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(*(sk[f] for f in KeyRecord.__slots__)).order_by(sk.created_at)
            ).all()
        return [KeyRecord(*r) for r in rows]

    def keys_version(self) -> tuple[int, float]:
        """Cheap fingerprint of the key ring: changes whenever a key is added or retired."""
        with self._read() as conn:
            n, latest = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.max(func.coalesce(sk.retired_at, 0.0)), 0.0)
                    + func.coalesce(func.max(sk.created_at), 0.0),
                )
            ).one()
        return int(n), float(latest)

    def delete_keys_retired_before(self, cutoff: float) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(signing_keys).where(sk.retired_at < cutoff)).rowcount
