"""Primary storage pools: their lifecycle, their StorPool connections, the hosts connected to them.

A pool is one StorPool template on one StorPool API endpoint (the Java plugin refuses a second
pool on the same endpoint and template, and so do we). Pools are zone-wide and KVM-only. The
token is kept in the database and used for API calls; it never leaves this module in a reply,
an error or a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from spcs.common import errors, validate
from spcs.common.sqlite import Database
from spcs.management import pool_url
from spcs.management.pool_url import Connection
from spcs.storpool import names
from spcs.storpool.api import UNRESOLVABLE_HOST, RetryPolicy, StorPoolApi
from spcs.storpool.conf import StorPoolConf
from spcs.v1 import lifecycle_pb2

log = logging.getLogger(__name__)

UP = lifecycle_pb2.POOL_STATE_UP
INITIALIZED = lifecycle_pb2.POOL_STATE_INITIALIZED
MAINTENANCE = lifecycle_pb2.POOL_STATE_MAINTENANCE
DISABLED = lifecycle_pb2.POOL_STATE_DISABLED
STATE_NAMES = {
    UP: "Up",
    INITIALIZED: "Initialized",
    MAINTENANCE: "Maintenance",
    DISABLED: "Disabled",
}
# Pool details that keep snapshots on primary only (no backup to secondary).
BYPASS_DETAILS = {"snapshot.backup.to.secondary": "false", "sp.bypass.secondary.storage": "true"}


@dataclass
class PoolRecord:
    uuid: str
    name: str
    zone_id: str
    scope: int
    state: int
    conn: Connection
    capacity_bytes: int
    capacity_iops: int
    used_bytes: int
    tags: list[str]
    details: dict[str, str]
    hypervisor: str
    cluster_id: str
    pod_id: str
    fingerprint: str
    hosts: list[str] = field(default_factory=list)

    @property
    def template(self) -> str:
        return self.conn.template

    @property
    def bypass_secondary(self) -> bool:
        return any(self.details.get(k, "").lower() == v for k, v in BYPASS_DETAILS.items())

    def message(self) -> lifecycle_pb2.Pool:
        return lifecycle_pb2.Pool(
            uuid=self.uuid,
            name=self.name,
            zone_id=self.zone_id,
            scope=self.scope,
            state=self.state,
            sp_template=self.template,
            api_endpoint=self.conn.endpoint,
            url_form=self.conn.form,
            capacity_bytes=self.capacity_bytes,
            capacity_iops=self.capacity_iops,
            used_bytes=self.used_bytes,
            tags=self.tags,
            details=self.details,
            connected_host_ids=self.hosts,
            path=names.BYID_DIR + "/",
        )


# Where the API host of each pool URL form comes from, for an unresolvable host.
_HOST_SOURCES = {
    "parameters": "SP_API_HTTP=<host>:<port> in the pool URL",
    "storpool-url": "the host of storpool://TOKEN@<host>:<port>/TEMPLATE in the pool URL",
    "template": "SP_API_HTTP_HOST in this management host's StorPool config (the URL names "
    "only a template)",
}


def _fingerprint(request: lifecycle_pb2.InitializePoolRequest) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


class Pools:
    def __init__(
        self, db: Database, local: StorPoolConf | None, retry: RetryPolicy | None = None
    ) -> None:
        self._db = db
        self._local = local
        self._retry = retry
        self._apis: dict[tuple[str, int, str], StorPoolApi] = {}
        self._apis_lock = threading.Lock()
        # Pools are read on every call and change rarely: kept in memory, dropped on any write
        # (all writes go through _write; one management service owns the database).
        self._cache: dict[str, PoolRecord] = {}
        self._generation = 0  # bumped by every write: a read that raced one is not cached

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db.transaction() as tx:
                yield tx
        finally:
            self._generation += 1
            self._cache.clear()

    # ---- connections ---------------------------------------------------------------------

    def api_for(self, conn: Connection) -> StorPoolApi:
        key = (conn.host, conn.port, conn.token)
        with self._apis_lock:
            api = self._apis.get(key)
            if api is None:
                api = self._apis[key] = StorPoolApi(
                    conn.host, conn.port, conn.token, retry=self._retry
                )
            return api

    def api(self, pool: PoolRecord) -> StorPoolApi:
        return self.api_for(pool.conn)

    # ---- reading -------------------------------------------------------------------------

    def _record(self, row) -> PoolRecord:  # type: ignore[no-untyped-def]
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

    def find(self, uuid: str) -> PoolRecord | None:
        cached = self._cache.get(uuid)
        if cached is not None:
            return cached
        generation = self._generation
        rows = self._db.query("SELECT * FROM pools WHERE uuid = ?", (uuid,))
        if not rows:
            return None
        record = self._record(rows[0])
        if generation == self._generation:
            self._cache[uuid] = record
        return record

    def get(self, uuid: str) -> PoolRecord:
        validate.identifier(uuid, "pool_uuid")
        pool = self.find(uuid)
        if pool is None:
            raise errors.NotFound(
                f"primary storage pool {uuid} is not known to this management service; "
                "add it with InitializePool"
            )
        return pool

    def all(self) -> list[PoolRecord]:
        return [self._record(r) for r in self._db.query("SELECT * FROM pools ORDER BY name")]

    def usable(self, uuid: str) -> PoolRecord:
        """A pool new objects may be placed on."""
        pool = self.get(uuid)
        if pool.state == INITIALIZED:
            raise errors.FailedPrecondition(
                f"pool {pool.name} ({uuid}) is not attached to its zone yet; call AttachZone "
                "before placing volumes on it"
            )
        if pool.state in (MAINTENANCE, DISABLED):
            raise errors.FailedPrecondition(
                f"pool {pool.name} ({uuid}) is in state {STATE_NAMES[pool.state]}; new volumes "
                "and templates are not placed on it (cancel maintenance or enable it)"
            )
        return pool

    # ---- lifecycle -----------------------------------------------------------------------

    def initialize(self, request: lifecycle_pb2.InitializePoolRequest) -> PoolRecord:
        validate.require(request, "pool_uuid", "name", "url", "zone_id", "capacity_bytes")
        validate.identifier(request.pool_uuid, "pool_uuid")
        zone_scopes = (lifecycle_pb2.POOL_SCOPE_UNSPECIFIED, lifecycle_pb2.POOL_SCOPE_ZONE)
        if request.scope not in zone_scopes:
            raise errors.InvalidArgument(
                "StorPool primary storage is zone-wide only: add it with scope ZONE "
                f"(got {lifecycle_pb2.PoolScope.Name(request.scope)})"
            )
        if request.hypervisor and request.hypervisor.upper() != "KVM":
            raise errors.InvalidArgument(
                f"hypervisor {request.hypervisor!r} is not supported: StorPool primary storage "
                "serves KVM hosts only"
            )
        conn = pool_url.parse(request.url, self._local)
        print_ = _fingerprint(request)
        existing = self.find(request.pool_uuid)
        if existing is not None:
            if existing.fingerprint != print_:
                raise errors.AlreadyExists(
                    f"pool {request.pool_uuid} already exists with other settings (name "
                    f"{existing.name}, template {existing.template}); use another pool_uuid "
                    "or UpdatePool"
                )
            return existing
        for other in self.all():
            if (other.conn.host, other.conn.port, other.template) == (
                conn.host,
                conn.port,
                conn.template,
            ):
                raise errors.AlreadyExists(
                    f"pool {other.name} ({other.uuid}) already uses StorPool template "
                    f"{conn.template} at {conn.endpoint}; one template serves one pool"
                )
        try:
            self._check_template(conn)
        except errors.NotFound:
            raise errors.NotFound(
                f"StorPool template {conn.template} does not exist at {conn.endpoint}; create "
                "it in StorPool (placement and replication) or fix the URL"
            ) from None
        tags = list(request.tags) or [request.name]
        with self._write() as tx:
            tx.execute(
                "INSERT INTO pools(uuid, name, zone_id, scope, state, sp_template, api_host, "
                "api_port, api_token, url_form, capacity_bytes, capacity_iops, tags, details, "
                "hypervisor, cluster_id, pod_id, fingerprint, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.pool_uuid,
                    request.name,
                    request.zone_id,
                    lifecycle_pb2.POOL_SCOPE_ZONE,
                    INITIALIZED,
                    conn.template,
                    conn.host,
                    conn.port,
                    conn.token,
                    conn.form,
                    request.capacity_bytes,
                    request.capacity_iops,
                    json.dumps(tags),
                    json.dumps(dict(request.details)),
                    "KVM",
                    request.cluster_id,
                    request.pod_id,
                    print_,
                    time.time(),
                ),
            )
        log.info(
            "pool %s (%s) initialized: template %s at %s",
            request.name,
            request.pool_uuid,
            conn.template,
            conn.endpoint,
        )
        return self.get(request.pool_uuid)

    def attach_zone(self, uuid: str, zone_id: str, hypervisor: str) -> PoolRecord:
        pool = self.get(uuid)
        if zone_id != pool.zone_id:
            raise errors.InvalidArgument(
                f"zone_id {zone_id} does not match: pool {pool.name} was initialized for zone "
                f"{pool.zone_id}"
            )
        if hypervisor and hypervisor.upper() != "KVM":
            raise errors.InvalidArgument(f"hypervisor {hypervisor!r} is not supported; KVM only")
        if pool.state == INITIALIZED:
            self._set_state(uuid, UP)
        return self.get(uuid)

    def attach_cluster(self, uuid: str) -> PoolRecord:
        pool = self.get(uuid)
        raise errors.FailedPrecondition(
            f"pool {pool.name} is zone-wide: StorPool primary storage cannot be attached to a "
            "cluster (attach it to its zone with AttachZone)"
        )

    def change_state(self, uuid: str, state: int) -> PoolRecord:
        pool = self.get(uuid)
        if pool.state == INITIALIZED:
            # every state past Initialized comes through AttachZone (maintenance is no shortcut)
            raise errors.FailedPrecondition(
                f"pool {pool.name} is not attached to a zone yet; call AttachZone first"
            )
        if pool.state != state:
            self._set_state(uuid, state)
            log.info(
                "pool %s (%s): %s -> %s",
                pool.name,
                uuid,
                STATE_NAMES[pool.state],
                STATE_NAMES[state],
            )
        return self.get(uuid)

    def _check_template(self, conn: Connection) -> None:
        """The pool URL's StorPool template, read through its endpoint. A host name that does
        not resolve is a mistake in the URL, not an outage: INVALID_ARGUMENT at once."""
        try:
            self.api_for(conn).template(conn.template)
        except errors.Unavailable as error:
            if error.reason != UNRESOLVABLE_HOST:
                raise
            where = _HOST_SOURCES.get(conn.form, "the host in the pool URL")
            raise errors.InvalidArgument(
                f"url: StorPool API host {conn.host!r} does not resolve; check {where}"
            ) from None

    def _set_state(self, uuid: str, state: int) -> None:
        with self._write() as tx:
            tx.execute("UPDATE pools SET state = ? WHERE uuid = ?", (state, uuid))

    def update(self, request: lifecycle_pb2.UpdatePoolRequest) -> PoolRecord:
        pool = self.get(request.pool_uuid)
        conn = pool.conn
        if request.url:
            conn = pool_url.parse(request.url, self._local)
            if conn.template != pool.template:
                raise errors.InvalidArgument(
                    f"the new url names StorPool template {conn.template}, but pool "
                    f"{pool.name} is template {pool.template}; a pool cannot change template"
                )
            self._check_template(conn)  # the new endpoint/token must work
        details = dict(pool.details)
        for key, value in request.details.items():
            if value:
                details[key] = value
            else:
                details.pop(key, None)
        tags = list(request.tags) if request.update_tags else pool.tags
        with self._write() as tx:
            tx.execute(
                "UPDATE pools SET capacity_bytes = ?, capacity_iops = ?, tags = ?, details = ?, "
                "api_host = ?, api_port = ?, api_token = ?, url_form = ? WHERE uuid = ?",
                (
                    request.capacity_bytes or pool.capacity_bytes,
                    request.capacity_iops or pool.capacity_iops,
                    json.dumps(tags),
                    json.dumps(details),
                    conn.host,
                    conn.port,
                    conn.token,
                    conn.form,
                    pool.uuid,
                ),
            )
        return self.get(pool.uuid)

    def remove(self, uuid: str) -> None:
        with self._write() as tx:
            tx.execute("DELETE FROM pools WHERE uuid = ?", (uuid,))

    def set_used(self, uuid: str, used: int) -> None:
        with self._write() as tx:
            tx.execute("UPDATE pools SET used_bytes = ? WHERE uuid = ?", (used, uuid))

    # ---- hosts ---------------------------------------------------------------------------

    def connect_host(self, uuid: str, host_id: str, client_id: int) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO pool_hosts(pool_uuid, host_id, client_id, connected) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(pool_uuid, host_id) DO UPDATE SET "
                "client_id = excluded.client_id, connected = excluded.connected",
                (uuid, host_id, client_id, time.time()),
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

    # ---- template cache entries ------------------------------------------------------------

    def cache_entry(
        self, uuid: str, template_uuid: str, snapshot_name: str, global_id: str, size: int
    ) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO template_cache(pool_uuid, template_uuid, snapshot_name, global_id, "
                "size, created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(pool_uuid, template_uuid) "
                "DO UPDATE SET snapshot_name = excluded.snapshot_name, global_id = "
                "excluded.global_id, size = excluded.size",
                (uuid, template_uuid, snapshot_name, global_id, size, time.time()),
            )

    def drop_cache_entry(self, uuid: str, template_uuid: str) -> None:
        with self._write() as tx:
            tx.execute(
                "DELETE FROM template_cache WHERE pool_uuid = ? AND template_uuid = ?",
                (uuid, template_uuid),
            )

    def cache_entries(self, uuid: str) -> list[tuple[str, str, str]]:
        """(template uuid, snapshot name, global id) of every cached template of the pool."""
        return [
            (r["template_uuid"], r["snapshot_name"], r["global_id"])
            for r in self._db.query(
                "SELECT * FROM template_cache WHERE pool_uuid = ? ORDER BY template_uuid", (uuid,)
            )
        ]
