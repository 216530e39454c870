"""Registered clients: the per-id cache the token endpoint reads through, and the admin
CRUD the CLI uses (every change clears the cache)."""

from __future__ import annotations

import json
from typing import Any, cast

from sqlalchemy import Engine, String, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokend.core.errors import AlreadyExists
from tokend.core.models import Client, SecurityEvent
from tokend.store.connections import Database
from tokend.store.events import recording
from tokend.store.schema import clients
from tokend.store.statements import CLIENT_COLUMNS, client_from_row

cl = clients.c

# The settings of a registered client that ``Clients.update_client`` may change.
UPDATABLE_CLIENT_FIELDS = frozenset(
    {"dpop_nonce_required", "grant_types", "access_token_alg", "id_token_alg"}
)

_CLIENT_ID_WIDTH: int = cast(String, clients.c.client_id.type).length or 0  # String(64)
assert _CLIENT_ID_WIDTH > 0


def _possible_client_id(client_id: str) -> bool:
    """Could a stored client have this id? Not if the column cannot hold it, nor with a
    control character (no command makes one; PostgreSQL text cannot even hold NUL)."""
    return 0 < len(client_id) <= _CLIENT_ID_WIDTH and client_id.isprintable()


class Clients(Database):
    """Clients, cached once ``enable_client_cache`` is called (the server does; the CLI does
    not). Every change made through this store clears the cache at once; changes made by
    other processes (the admin CLI) are picked up by ``refresh_client_cache``, which the
    server calls every ``TOKEND_KEY_REFRESH_INTERVAL`` seconds."""

    _CLIENT_CACHE_SIZE = 10_000
    _UNKNOWN_CLIENT_CACHE_SIZE = 10_000

    def __init__(self, engine: Engine, *, hot: AsyncEngine | None = None) -> None:
        super().__init__(engine, hot=hot)
        self._clients: dict[str, Client] | None = None  # None: no cache
        self._unknown_clients: set[str] = set()  # ids read and not found (with the cache)
        self._clients_epoch = 0
        self._clients_fingerprint: tuple[Any, ...] | None = None

    # -- the cache -------------------------------------------------------------------------

    def enable_client_cache(self) -> None:
        """Start caching clients. The first ``refresh_client_cache`` only sets the baseline
        it compares to, so it is taken here, before anything is cached."""
        if self._clients is None:
            self.refresh_client_cache()
            self._clients = {}

    def invalidate_client_cache(self) -> None:
        self._clients_epoch += 1
        if self._clients is not None:
            self._clients.clear()
        self._unknown_clients.clear()

    def refresh_client_cache(self) -> bool:
        """Drop the cached clients if the clients table changed since the last call (or if
        this is the first call); True when it did."""
        with self._read() as conn:
            fingerprint = tuple(
                conn.execute(
                    select(func.count(), func.max(cl.updated_at), func.sum(cl.updated_at))
                ).one()
            )
        if fingerprint == self._clients_fingerprint:
            return False
        self.invalidate_client_cache()
        self._clients_fingerprint = fingerprint
        return True

    def get_client(self, client_id: str) -> Client | None:
        """The client, or None. An id that no client can have (longer than the column,
        or with a control character) is None without a read; with the cache on, an unknown
        id is remembered as unknown (bounded), until the cache is next cleared: by a change
        through this store at once, by one through another process within the refresh
        interval. So unknown and garbage ids cost what a known client's does."""
        if not _possible_client_id(client_id):
            return None
        cache = self._clients
        if cache is not None:
            client = cache.get(client_id)
            if client is not None:
                return client
            unknown = self._unknown_clients
            if client_id in unknown:
                return None
        epoch = self._clients_epoch
        row = self._read_row(self._q.get_client, {"cid": client_id})
        client = None if row is None else client_from_row(row)
        # Not if the cache was invalidated while this row was read: it may be the old one.
        if cache is not None and epoch == self._clients_epoch:
            if client is None:
                if len(unknown) >= self._UNKNOWN_CLIENT_CACHE_SIZE:
                    unknown.clear()
                unknown.add(client_id)
            else:
                if len(cache) >= self._CLIENT_CACHE_SIZE:
                    cache.clear()
                cache[client_id] = client
        return client

    # -- admin -----------------------------------------------------------------------------

    def create_client(self, client: Client, *, now: float) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(clients),
                    {
                        "client_id": client.client_id,
                        "name": client.name,
                        "public": client.public,
                        "secret_hash": client.secret_hash,
                        "secret_rotated_at": None if client.public else now,
                        "grant_types": " ".join(sorted(client.grant_types)),
                        "redirect_uris": json.dumps(list(client.redirect_uris)),
                        "scope": " ".join(client.scopes),
                        "refresh_grace": client.refresh_grace,
                        "access_token_ttl": client.access_token_ttl,
                        "refresh_token_ttl": client.refresh_token_ttl,
                        "refresh_idle_ttl": client.refresh_idle_ttl,
                        "subject_type": client.subject_type,
                        "dpop_nonce_required": client.dpop_nonce_required,
                        "access_token_alg": client.access_token_alg,
                        "id_token_alg": client.id_token_alg,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        except IntegrityError as exc:
            raise AlreadyExists(client.client_id) from exc
        finally:
            self.invalidate_client_cache()

    def list_clients(self) -> list[Client]:
        with self._read() as conn:
            rows = conn.execute(select(*CLIENT_COLUMNS).order_by(cl.created_at)).all()
        return [client_from_row(r) for r in rows]

    def signing_algs_in_use(self) -> frozenset[str]:
        """The signing algorithms clients were registered with (their access tokens' and
        ID tokens'; the server's defaults not included): the key ring's keys to have."""
        with self._read() as conn:
            rows = conn.execute(
                select(cl.access_token_alg)
                .where(cl.access_token_alg.is_not(None))
                .union(select(cl.id_token_alg).where(cl.id_token_alg.is_not(None)))
            ).all()
        return frozenset(alg for (alg,) in rows)

    def count_clients(self) -> int:
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(clients)).scalar_one()

    def delete_client(self, client_id: str) -> bool:
        try:
            with self.engine.begin() as conn:
                # Families and their refresh tokens go with it (ON DELETE CASCADE).
                stmt = delete(clients).where(cl.client_id == client_id)
                return conn.execute(stmt).rowcount == 1
        finally:
            self.invalidate_client_cache()

    def set_client_secret(
        self,
        client_id: str,
        secret_hash: bytes,
        *,
        now: float,
        event: SecurityEvent | None = None,
    ) -> bool:
        """Replace a confidential client's secret (its hash); ``event`` is recorded in the
        same transaction if it was replaced."""
        try:
            with recording(self.engine.begin()) as trail:
                result = trail.conn.execute(
                    update(clients)
                    .where(cl.client_id == client_id, cl.public.is_(False))
                    .values(secret_hash=secret_hash, secret_rotated_at=now, updated_at=now)
                )
                if result.rowcount == 1:
                    trail.record(event)
                return result.rowcount == 1
        finally:
            self.invalidate_client_cache()

    def update_client(
        self, client_id: str, changes: dict[str, Any], *, now: float
    ) -> Client | None:
        """Set the given settings (``UPDATABLE_CLIENT_FIELDS``) of the client; the updated
        client, or None if there is no such client."""
        unknown = set(changes) - UPDATABLE_CLIENT_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        where = cl.client_id == client_id
        values = dict(changes)
        if "grant_types" in values:
            values["grant_types"] = " ".join(sorted(values["grant_types"]))
        try:
            with self.engine.begin() as conn:
                stmt = update(clients).where(where).values(**values, updated_at=now)
                if conn.execute(stmt).rowcount:
                    row = conn.execute(select(*CLIENT_COLUMNS).where(where)).one()
                    return client_from_row(row)
            return None
        finally:
            self.invalidate_client_cache()
