"""0002: what several replicas on one database need: the owner replica and heartbeat of each
operation, holds as leases (`leases`, their keys in `lease_holds`, one lock row per key in
`lease_keys`), and an index to find a host's pools."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from spcs.management.schema import TABLE_OPTIONS, key, seconds

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("operations", sa.Column("owner", key(), nullable=False, server_default=""))
    op.add_column(
        "operations", sa.Column("heartbeat", seconds(), nullable=False, server_default="0")
    )
    op.create_index("operations_owner", "operations", ["owner"])
    op.create_index("pool_hosts_host", "pool_hosts", ["host_id"])
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", key(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("request_id", key(), nullable=False),
        sa.Column("started", seconds(), nullable=False),
        sa.Column("expires", seconds(), nullable=False),
        sqlite_autoincrement=True,
        **TABLE_OPTIONS,
    )
    op.create_index("leases_owner", "leases", ["owner"])
    op.create_index("leases_expires", "leases", ["expires"])
    op.create_table(
        "lease_holds",
        sa.Column(
            "lease_id",
            sa.Integer(),
            sa.ForeignKey("leases.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key_digest", sa.String(64), primary_key=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("lease_holds_key", "lease_holds", ["key_digest"])
    op.create_table(
        "lease_keys",
        sa.Column("key_digest", sa.String(64), primary_key=True),
        sa.Column("touched", seconds(), nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    for table in ("lease_keys", "lease_holds", "leases"):
        op.drop_table(table)
    op.drop_index("pool_hosts_host", "pool_hosts")
    with op.batch_alter_table("operations") as batch:  # SQLite drops columns by copying
        batch.drop_index("operations_owner")
        batch.drop_column("heartbeat")
        batch.drop_column("owner")
