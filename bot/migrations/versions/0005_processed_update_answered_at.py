"""record when an update was answered, so a redelivery after a crash can answer it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("processedupdate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True))
    # The marks from before this revision: their handling is long over, and a redelivery of
    # one must stay silent as it was.
    op.execute("UPDATE processedupdate SET answered_at = processed_at")


def downgrade() -> None:
    with op.batch_alter_table("processedupdate", schema=None) as batch_op:
        batch_op.drop_column("answered_at")
