"""Every kind of security event tokend records, in one place (``security_events.kind``).

Each is a decision an operator or an auditor may need to see; none ever carries a secret.
Events that anyone can trigger (with a public client's id, or from any address) are
aggregated, one row per window with a ``count`` (``Transaction.count_event``), so that a
flood cannot grow the trail.

The grants' "commit the event, then refuse" idiom: a refusal that must leave a trace (reuse,
a wrong client) is recorded inside the grant's transaction, which then *commits*, and the
error is raised after the ``with`` block (``rejection``); any other refusal raises inside the
block, so that its transaction rolls back and nothing changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tokend.core.clock import rfc3339

if TYPE_CHECKING:
    from tokend.core.models import SecurityEvent

# One line per committed event (the store logs it once its transaction has committed, so a
# rolled-back decision leaves no line): ``extra={"event": fields}`` for JSON log lines.
security_log = logging.getLogger("tokend.security")


class EventKind(StrEnum):
    # A spent refresh token presented again (RFC 9700 §4.14.2): its family was revoked.
    REFRESH_TOKEN_REUSE = "refresh_token_reuse"
    # A refresh token presented by another client than its own (RFC 6749 §6). Aggregated.
    REFRESH_TOKEN_WRONG_CLIENT = "refresh_token_wrong_client"
    # A just-spent refresh token retried inside the grace window (bounded per token).
    REFRESH_TOKEN_GRACE_RETRY = "refresh_token_grace_retry"
    # An authorization code redeemed twice (RFC 6749 §4.1.2): what it issued was revoked.
    AUTHORIZATION_CODE_REPLAY = "authorization_code_replay"
    # A client tried to revoke another client's token (RFC 7009 §2.1). Aggregated.
    REVOCATION_WRONG_CLIENT = "revocation_wrong_client"
    # A failure filled an abuse-limit window (once per window, not per refused request).
    THROTTLED = "throttled"
    # A client revoked one of its own tokens (RFC 7009): a family, or an access token.
    TOKEN_REVOKED_BY_CLIENT = "token_revoked_by_client"
    # A user revoked one application's grant on /account (its consent goes with it).
    FAMILY_REVOKED_BY_USER = "family_revoked_by_user"
    # A user withdrew an application's consent on /account (its families are revoked).
    CONSENT_WITHDRAWN = "consent_withdrawn"
    # A user ended every browser session of theirs on /account ("sign out everywhere").
    USER_SIGNED_OUT_EVERYWHERE = "user_signed_out_everywhere"
    # An administrator revoked families (`tokend tokens revoke`): detail says which, how many.
    TOKENS_REVOKED_BY_ADMIN = "tokens_revoked_by_admin"
    # A new signing key became current (`tokend keys rotate`); the previous one is retired.
    SIGNING_KEY_ROTATED = "signing_key_rotated"
    # A confidential client's secret was replaced (`tokend clients rotate-secret`).
    CLIENT_SECRET_ROTATED = "client_secret_rotated"
    # A signed-in user allowed a device (RFC 8628) or another browser (cross-device sign-in).
    DEVICE_AUTHORIZATION_APPROVED = "device_authorization_approved"
    # A person refused a device (or cross-device) authorization on /device.
    DEVICE_AUTHORIZATION_DENIED = "device_authorization_denied"
    # A device code redeemed a second time: the tokens it gave were revoked.
    DEVICE_CODE_REPLAY = "device_code_replay"


EVENT_KINDS: tuple[str, ...] = tuple(k.value for k in EventKind)


def event_fields(event: SecurityEvent, *, count: int = 1) -> dict[str, object]:
    """An event as the trail shows it (DESIGN.md's ``tokend events`` fields, the time as
    Unix seconds here): what a log line carries. ``subject`` is the user's id (tokend's
    own subject identifier; a pairwise client sees another ``sub`` for the same user)."""
    return {
        "at": event.at,
        "type": str(event.kind),
        "client_id": event.client_id,
        "subject": event.user_id,
        "family_id": event.family_id,
        "address": event.address,
        "detail": dict(event.detail),
        "count": count,
    }


def event_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored event (a ``security_events`` row, its detail decoded) as the trail shows it
    outside the process: what ``tokend events --json`` prints and the events webhook posts
    (DESIGN.md's fields and ``count``), the time as RFC 3339. Never a secret: an event holds
    none."""
    return {
        "time": rfc3339(row["at"]),
        "type": row["kind"],
        "client_id": row["client_id"],
        "subject": row["user_id"],
        "family_id": row["family_id"],
        "address": row["address"],
        "detail": row["detail"],
        "count": row["count"],
    }


def log_events(events: Iterable[SecurityEvent]) -> None:
    """One log line per committed event, on ``tokend.security``: WARNING for the kinds
    that mean a token leaked or someone is attacking, INFO for the others."""
    for event in events:
        fields = event_fields(event)
        level = logging.WARNING if event.kind in ALARMING else logging.INFO
        if security_log.isEnabledFor(level):
            security_log.log(level, "security event %s", _summary(fields), extra={"event": fields})


ALARMING = frozenset(
    {
        EventKind.REFRESH_TOKEN_REUSE,
        EventKind.REFRESH_TOKEN_WRONG_CLIENT,
        EventKind.AUTHORIZATION_CODE_REPLAY,
        EventKind.DEVICE_CODE_REPLAY,
        EventKind.REVOCATION_WRONG_CLIENT,
        EventKind.THROTTLED,
    }
)


def _summary(fields: Mapping[str, object]) -> str:
    """``type key=value ...`` for a text log line (the detail as compact JSON)."""
    parts = [str(fields["type"])]
    for name in ("client_id", "subject", "family_id", "address"):
        if fields[name] is not None:
            parts.append(f"{name}={fields[name]}")
    if fields["detail"]:
        parts.append("detail=" + json.dumps(fields["detail"], sort_keys=True, default=str))
    return " ".join(parts)
