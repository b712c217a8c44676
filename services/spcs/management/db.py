"""The schema of the management service's SQLite state store (`sqlite_state.SqliteState`):
numbered migrations, applied in order at start (what each table holds: `state.py`)."""

from __future__ import annotations

from spcs.common.sqlite import OPERATIONS_TABLE

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
    # 2: pools, their hosts, the template cache
    """
    CREATE TABLE pools (
        uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        zone_id TEXT NOT NULL,
        scope INTEGER NOT NULL,
        state INTEGER NOT NULL,
        sp_template TEXT NOT NULL,
        api_host TEXT NOT NULL,
        api_port INTEGER NOT NULL,
        api_token TEXT NOT NULL,
        url_form TEXT NOT NULL,
        capacity_bytes INTEGER NOT NULL,
        capacity_iops INTEGER NOT NULL,
        used_bytes INTEGER NOT NULL DEFAULT 0,
        tags TEXT NOT NULL,
        details TEXT NOT NULL,
        hypervisor TEXT NOT NULL,
        cluster_id TEXT NOT NULL,
        pod_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE pool_hosts (
        pool_uuid TEXT NOT NULL REFERENCES pools(uuid) ON DELETE CASCADE,
        host_id TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        connected REAL NOT NULL,
        PRIMARY KEY (pool_uuid, host_id)
    );
    CREATE TABLE template_cache (
        pool_uuid TEXT NOT NULL REFERENCES pools(uuid) ON DELETE CASCADE,
        template_uuid TEXT NOT NULL,
        snapshot_name TEXT NOT NULL,
        global_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (pool_uuid, template_uuid)
    );
    """,
    # 3: the copies a node runs at once (as it announced), for queueing copies
    "ALTER TABLE nodes ADD COLUMN max_copies INTEGER NOT NULL DEFAULT 2",
)
