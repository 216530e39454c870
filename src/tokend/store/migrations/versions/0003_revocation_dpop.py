"""Revocation deny list for access tokens (RFC 7009), DPoP replay cache and family binding
(RFC 9449).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("token_families") as batch:
        batch.add_column(sa.Column("dpop_jkt", sa.String(64)))
    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("revoked_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_access_tokens"),
    )
    op.create_index("ix_revoked_access_tokens_expires_at", "revoked_access_tokens", ["expires_at"])
    op.create_table(
        "dpop_proofs",
        sa.Column("jti_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("jti_hash", name="pk_dpop_proofs"),
    )
    op.create_index("ix_dpop_proofs_expires_at", "dpop_proofs", ["expires_at"])


def downgrade() -> None:
    op.drop_table("dpop_proofs")
    op.drop_table("revoked_access_tokens")
    with op.batch_alter_table("token_families") as batch:
        batch.drop_column("dpop_jkt")
