"""0003: operations shared by every replica: the attempt counter that decides which replica
runs a retry, the cancel flag any replica can set, the creation time that orders the list,
and an index to find running operations
whose owner stopped beating."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from spcs.management.schema import number, seconds

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("operations", sa.Column("attempt", number(), nullable=False, server_default="0"))
    op.add_column("operations", sa.Column("cancel", number(), nullable=False, server_default="0"))
    op.add_column("operations", sa.Column("created", seconds(), nullable=False, server_default="0"))
    op.execute("UPDATE operations SET created = updated")
    op.create_index("operations_running", "operations", ["done", "heartbeat"])


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:  # SQLite drops columns by copying
        batch.drop_index("operations_running")
        batch.drop_column("created")
        batch.drop_column("cancel")
        batch.drop_column("attempt")
