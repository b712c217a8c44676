"""The embedded state store: one SQLite file (`--db`), created 0600 because it holds API tokens.

Pool records are read on every call and change rarely, so this store keeps them in memory and
drops them on any write it makes; that is right only while one process owns the file (the
shared-database store of the high-availability work reads through).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from spcs.common.journal import SqliteJournal
from spcs.common.sqlite import Database
from spcs.management.db import MIGRATIONS
from spcs.management.pool_url import Connection
from spcs.management.state import CacheEntry, NodeRecord, PoolChanges, PoolRecord
from spcs.v1 import lifecycle_pb2


class SqliteState:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            # created private: it holds StorPool API tokens
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = Database(path, MIGRATIONS)
        self.journal = SqliteJournal(self._db)
        self._cache: dict[str, PoolRecord] = {}
        self._cache_lock = threading.Lock()
        self._generation = 0  # bumped by every write: a read that raced one is not cached

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db.transaction() as tx:
                yield tx
        finally:
            with self._cache_lock:
                self._generation += 1
                self._cache.clear()

    # ---- pools ------------------------------------------------------------------------------

    def _pool(self, row: sqlite3.Row) -> PoolRecord:
        conn = Connection(
            row["api_host"], row["api_port"], row["api_token"], row["sp_template"], row["url_form"]
        )
        hosts = [
            r["host_id"]
            for r in self._db.query(
                "SELECT host_id FROM pool_hosts WHERE pool_uuid = ? ORDER BY host_id",
                (row["uuid"],),
            )
        ]
        return PoolRecord(
            uuid=row["uuid"],
            name=row["name"],
            zone_id=row["zone_id"],
            scope=row["scope"],
            state=row["state"],
            conn=conn,
            capacity_bytes=row["capacity_bytes"],
            capacity_iops=row["capacity_iops"],
            used_bytes=row["used_bytes"],
            tags=json.loads(row["tags"]),
            details=json.loads(row["details"]),
            hypervisor=row["hypervisor"],
            cluster_id=row["cluster_id"],
            pod_id=row["pod_id"],
            fingerprint=row["fingerprint"],
            hosts=hosts,
        )

    def pool(self, uuid: str) -> PoolRecord | None:
        with self._cache_lock:
            cached = self._cache.get(uuid)
            generation = self._generation
        if cached is not None:
            return cached
        rows = self._db.query("SELECT * FROM pools WHERE uuid = ?", (uuid,))
        if not rows:
            return None
        record = self._pool(rows[0])
        with self._cache_lock:
            if generation == self._generation:
                self._cache[uuid] = record
        return record

    def pools(self) -> list[PoolRecord]:
        return [self._pool(r) for r in self._db.query("SELECT * FROM pools ORDER BY name")]

    def add_pool(self, pool: PoolRecord) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO pools(uuid, name, zone_id, scope, state, sp_template, api_host, "
                "api_port, api_token, url_form, capacity_bytes, capacity_iops, tags, details, "
                "hypervisor, cluster_id, pod_id, fingerprint, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pool.uuid,
                    pool.name,
                    pool.zone_id,
                    pool.scope,
                    pool.state,
                    pool.conn.template,
                    pool.conn.host,
                    pool.conn.port,
                    pool.conn.token,
                    pool.conn.form,
                    pool.capacity_bytes,
                    pool.capacity_iops,
                    json.dumps(pool.tags),
                    json.dumps(pool.details),
                    pool.hypervisor,
                    pool.cluster_id,
                    pool.pod_id,
                    pool.fingerprint,
                    time.time(),
                ),
            )

    def set_pool_state(self, uuid: str, state: lifecycle_pb2.PoolState.ValueType) -> None:
        with self._write() as tx:
            tx.execute("UPDATE pools SET state = ? WHERE uuid = ?", (state, uuid))

    def update_pool(self, uuid: str, changes: PoolChanges) -> None:
        conn = changes.conn
        with self._write() as tx:
            tx.execute(
                "UPDATE pools SET capacity_bytes = ?, capacity_iops = ?, tags = ?, details = ?, "
                "api_host = ?, api_port = ?, api_token = ?, url_form = ? WHERE uuid = ?",
                (
                    changes.capacity_bytes,
                    changes.capacity_iops,
                    json.dumps(changes.tags),
                    json.dumps(changes.details),
                    conn.host,
                    conn.port,
                    conn.token,
                    conn.form,
                    uuid,
                ),
            )

    def set_pool_used(self, uuid: str, used: int) -> None:
        with self._write() as tx:
            tx.execute("UPDATE pools SET used_bytes = ? WHERE uuid = ?", (used, uuid))

    def remove_pool(self, uuid: str) -> None:
        with self._write() as tx:
            tx.execute("DELETE FROM pools WHERE uuid = ?", (uuid,))

    # ---- hosts connected to pools -------------------------------------------------------

    def connect_host(self, pool_uuid: str, host_id: str, client_id: int) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO pool_hosts(pool_uuid, host_id, client_id, connected) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(pool_uuid, host_id) DO UPDATE SET "
                "client_id = excluded.client_id, connected = excluded.connected",
                (pool_uuid, host_id, client_id, time.time()),
            )

    def disconnect_host(self, host_id: str, pool_uuids: Iterable[str] | None = None) -> int:
        with self._write() as tx:
            if pool_uuids is None:
                cursor = tx.execute("DELETE FROM pool_hosts WHERE host_id = ?", (host_id,))
            else:
                cursor = tx.executemany(
                    "DELETE FROM pool_hosts WHERE host_id = ? AND pool_uuid = ?",
                    [(host_id, uuid) for uuid in pool_uuids],
                )
            return cursor.rowcount

    def pools_of_host(self, host_id: str) -> list[str]:
        return [
            r["pool_uuid"]
            for r in self._db.query(
                "SELECT pool_uuid FROM pool_hosts WHERE host_id = ? ORDER BY pool_uuid", (host_id,)
            )
        ]

    # ---- the template cache ----------------------------------------------------------------

    def put_cache_entry(self, pool_uuid: str, entry: CacheEntry) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO template_cache(pool_uuid, template_uuid, snapshot_name, global_id, "
                "size, created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(pool_uuid, template_uuid) "
                "DO UPDATE SET snapshot_name = excluded.snapshot_name, global_id = "
                "excluded.global_id, size = excluded.size",
                (
                    pool_uuid,
                    entry.template_uuid,
                    entry.snapshot_name,
                    entry.global_id,
                    entry.size,
                    time.time(),
                ),
            )

    def drop_cache_entry(self, pool_uuid: str, template_uuid: str) -> None:
        with self._write() as tx:
            tx.execute(
                "DELETE FROM template_cache WHERE pool_uuid = ? AND template_uuid = ?",
                (pool_uuid, template_uuid),
            )

    def cache_entries(self, pool_uuid: str) -> list[CacheEntry]:
        return [
            CacheEntry(r["template_uuid"], r["snapshot_name"], r["global_id"], r["size"])
            for r in self._db.query(
                "SELECT * FROM template_cache WHERE pool_uuid = ? ORDER BY template_uuid",
                (pool_uuid,),
            )
        ]

    # ---- nodes ------------------------------------------------------------------------------

    def register_node(self, node: NodeRecord) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO nodes(host_id, address, client_id, cluster_id, version, last_seen, "
                "max_copies) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(host_id) DO UPDATE SET "
                "address=excluded.address, client_id=excluded.client_id, "
                "cluster_id=excluded.cluster_id, version=excluded.version, "
                "last_seen=excluded.last_seen, max_copies=excluded.max_copies",
                (
                    node.host_id,
                    node.address,
                    node.client_id,
                    node.cluster_id,
                    node.version,
                    node.last_seen,
                    node.max_copies,
                ),
            )

    def forget_node(self, host_id: str) -> bool:
        with self._db.transaction() as conn:
            return bool(conn.execute("DELETE FROM nodes WHERE host_id = ?", (host_id,)).rowcount)

    def set_client_running(self, host_id: str, running: bool) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE nodes SET client_running = ? WHERE host_id = ?", (int(running), host_id)
            )

    @staticmethod
    def _node(row: sqlite3.Row) -> NodeRecord:
        return NodeRecord(
            row["host_id"],
            row["address"],
            row["client_id"],
            row["cluster_id"],
            row["version"],
            row["last_seen"],
            bool(row["client_running"]),
            row["max_copies"],
        )

    def node(self, host_id: str) -> NodeRecord | None:
        rows = self._db.query("SELECT * FROM nodes WHERE host_id = ?", (host_id,))
        return self._node(rows[0]) if rows else None

    def nodes(self) -> list[NodeRecord]:
        return [self._node(r) for r in self._db.query("SELECT * FROM nodes ORDER BY host_id")]

    # ---- the store itself ---------------------------------------------------------------

    def ping(self) -> None:
        self._db.query("SELECT 1")

    def close(self) -> None:
        self._db.close()
