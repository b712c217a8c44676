"""The management service's database: what neither CloudStack nor StorPool can tell us.

StorPool (names and tags) is the source of truth for volumes and snapshots. This database keeps
only pools, registered nodes, template-cache entries and the operations journal, so a restart
loses nothing.
"""

from __future__ import annotations

from pathlib import Path

from spcs.common.sqlite import OPERATIONS_TABLE, Database

MIGRATIONS: tuple[str, ...] = (
    # 1: nodes and the operations journal
    """
    CREATE TABLE nodes (
        host_id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        cluster_id TEXT NOT NULL DEFAULT '',
        version TEXT NOT NULL DEFAULT '',
        last_seen REAL NOT NULL,
        client_running INTEGER NOT NULL DEFAULT 0
    );
    """
    + OPERATIONS_TABLE,
)


def open_database(path: Path) -> Database:
    return Database(path, MIGRATIONS)
