"""Device authorizations (issue 13): RFC 8628's device grant and Didit's cross-device
sign-in, one row per pending authorization that a second device approves.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "device_authorizations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("device_code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("user_code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(32)),
        sa.Column("address", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", Time),
        sa.Column("user_id", sa.String(32)),
        sa.Column("auth_time", Time),
        sa.Column("decided_at", Time),
        sa.Column("family_id", sa.String(32)),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name="fk_device_authorizations_client_id_clients",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_device_authorizations_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_device_authorizations"),
        sa.UniqueConstraint("device_code_hash", name="uq_device_authorizations_device_code_hash"),
        sa.UniqueConstraint("user_code_hash", name="uq_device_authorizations_user_code_hash"),
    )
    op.create_index("ix_device_authorizations_client_id", "device_authorizations", ["client_id"])
    op.create_index("ix_device_authorizations_user_id", "device_authorizations", ["user_id"])
    op.create_index("ix_device_authorizations_expires_at", "device_authorizations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("device_authorizations")
