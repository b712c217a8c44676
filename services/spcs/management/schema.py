"""The management service's tables, defined once for every engine (SQLite, MariaDB/MySQL).

This is the schema at the newest migration (`migrations/versions/`): the store
(`sql_state.SqlState`) queries these tables, and the migrations create and change them (a
test checks that a migrated database matches this definition on each engine). What each table
holds: `state.py`.

Column types are chosen per engine: on SQLite they are the types of the schema spcs created
before Alembic (TEXT, INTEGER, REAL, BLOB); on MariaDB/MySQL keys are VARCHAR (an index needs a
length), numbers BIGINT and DOUBLE, and tables are InnoDB in utf8mb4 with a binary collation
(ids compare exactly, as they do in SQLite).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

MYSQL = ("mysql", "mariadb")
# table options on MariaDB/MySQL (ignored by SQLite)
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_bin",
}


def key(length: int = 255) -> TypeEngine[str]:
    """A short text: an id, a name, an address (TEXT on SQLite, VARCHAR elsewhere)."""
    return String(length).with_variant(Text(), "sqlite")


def text() -> TypeEngine[str]:
    """A long text (JSON documents); never indexed, never defaulted."""
    return Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL)


def number() -> TypeEngine[int]:
    """A 64-bit integer (sizes in bytes, enum values, counts)."""
    return BigInteger().with_variant(Integer(), "sqlite")


def seconds() -> TypeEngine[float]:
    """A time (Unix seconds) or a duration, in double precision."""
    return Double().with_variant(REAL(), "sqlite")


def blob() -> TypeEngine[bytes]:
    return LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)


metadata = MetaData()

pools = Table(
    "pools",
    metadata,
    Column("uuid", key(), primary_key=True),
    Column("name", key(), nullable=False),
    Column("zone_id", key(), nullable=False),
    Column("scope", number(), nullable=False),
    Column("state", number(), nullable=False),
    Column("sp_template", key(), nullable=False),
    Column("api_host", key(), nullable=False),
    Column("api_port", number(), nullable=False),
    Column("api_token", key(), nullable=False),
    Column("url_form", key(), nullable=False),
    Column("capacity_bytes", number(), nullable=False),
    Column("capacity_iops", number(), nullable=False),
    Column("used_bytes", number(), nullable=False, server_default="0"),
    Column("tags", text(), nullable=False),
    Column("details", text(), nullable=False),
    Column("hypervisor", key(), nullable=False),
    Column("cluster_id", key(), nullable=False),
    Column("pod_id", key(), nullable=False),
    Column("fingerprint", key(), nullable=False),
    Column("created", seconds(), nullable=False),
    # bumped by every change of the pool or its hosts: a replica's copy of the record is
    # current while the row's version is the one it read
    Column("version", number(), nullable=False, server_default="0"),
    **TABLE_OPTIONS,
)

pool_hosts = Table(
    "pool_hosts",
    metadata,
    Column(
        "pool_uuid",
        key(),
        ForeignKey("pools.uuid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("host_id", key(), primary_key=True),
    Column("client_id", number(), nullable=False),
    Column("connected", seconds(), nullable=False),
    Index("pool_hosts_host", "host_id"),
    **TABLE_OPTIONS,
)

template_cache = Table(
    "template_cache",
    metadata,
    Column(
        "pool_uuid",
        key(),
        ForeignKey("pools.uuid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("template_uuid", key(), primary_key=True),
    Column("snapshot_name", key(), nullable=False),
    Column("global_id", key(), nullable=False),
    Column("size", number(), nullable=False),
    Column("created", seconds(), nullable=False),
    **TABLE_OPTIONS,
)

nodes = Table(
    "nodes",
    metadata,
    Column("host_id", key(), primary_key=True),
    Column("address", key(), nullable=False),
    Column("client_id", number(), nullable=False),
    Column("cluster_id", key(), nullable=False, server_default=""),
    Column("version", key(), nullable=False, server_default=""),
    Column("last_seen", seconds(), nullable=False),
    Column("client_running", number(), nullable=False, server_default="0"),
    Column("max_copies", number(), nullable=False, server_default="2"),
    **TABLE_OPTIONS,
)

# Operations (`state.OperationStore`; on a node's own file `spcs.common.operations.Journal`):
# one row per operation, its google.longrunning.Operation serialized in `data`; `owner` is the
# replica running it, `heartbeat` when that replica last wrote it (the database's clock),
# `attempt` counts the attempts (a retry after a failure claims the row by bumping it, so two
# replicas never both start it, and a takeover by bumping it, so a presumed-dead owner cannot
# write it again), `cancel` is set by a CancelOperation on any replica and `created` orders
# the list.
operations = Table(
    "operations",
    metadata,
    Column("name", key(), primary_key=True),
    Column("fingerprint", key(), nullable=False),
    Column("done", number(), nullable=False),
    Column("data", blob(), nullable=False),
    Column("updated", seconds(), nullable=False),
    Column("owner", key(), nullable=False, server_default=""),
    Column("heartbeat", seconds(), nullable=False, server_default="0"),
    Column("attempt", number(), nullable=False, server_default="0"),
    Column("cancel", number(), nullable=False, server_default="0"),
    Column("created", seconds(), nullable=False, server_default="0"),
    Index("operations_owner", "owner"),
    Index("operations_running", "done", "heartbeat"),
    **TABLE_OPTIONS,
)

# Holds shared by all replicas (`state.LeaseStore`). A lease is what one operation holds: one
# row per key it holds (`lease_holds`), with the mode, the lease's id (random, chosen by the
# replica), its owner replica, label (the operation), request id, when it was taken and until
# when it is valid; a key is looked up by its SHA-256, the indexed column, since keys such as a
# secondary store's file can be long. `lease_keys` has one row per key ever taken: taking a
# lease locks the rows of its keys first, so two replicas checking the same key run one after
# the other.
lease_holds = Table(
    "lease_holds",
    metadata,
    Column("lease_id", number(), primary_key=True, autoincrement=False),
    Column("key_digest", String(64), primary_key=True),
    Column("key", Text(), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("owner", key(), nullable=False),
    Column("label", Text(), nullable=False),
    Column("request_id", key(), nullable=False),
    Column("started", seconds(), nullable=False),
    Column("expires", seconds(), nullable=False),
    Index("lease_holds_key", "key_digest"),
    Index("lease_holds_owner", "owner"),
    Index("lease_holds_expires", "expires"),
    **TABLE_OPTIONS,
)

lease_keys = Table(
    "lease_keys",
    metadata,
    Column("key_digest", String(64), primary_key=True),
    Column("touched", seconds(), nullable=False),
    **TABLE_OPTIONS,
)
