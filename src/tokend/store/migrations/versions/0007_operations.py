"""Operations (issue 12): the source address of a security event, an index to list events
by type, and ``leases`` for work that one process of many must do at a time (the periodic
gc sweep, event delivery).

A lease row is taken by a compare-and-set UPDATE (or INSERT) of its holder and expiry: a
process that holds an unexpired lease does the work; the others skip it. A crashed holder's
lease simply runs out.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("security_events") as batch:
        batch.add_column(sa.Column("address", sa.String(64)))
    op.create_index("ix_security_events_kind_at", "security_events", ["kind", "at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_security_events_kind_at", table_name="security_events")
    with op.batch_alter_table("security_events") as batch:
        batch.drop_column("address")
