"""The statements the hot path runs, each beside the one decoder of the row it reads.

Built once here with SQLAlchemy Core, compiled once per dialect (``Compiled``, gathered per
engine in ``Statements``), then run on the DBAPI cursor directly (``SqlTransaction``,
``Database.read_row``), skipping SQLAlchemy's per-execute machinery (result objects, events,
cache-key generation): a refresh is a handful of primary-key statements, and that machinery
cost more than the statements themselves.

A row shape has one decoder, used wherever that shape is read, at driver level or through
SQLAlchemy: ``family_from_row`` (``FAMILY_COLUMNS``), ``token_from_row`` (a refresh token and
its family), ``client_from_row`` (``CLIENT_COLUMNS``), ``user_from_row`` (``USER_COLUMNS``),
``code_from_row`` (``CODE_COLUMNS``), ``device_from_row`` (``DEVICE_COLUMNS``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import bindparam, insert, literal_column, or_, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from tokend.core.device import StoredDevice
from tokend.core.models import Client, Family, StoredCode, StoredRefreshToken, User
from tokend.store.schema import (
    abuse_counters,
    authorization_codes,
    clients,
    device_authorizations,
    dpop_proofs,
    refresh_tokens,
    revoked_access_tokens,
    security_events,
    token_families,
    users,
)

rt, fam, cl, ac, us = (
    refresh_tokens.c, token_families.c, clients.c, authorization_codes.c, users.c,
)  # fmt: skip

# -- token families ------------------------------------------------------------------------

FAMILY_COLUMNS = (
    fam.id, fam.client_id, fam.user_id, fam.subject, fam.scope,
    fam.created_at, fam.expires_at, fam.auth_time, fam.revoked_at, fam.dpop_jkt,
)  # fmt: skip


def family_from_row(row: Sequence[Any]) -> Family:
    """A row of ``FAMILY_COLUMNS``."""
    fid, cid, uid, sub, scope, created, expires, auth, revoked, jkt = row
    return Family(fid, cid, uid, sub, tuple(scope.split()), created, expires, auth, revoked, jkt)


_INSERT_FAMILY = insert(token_families).values(
    {c: bindparam(c) for c in ("id", "client_id", "user_id", "subject", "scope", "created_at",
                               "expires_at", "auth_time", "dpop_jkt")}
)  # fmt: skip
# RFC 9449 §5: bind an unbound family (or confirm the binding) to a DPoP key; compare-and-set.
_BIND_FAMILY_DPOP = (
    update(token_families)
    .where(
        fam.id == bindparam("fid"),
        or_(fam.dpop_jkt.is_(None), fam.dpop_jkt == bindparam("jkt")),
    )
    .values(dpop_jkt=bindparam("jkt"))
)
_REVOKE_FAMILY = (
    update(token_families)
    .where(fam.id == bindparam("fid"), fam.revoked_at.is_(None))
    .values(revoked_at=bindparam("at"), revoked_reason=bindparam("reason"))
)
# Revocation (RFC 7009) and introspection (RFC 7662): read-only, never a row lock.
_PEEK_FAMILY = select(*FAMILY_COLUMNS).where(fam.id == bindparam("fid"))

# -- refresh tokens ------------------------------------------------------------------------

# A refresh token and its family, by hash: the row ``token_from_row`` decodes.
_TOKEN_BY_HASH = (
    select(rt.token_hash, rt.created_at, rt.expires_at, rt.spent_at, rt.successor_hash,
           *FAMILY_COLUMNS)
    .select_from(refresh_tokens.join(token_families))
    .where(rt.token_hash == bindparam("h"))
)  # fmt: skip


def token_from_row(row: Sequence[Any]) -> StoredRefreshToken:
    """A row of ``_TOKEN_BY_HASH``: the token's five columns, then ``FAMILY_COLUMNS``."""
    h, created, expires, spent, succ = row[:5]
    return StoredRefreshToken(
        bytes(h),
        family_from_row(row[5:]),
        created,
        expires,
        spent,
        None if succ is None else bytes(succ),
    )


# The token's row and its family's, locked together (PostgreSQL FOR NO KEY UPDATE: neither
# row's key changes, so the successor's foreign-key check does not wait): the loser of a
# rotation race, or a refresh racing a revocation or a binding, reads both as they were
# committed, never a stale family beside a fresh token.
_FIND_TOKEN = _TOKEN_BY_HASH.with_for_update(of=(refresh_tokens, token_families), key_share=True)
_PEEK_TOKEN = _TOKEN_BY_HASH  # no row lock
_SPEND = (
    update(refresh_tokens)
    .where(rt.token_hash == bindparam("h"), rt.spent_at.is_(None))
    .values(spent_at=bindparam("at"), successor_hash=bindparam("succ"))
)
_INSERT_TOKEN = insert(refresh_tokens).values(
    token_hash=bindparam("h"),
    family_id=bindparam("fid"),
    created_at=bindparam("created"),
    expires_at=bindparam("expires"),
)
# PostgreSQL: the spend and the successor's insert in one statement (one round trip): the
# successor is inserted only if the UPDATE spent the token (rowcount 1), else nothing is
# written (rowcount 0). SQLite has no data-modifying CTE: it runs _SPEND then _INSERT_TOKEN.
_SPENT = _SPEND.returning(rt.family_id).cte("spent")
_ROTATE = insert(refresh_tokens).from_select(
    ["token_hash", "family_id", "created_at", "expires_at"],
    select(
        bindparam("succ", type_=rt.token_hash.type),
        bindparam("fid", type_=rt.family_id.type),
        bindparam("at", type_=rt.created_at.type),
        bindparam("expires", type_=rt.expires_at.type),
    ).select_from(_SPENT),
)
_IS_SPENT = select(rt.spent_at).where(rt.token_hash == bindparam("h"))
_COUNT_GRACE_RETRY = (
    update(refresh_tokens)
    .where(rt.token_hash == bindparam("h"), rt.grace_uses < bindparam("limit"))
    .values(grace_uses=rt.grace_uses + literal_column("1"))
)

# -- authorization codes -------------------------------------------------------------------

CODE_COLUMNS = (
    ac.code_hash, ac.client_id, ac.user_id, ac.subject, ac.redirect_uri, ac.scope, ac.nonce,
    ac.code_challenge, ac.auth_time, ac.created_at, ac.expires_at, ac.consumed_at, ac.family_id,
)  # fmt: skip


def code_from_row(row: Sequence[Any]) -> StoredCode:
    """A row of ``CODE_COLUMNS``."""
    (h, cid, uid, sub, uri, scope, nonce, challenge, auth, created, expires, consumed,
     fid) = row  # fmt: skip
    return StoredCode(
        bytes(h), cid, uid, sub, uri, tuple(scope.split()), nonce, challenge, auth,
        created, expires, consumed, fid,
    )  # fmt: skip


_INSERT_CODE = insert(authorization_codes).values({c.name: bindparam(c.name) for c in CODE_COLUMNS})
_FIND_CODE = select(*CODE_COLUMNS).where(ac.code_hash == bindparam("code_hash")).with_for_update()
_CONSUME_CODE = (
    update(authorization_codes)
    .where(ac.code_hash == bindparam("h"), ac.consumed_at.is_(None))
    .values(consumed_at=bindparam("at"), family_id=bindparam("fid"))
)

# -- device authorizations (RFC 8628, cross-device sign-in) --------------------------------

da = device_authorizations.c
DEVICE_COLUMNS = (
    da.id, da.device_code_hash, da.user_code_hash, da.client_id, da.kind, da.scope,
    da.request_hash, da.address, da.status, da.interval, da.last_polled_at, da.user_id,
    da.auth_time, da.decided_at, da.family_id, da.created_at, da.expires_at,
)  # fmt: skip


def device_from_row(row: Sequence[Any]) -> StoredDevice:
    """A row of ``DEVICE_COLUMNS``."""
    (did, dch, uch, cid, kind, scope, req, addr, status, interval, polled, uid, auth,
     decided, fid, created, expires) = row  # fmt: skip
    return StoredDevice(
        did, bytes(dch), bytes(uch), cid, kind, tuple(scope.split()),
        None if req is None else bytes(req), addr, status, interval, polled, uid, auth,
        decided, fid, created, expires,
    )  # fmt: skip


# The token endpoint's poll: the row locked, so that concurrent polls of one code queue.
_FIND_DEVICE = (
    select(*DEVICE_COLUMNS).where(da.device_code_hash == bindparam("h")).with_for_update()
)
_POLL_DEVICE = (
    update(device_authorizations)
    .where(da.id == bindparam("id"))
    .values(last_polled_at=bindparam("at"), interval=bindparam("interval"))
)
# Redeemed once: compare-and-set on the approved status.
_REDEEM_DEVICE = (
    update(device_authorizations)
    .where(da.id == bindparam("id"), da.status == bindparam("approved"))
    .values(status=bindparam("redeemed"), family_id=bindparam("fid"))
)

# -- clients -------------------------------------------------------------------------------

CLIENT_COLUMNS = (
    cl.client_id, cl.name, cl.public, cl.secret_hash, cl.grant_types, cl.redirect_uris,
    cl.scope, cl.refresh_grace, cl.access_token_ttl, cl.refresh_token_ttl,
    cl.refresh_idle_ttl, cl.subject_type, cl.dpop_nonce_required, cl.access_token_alg,
    cl.id_token_alg,
)  # fmt: skip


def client_from_row(row: Sequence[Any]) -> Client:
    """A row of ``CLIENT_COLUMNS``."""
    (client_id, name, public, secret_hash, grant_types, redirect_uris, scope, grace,
     access_ttl, refresh_ttl, idle_ttl, subject_type, dpop_nonce_required, access_token_alg,
     id_token_alg) = row  # fmt: skip
    return Client(
        client_id=client_id,
        name=name,
        public=bool(public),
        secret_hash=None if secret_hash is None else bytes(secret_hash),
        grant_types=frozenset(grant_types.split()),
        redirect_uris=tuple(json.loads(redirect_uris)),
        scopes=tuple(scope.split()),
        refresh_grace=grace,
        access_token_ttl=access_ttl,
        refresh_token_ttl=refresh_ttl,
        refresh_idle_ttl=idle_ttl,
        subject_type=subject_type,
        dpop_nonce_required=bool(dpop_nonce_required),
        access_token_alg=access_token_alg,
        id_token_alg=id_token_alg,
    )


_GET_CLIENT = select(*CLIENT_COLUMNS).where(cl.client_id == bindparam("cid"))

# -- users ---------------------------------------------------------------------------------

USER_COLUMNS = (
    us.id, us.username, us.password_hash, us.email, us.email_verified, us.given_name,
    us.family_name, us.phone_number, us.phone_number_verified, us.picture,
)  # fmt: skip


def user_from_row(row: Sequence[Any]) -> User:
    """A row of ``USER_COLUMNS`` (the flags made bool: SQLite's driver returns 0/1)."""
    (uid, username, password_hash, email, email_verified, given_name, family_name, phone,
     phone_verified, picture) = row  # fmt: skip
    return User(
        uid, username, password_hash, email, bool(email_verified), given_name, family_name,
        phone, bool(phone_verified), picture,
    )  # fmt: skip


# UserInfo: a family and its user in one read (LEFT JOIN: a family outliving its user shows).
_GET_FAMILY_USER = (
    select(*FAMILY_COLUMNS, *USER_COLUMNS)
    .select_from(token_families.outerjoin(users, us.id == fam.user_id))
    .where(fam.id == bindparam("fid"))
)


def family_and_user_from_row(row: Sequence[Any]) -> tuple[Family, User | None]:
    """A row of ``_GET_FAMILY_USER``: the user is None when it was deleted."""
    n = len(FAMILY_COLUMNS)
    return family_from_row(row[:n]), None if row[n] is None else user_from_row(row[n:])


# -- security events, the access-token deny list, DPoP proofs ------------------------------

_INSERT_EVENT = insert(security_events).values(
    {
        c: bindparam(c)
        for c in ("at", "kind", "client_id", "family_id", "user_id", "detail", "address")
    }
)
_INSERT_EVENT_RETURNING_ID = _INSERT_EVENT.returning(security_events.c.id)
_SET_EVENT_COUNT = (
    update(security_events)
    .where(security_events.c.id == bindparam("eid"))
    .values(count=bindparam("n"))
)
rat = revoked_access_tokens.c
_IS_ACCESS_TOKEN_REVOKED = select(rat.jti).where(rat.jti == bindparam("jti"))


def _insert_or_nothing(
    dialect: Dialect, table: Any, key: str, values: dict[str, Any]
) -> Executable:
    """INSERT of one row that does nothing (rowcount 0) if ``key`` is already there.
    PostgreSQL makes a concurrent insert of the same key wait for the first transaction."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=[key])


def _deny_access_token(dialect: Dialect) -> Executable:
    """Deny-list an access token (RFC 7009); nothing if its jti already is."""
    columns = ("jti", "client_id", "revoked_at", "expires_at")
    values: dict[str, Any] = {c: bindparam(c) for c in columns}
    return _insert_or_nothing(dialect, revoked_access_tokens, "jti", values)


def _record_dpop_proof(dialect: Dialect) -> Executable:
    """RFC 9449 §11.1 replay cache: nothing (rowcount 0) for a known hash."""
    values: dict[str, Any] = {"jti_hash": bindparam("h"), "expires_at": bindparam("exp")}
    return _insert_or_nothing(dialect, dpop_proofs, "jti_hash", values)


# -- abuse counters (``tokend.core.throttle``) ---------------------------------------------

# One statement per failure, whatever the number of keys (rows in VALUES, sorted so that
# concurrent upserts lock them in one order), the same SQL on SQLite (>= 3.35) and
# PostgreSQL. SET expressions see the row before the update.
_UPSERT_COUNTERS = """
INSERT INTO abuse_counters (key_hash, window_end, hits) VALUES {rows}
ON CONFLICT (key_hash) DO UPDATE SET
  hits = CASE WHEN abuse_counters.window_end <= :now THEN 1
              ELSE abuse_counters.hits + 1 END,
  event_id = CASE WHEN abuse_counters.window_end <= :now THEN NULL
                  ELSE abuse_counters.event_id END,
  window_end = CASE WHEN abuse_counters.window_end <= :now THEN excluded.window_end
                    ELSE abuse_counters.window_end END
RETURNING key_hash, hits, window_end, event_id
"""
MAX_COUNTER_KEYS = 4


def _upsert_counters(n: int) -> Executable:
    return text(_UPSERT_COUNTERS.format(rows=", ".join(f"(:k{i}, :e{i}, 1)" for i in range(n))))


def _read_counters(n: int) -> Executable:
    ab = abuse_counters.c
    return select(ab.key_hash, ab.hits, ab.window_end).where(
        ab.key_hash.in_([bindparam(f"k{i}") for i in range(n)])
    )


_SET_COUNTER_EVENT = (
    update(abuse_counters)
    .where(abuse_counters.c.key_hash == bindparam("k"))
    .values(event_id=bindparam("eid"))
)

# -- compiled ------------------------------------------------------------------------------


class Compiled:
    """One statement compiled for one dialect: SQL text plus how to order its parameters."""

    __slots__ = ("order", "sql")

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, cast(ClauseElement, stmt).compile(dialect=dialect))
        self.sql = str(compiled)
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def args(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        order = self.order
        return params if order is None else tuple([params[k] for k in order])


class Statements:
    """The hot path's statements compiled for one engine's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.find_token = Compiled(_FIND_TOKEN, dialect)
        self.spend = Compiled(_SPEND, dialect)
        self.insert_token = Compiled(_INSERT_TOKEN, dialect)
        self.rotate = Compiled(_ROTATE, dialect) if dialect.name == "postgresql" else None
        self.is_spent = Compiled(_IS_SPENT, dialect)
        self.count_grace_retry = Compiled(_COUNT_GRACE_RETRY, dialect)
        self.insert_family = Compiled(_INSERT_FAMILY, dialect)
        self.revoke_family = Compiled(_REVOKE_FAMILY, dialect)
        self.insert_event = Compiled(_INSERT_EVENT, dialect)
        self.get_client = Compiled(_GET_CLIENT, dialect)
        self.get_family_user = Compiled(_GET_FAMILY_USER, dialect)
        self.insert_code = Compiled(_INSERT_CODE, dialect)
        self.find_code = Compiled(_FIND_CODE, dialect)
        self.consume_code = Compiled(_CONSUME_CODE, dialect)
        self.find_device = Compiled(_FIND_DEVICE, dialect)
        self.poll_device = Compiled(_POLL_DEVICE, dialect)
        self.redeem_device = Compiled(_REDEEM_DEVICE, dialect)
        self.bind_family_dpop = Compiled(_BIND_FAMILY_DPOP, dialect)
        self.record_dpop_proof = Compiled(_record_dpop_proof(dialect), dialect)
        self.peek_token = Compiled(_PEEK_TOKEN, dialect)
        self.peek_family = Compiled(_PEEK_FAMILY, dialect)
        self.is_access_token_revoked = Compiled(_IS_ACCESS_TOKEN_REVOKED, dialect)
        self.deny_access_token = Compiled(_deny_access_token(dialect), dialect)
        self.upsert_counters = [
            Compiled(_upsert_counters(n), dialect) for n in range(1, MAX_COUNTER_KEYS + 1)
        ]
        self.read_counters = [
            Compiled(_read_counters(n), dialect) for n in range(1, MAX_COUNTER_KEYS + 1)
        ]
        self.insert_event_returning_id = Compiled(_INSERT_EVENT_RETURNING_ID, dialect)
        self.set_counter_event = Compiled(_SET_COUNTER_EVENT, dialect)
        self.set_event_count = Compiled(_SET_EVENT_COUNT, dialect)
