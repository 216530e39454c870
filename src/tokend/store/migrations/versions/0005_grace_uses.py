"""Bounded grace-window retries: ``refresh_tokens.grace_uses``.

A spent refresh token presented again inside the grace window returns its (unspent)
successor; each such retry counts here, and past ``TOKEND_REFRESH_GRACE_RETRIES`` the
retry is treated as reuse.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(
            sa.Column("grace_uses", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("grace_uses")
