"""What the admin commands and the server's housekeeping run over many rows: bulk
revocation of families, the security events listing, garbage collection; and the abuse
counters of ``tokend.core.throttle`` (``CounterStore``), which gc also clears."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import ColumnElement, delete, update

from tokend.core.models import SecurityEvent
from tokend.core.throttle import Counter
from tokend.store.connections import Database
from tokend.store.events import event_row, recording, select_events
from tokend.store.schema import (
    abuse_counters,
    authorization_codes,
    browser_sessions,
    dpop_proofs,
    refresh_tokens,
    revoked_access_tokens,
    security_events,
    token_families,
)

fam = token_families.c


class Maintenance(Database):
    # -- abuse limits (tokend.core.throttle.CounterStore) ------------------------------------

    def read_counters(self, digests: Sequence[bytes]) -> dict[bytes, Counter]:
        """The existing counters among ``digests``: one primary-key read, no lock."""
        if not digests:
            return {}
        q = self._q.read_counters[len(digests) - 1]
        rows = self._read_row(q, {f"k{i}": d for i, d in enumerate(digests)}, all_rows=True)
        return {bytes(k): Counter(hits, end) for k, hits, end in rows}

    def add_failure(self, windows: Mapping[bytes, float], *, now: float) -> dict[bytes, Counter]:
        """One failure under each key: a single upsert statement, in its own transaction."""
        with self.transaction() as tx:
            return tx.add_failure(windows, now=now)

    # -- families --------------------------------------------------------------------------

    def revoke_families(
        self,
        *,
        now: float,
        reason: str,
        user_id: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
        event: SecurityEvent | None = None,
    ) -> int:
        """Set-based revocation: one UPDATE however many families match. With ``event``,
        it is recorded in the same transaction, with the number of families revoked."""
        conds: list[ColumnElement[bool]] = [fam.revoked_at.is_(None)]
        if user_id is not None:
            conds.append(fam.user_id == user_id)
        if client_id is not None:
            conds.append(fam.client_id == client_id)
        if family_id is not None:
            conds.append(fam.id == family_id)
        if len(conds) == 1:
            raise ValueError("revoke_families needs a user, client or family")
        with recording(self.engine.begin()) as trail:
            result = trail.conn.execute(
                update(token_families).where(*conds).values(revoked_at=now, revoked_reason=reason)
            )
            trail.record(event, detail={"families": result.rowcount})
            return result.rowcount

    # -- security events -------------------------------------------------------------------

    def list_events(
        self,
        kind: str | None = None,
        *,
        kinds: Sequence[str] = (),
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, object]]:
        """Security events, oldest first: of ``kind`` (or any of ``kinds``; all if neither),
        at or after ``since``, the newest ``limit`` of them. The filters and the limit are
        SQL (the (kind, at) index), never a scan in Python."""
        if kind is not None:
            kinds = (kind, *kinds)
        stmt = select_events(kinds=kinds, since=since, limit=limit)
        with self._read() as conn:
            rows = [event_row(row) for row in conn.execute(stmt).all()]
        rows.reverse()
        return rows

    # -- garbage collection ----------------------------------------------------------------

    def gc(
        self, *, now: float, retention: float, event_retention: float | None = None
    ) -> dict[str, int]:
        """Delete what can never be valid again, once it is older than ``retention`` seconds:
        expired or revoked families (with their tokens), expired refresh tokens, expired
        authorization codes (consumed ones are kept that long for replay detection), ended
        browser sessions, deny-listed access tokens past their expiry (whatever
        ``retention``: an expired token is refused for its ``exp``), DPoP replay-cache
        rows past theirs (likewise: such a proof is refused for its ``iat``), abuse counters
        whose window has ended (they count nothing any more); and security
        events older than ``event_retention`` (the audit trail; defaults to ``retention``)."""
        cutoff = now - retention
        event_cutoff = now - (retention if event_retention is None else event_retention)
        # What goes, run in this order (a family's refresh tokens go with it, by cascade,
        # before the expired tokens of live families are counted), and reported so.
        doomed = {
            "families": delete(token_families).where(
                (fam.expires_at < cutoff) | (fam.revoked_at < cutoff)
            ),
            "refresh_tokens": delete(refresh_tokens).where(refresh_tokens.c.expires_at < cutoff),
            "authorization_codes": delete(authorization_codes).where(
                authorization_codes.c.expires_at < cutoff
            ),
            "browser_sessions": delete(browser_sessions).where(browser_sessions.c.expires_at < now),
            "security_events": delete(security_events).where(security_events.c.at < event_cutoff),
            # A deny-listed access token past its exp is refused for its expiry anyway.
            "revoked_access_tokens": delete(revoked_access_tokens).where(
                revoked_access_tokens.c.expires_at < now
            ),
            # RFC 9449 §11.1: a proof past its acceptance window is refused for its iat.
            "dpop_proofs": delete(dpop_proofs).where(dpop_proofs.c.expires_at < now),
            # An abuse counter whose window has ended counts nothing any more.
            "abuse_counters": delete(abuse_counters).where(abuse_counters.c.window_end < now),
        }
        with self.engine.begin() as conn:
            return {name: conn.execute(stmt).rowcount for name, stmt in doomed.items()}
