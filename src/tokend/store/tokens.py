"""Issued tokens outside a grant: revocation (RFC 7009) and introspection (RFC 7662) read a
refresh token or a family without a lock, deny-list access tokens; a protected resource
records a DPoP proof (RFC 9449). Each is one statement of ``tokend.store.statements``."""

from __future__ import annotations

from tokend.core.models import Family, SecurityEvent, StoredRefreshToken
from tokend.store.connections import Database
from tokend.store.statements import family_from_row, token_from_row


class Tokens(Database):
    def peek_refresh_token(self, token_hash: bytes) -> StoredRefreshToken | None:
        """The refresh token with this hash and its family (with ``dpop_jkt``), or None: a
        plain read, unlike ``SqlTransaction.find_refresh_token`` (which locks the row)."""
        row = self._read_row(self._q.peek_token, {"h": token_hash})
        return None if row is None else token_from_row(row)

    def peek_family(self, family_id: str) -> Family | None:
        """The family (revoked or not, with ``dpop_jkt``), or None; a plain driver-level read,
        and the store's one reader of a family by id."""
        row = self._read_row(self._q.peek_family, {"fid": family_id})
        return None if row is None else family_from_row(row)

    def is_access_token_revoked(self, jti: str) -> bool:
        return self._read_row(self._q.is_access_token_revoked, {"jti": jti}) is not None

    def revoke_access_token(
        self,
        jti: str,
        *,
        client_id: str,
        at: float,
        expires_at: float,
        event: SecurityEvent | None = None,
    ) -> bool:
        """Put the access token on the deny list until ``expires_at``; False if it already
        was (concurrent revocations of one token are fine: the second does nothing). With
        ``event``, it is recorded in the same transaction if the token is newly denied."""
        with self.transaction() as tx:
            denied = tx.revoke_access_token(jti, client_id=client_id, at=at, expires_at=expires_at)
            if denied and event is not None:
                tx.record_event(event)
            return denied

    def record_dpop_proof(self, replay_hash: bytes, *, expires_at: float) -> bool:
        """A DPoP proof's replay check outside a grant (at a protected resource), in a
        transaction of its own: False if the proof was recorded before (a replay)."""
        with self.transaction() as tx:
            return tx.record_dpop_proof(replay_hash, expires_at=expires_at)
