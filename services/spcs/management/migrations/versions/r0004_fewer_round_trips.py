"""0004: what lets a call on a shared database take fewer round trips: a version of each pool,
bumped by every change of the pool or its hosts (a replica keeps its copy of a pool and reads
only the version), and a lease as rows of `lease_holds` alone (its owner, label, request and
times on each of its keys; the `leases` table goes). Leases are not carried over: every
replica stops before an upgrade (docs/deploy.md), so those left belong to stopped replicas."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from spcs.management.schema import TABLE_OPTIONS, key, number, seconds

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pools", sa.Column("version", number(), nullable=False, server_default="0"))
    op.drop_table("lease_holds")
    op.drop_table("leases")
    op.create_table(
        "lease_holds",
        sa.Column("lease_id", number(), primary_key=True, autoincrement=False),
        sa.Column("key_digest", sa.String(64), primary_key=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("owner", key(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("request_id", key(), nullable=False),
        sa.Column("started", seconds(), nullable=False),
        sa.Column("expires", seconds(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("lease_holds_key", "lease_holds", ["key_digest"])
    op.create_index("lease_holds_owner", "lease_holds", ["owner"])
    op.create_index("lease_holds_expires", "lease_holds", ["expires"])


def downgrade() -> None:
    op.drop_table("lease_holds")
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
    with op.batch_alter_table("pools") as batch:  # SQLite drops columns by copying
        batch.drop_column("version")
