"""Per-client DPoP server nonces (RFC 9449 §8): ``clients.dpop_nonce_required``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server_default: the clients registered before keep working, without nonces.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column(
                "dpop_nonce_required", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("dpop_nonce_required")
