"""Abuse limits: ``abuse_counters`` and ``security_events.count``.

Failed client authentications and sign-ins are counted per (client or username, source
address) and per address in ``abuse_counters``, shared by every process; the same table
aggregates security events that anyone can trigger, so that each such row of
``security_events`` stands for ``count`` occurrences (1 for every existing row).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "abuse_counters",
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("window_end", Time, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer()),
        sa.PrimaryKeyConstraint("key_hash", name="pk_abuse_counters"),
    )
    op.create_index("ix_abuse_counters_window_end", "abuse_counters", ["window_end"])
    with op.batch_alter_table("security_events") as batch:
        batch.add_column(
            sa.Column("count", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )


def downgrade() -> None:
    with op.batch_alter_table("security_events") as batch:
        batch.drop_column("count")
    op.drop_index("ix_abuse_counters_window_end", table_name="abuse_counters")
    op.drop_table("abuse_counters")
