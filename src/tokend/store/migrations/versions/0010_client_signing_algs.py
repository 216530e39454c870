"""Per-client signing algorithms (issue 14): the JWS algorithm of a client's access tokens
and of its ID tokens (OIDC Registration §2 ``id_token_signed_response_alg``). NULL, what
every existing client gets: the server's default (TOKEND_SIGNING_ALG; RS256 for ID tokens),
so nothing a client receives changes with the upgrade.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


# Plain ALTER TABLE both ways, no batch "move and copy" on SQLite: recreating ``clients``
# would drop the table its token families reference, and with foreign keys on, SQLite
# cascades that drop to every family and refresh token (SQLite >= 3.35 drops a column in
# place).


def upgrade() -> None:
    op.add_column("clients", sa.Column("access_token_alg", sa.String(16), nullable=True))
    op.add_column("clients", sa.Column("id_token_alg", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("clients", "id_token_alg")
    op.drop_column("clients", "access_token_alg")
