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

from enum import StrEnum


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
