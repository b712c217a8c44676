"""0001: the schema spcs created before Alembic (its raw SQLite migrations 1-3, PRAGMA
user_version 3): nodes, the operations journal, pools, their hosts, the template cache.

An SQLite database made by those migrations already has this: `sql_state.migrate` stamps it
0001 without running this script.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from spcs.management.schema import TABLE_OPTIONS, blob, key, number, seconds, text

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _pool_child(name: str, *columns: sa.Column[object]) -> None:
    """A table of rows that belong to a pool (removed with it)."""
    op.create_table(
        name,
        sa.Column(
            "pool_uuid", key(), sa.ForeignKey("pools.uuid", ondelete="CASCADE"), primary_key=True
        ),
        *columns,
        **TABLE_OPTIONS,
    )


def upgrade() -> None:
    _nodes()
    op.create_table(
        "operations",
        sa.Column("name", key(), primary_key=True),
        sa.Column("fingerprint", key(), nullable=False),
        sa.Column("done", number(), nullable=False),
        sa.Column("data", blob(), nullable=False),
        sa.Column("updated", seconds(), nullable=False),
        **TABLE_OPTIONS,
    )
    _pools()
    _pool_child(
        "pool_hosts",
        sa.Column("host_id", key(), primary_key=True),
        sa.Column("client_id", number(), nullable=False),
        sa.Column("connected", seconds(), nullable=False),
    )
    _pool_child(
        "template_cache",
        sa.Column("template_uuid", key(), primary_key=True),
        sa.Column("snapshot_name", key(), nullable=False),
        sa.Column("global_id", key(), nullable=False),
        sa.Column("size", number(), nullable=False),
        sa.Column("created", seconds(), nullable=False),
    )


def _nodes() -> None:
    op.create_table(
        "nodes",
        sa.Column("host_id", key(), primary_key=True),
        sa.Column("address", key(), nullable=False),
        sa.Column("client_id", number(), nullable=False),
        sa.Column("cluster_id", key(), nullable=False, server_default=""),
        sa.Column("version", key(), nullable=False, server_default=""),
        sa.Column("last_seen", seconds(), nullable=False),
        sa.Column("client_running", number(), nullable=False, server_default="0"),
        sa.Column("max_copies", number(), nullable=False, server_default="2"),
        **TABLE_OPTIONS,
    )


def _pools() -> None:
    op.create_table(
        "pools",
        sa.Column("uuid", key(), primary_key=True),
        sa.Column("name", key(), nullable=False),
        sa.Column("zone_id", key(), nullable=False),
        sa.Column("scope", number(), nullable=False),
        sa.Column("state", number(), nullable=False),
        sa.Column("sp_template", key(), nullable=False),
        sa.Column("api_host", key(), nullable=False),
        sa.Column("api_port", number(), nullable=False),
        sa.Column("api_token", key(), nullable=False),
        sa.Column("url_form", key(), nullable=False),
        sa.Column("capacity_bytes", number(), nullable=False),
        sa.Column("capacity_iops", number(), nullable=False),
        sa.Column("used_bytes", number(), nullable=False, server_default="0"),
        sa.Column("tags", text(), nullable=False),
        sa.Column("details", text(), nullable=False),
        sa.Column("hypervisor", key(), nullable=False),
        sa.Column("cluster_id", key(), nullable=False),
        sa.Column("pod_id", key(), nullable=False),
        sa.Column("fingerprint", key(), nullable=False),
        sa.Column("created", seconds(), nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    for table in ("template_cache", "pool_hosts", "pools", "operations", "nodes"):
        op.drop_table(table)
