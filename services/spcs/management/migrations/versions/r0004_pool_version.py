"""0004: a version of each pool, bumped by every change of the pool or its hosts, so that a
replica on a shared database keeps its copy of a pool and reads only the version to know that
it is current."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from spcs.management.schema import number

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pools", sa.Column("version", number(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:  # SQLite drops columns by copying
        batch.drop_column("version")
