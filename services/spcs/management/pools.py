"""Primary storage pools: their lifecycle and their StorPool connections.

A pool is one StorPool template on one StorPool API endpoint (the Java plugin refuses a second
pool on the same endpoint and template, and so do we). Pools are zone-wide and KVM-only. The
token is kept in the state store and used for API calls; it never leaves this module in a reply,
an error or a log line.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from spcs.common import errors, validate
from spcs.management import pool_url
from spcs.management.pool_url import Connection
from spcs.management.state import PoolChanges, PoolRecord, StateStore, delete_after_seconds
from spcs.storpool.api import UNRESOLVABLE_HOST, RetryPolicy, StorPoolApi
from spcs.storpool.client import ClientFactory, StorPoolClient
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
# Where the API host of each pool URL form comes from, for an unresolvable host.
_HOST_SOURCES = {
    "parameters": "SP_API_HTTP=<host>:<port> in the pool URL",
    "storpool-url": "the host of storpool://TOKEN@<host>:<port>/TEMPLATE in the pool URL",
    "template": "SP_API_HTTP_HOST in this management host's StorPool config (the URL names "
    "only a template)",
}


def _fingerprint(request: lifecycle_pb2.InitializePoolRequest) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def api_clients(retry: RetryPolicy | None = None) -> ClientFactory:
    """The production client factory: StorPool's REST API, with our retry policy."""

    def make(host: str, port: int, token: str) -> StorPoolClient:
        return StorPoolApi(host, port, token, retry=retry)

    return make


def _check_kvm_zone(request: lifecycle_pb2.InitializePoolRequest) -> None:
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


def _new_record(
    request: lifecycle_pb2.InitializePoolRequest, conn: Connection, fingerprint: str
) -> PoolRecord:
    return PoolRecord(
        uuid=request.pool_uuid,
        name=request.name,
        zone_id=request.zone_id,
        scope=lifecycle_pb2.POOL_SCOPE_ZONE,
        state=INITIALIZED,
        conn=conn,
        capacity_bytes=request.capacity_bytes,
        capacity_iops=request.capacity_iops,
        used_bytes=0,
        tags=list(request.tags) or [request.name],
        details=dict(request.details),
        hypervisor="KVM",
        cluster_id=request.cluster_id,
        pod_id=request.pod_id,
        fingerprint=fingerprint,
    )


class Pools:
    def __init__(
        self, store: StateStore, local: StorPoolConf | None, clients: ClientFactory
    ) -> None:
        self.store = store
        self._local = local
        self._clients = clients
        self._apis: dict[tuple[str, int, str], StorPoolClient] = {}
        self._apis_lock = threading.Lock()

    # ---- connections ---------------------------------------------------------------------

    def api_for(self, conn: Connection) -> StorPoolClient:
        """One client per endpoint and token (it keeps that endpoint's space cache)."""
        key = (conn.host, conn.port, conn.token)
        with self._apis_lock:
            api = self._apis.get(key)
            if api is None:
                api = self._apis[key] = self._clients(conn.host, conn.port, conn.token)
            return api

    def api(self, pool: PoolRecord) -> StorPoolClient:
        return self.api_for(pool.conn)

    # ---- reading -------------------------------------------------------------------------

    def find(self, uuid: str) -> PoolRecord | None:
        return self.store.pool(uuid)

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
        return self.store.pools()

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
        """Add the pool (a replay with the same arguments answers the pool as it is)."""
        _check_kvm_zone(request)
        delete_after_seconds(dict(request.details))
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
        self._check_template_is_free(conn)
        try:
            self._check_template(conn)
        except errors.NotFound:
            raise errors.NotFound(
                f"StorPool template {conn.template} does not exist at {conn.endpoint}; create "
                "it in StorPool (placement and replication) or fix the URL"
            ) from None
        self.store.add_pool(_new_record(request, conn, print_))
        log.info(
            "pool %s (%s) initialized: template %s at %s",
            request.name,
            request.pool_uuid,
            conn.template,
            conn.endpoint,
        )
        return self.get(request.pool_uuid)

    def _check_template_is_free(self, conn: Connection) -> None:
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

    def change_state(self, uuid: str, state: lifecycle_pb2.PoolState.ValueType) -> PoolRecord:
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

    def _set_state(self, uuid: str, state: lifecycle_pb2.PoolState.ValueType) -> None:
        self.store.set_pool_state(uuid, state)

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
        delete_after_seconds(details)
        tags = list(request.tags) if request.update_tags else pool.tags
        self.store.update_pool(
            pool.uuid,
            PoolChanges(
                capacity_bytes=request.capacity_bytes or pool.capacity_bytes,
                capacity_iops=request.capacity_iops or pool.capacity_iops,
                tags=tags,
                details=details,
                conn=conn,
            ),
        )
        return self.get(pool.uuid)

    def remove(self, uuid: str) -> None:
        self.store.remove_pool(uuid)

    def set_used(self, uuid: str, used: int) -> None:
        self.store.set_pool_used(uuid, used)
