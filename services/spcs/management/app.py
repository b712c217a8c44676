"""Wiring of the management service: state database, registries, domain objects, gRPC services."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spcs.common import authz, errors
from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.locks import KeyedLocks, Locks
from spcs.common.operations import OperationsServicer
from spcs.common.server import Binding, Server, bind, bind_operations
from spcs.common.tls import TlsFiles
from spcs.management import recovery, zones
from spcs.management.abandoned import Abandoned
from spcs.management.copies import Copies
from spcs.management.heartbeat import Heartbeats
from spcs.management.hosts import HostEvents
from spcs.management.inventory import Inventory
from spcs.management.leases import LeasedLocks, replica_id
from spcs.management.lifecycle import PoolLifecycle
from spcs.management.nodecalls import NodeCalls
from spcs.management.nodes import NodeDirectory
from spcs.management.pools import Pools, api_clients
from spcs.management.servicers import (
    DriverServicer,
    HostListenerServicer,
    LifecycleServicer,
    NodeRegistryServicer,
    SnapshotStrategyServicer,
    VMSnapshotStrategyServicer,
)
from spcs.management.settings import ManagementSettings
from spcs.management.shared_operations import SharedOperations
from spcs.management.snapshots import Snapshots
from spcs.management.sql import is_sqlite
from spcs.management.sql_state import SqlState, lock_sqlite
from spcs.management.state import LeaseStore, StateStore
from spcs.management.templates import TemplateCache
from spcs.management.volumes import STATS_SECONDS, Volumes
from spcs.management.zones import ZoneCopies
from spcs.storpool.api import RetryPolicy
from spcs.storpool.client import ClientFactory
from spcs.storpool.conf import StorPoolConf
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
)

log = logging.getLogger(__name__)
NAME = "spcs-management"
FEATURES = (
    "template-cache",
    "snapshot-backup-qcow2",
    "vm-snapshots",
    "revert",
    "resize-notify",
    "pool-migration",
    "mutual-tls",
    "host-heartbeat",
    "delay-delete",
    "abandoned-objects",
    "cross-zone-snapshot-copy",
)


@dataclass(frozen=True)
class Domain:
    """The management service's domain objects, wired together (no gRPC, no server): what the
    servicers call, and what in-process tests drive directly."""

    store: StateStore
    locks: Locks
    registry: SharedOperations
    nodes: NodeDirectory
    calls: NodeCalls
    pools: Pools
    volumes: Volumes
    snapshots: Snapshots
    templates: TemplateCache
    copies: Copies
    lifecycle: PoolLifecycle
    zones: ZoneCopies


def build_domain(
    store: StateStore,
    clients: ClientFactory,
    *,
    local: StorPoolConf | None = None,
    tls: TlsFiles | None = None,
    node_retry_seconds: float = 30.0,
    volume_stats_seconds: float = STATS_SECONDS,
    leases: LeaseStore | None = None,
    replica: str = "",
    zone_copy_stall_seconds: float = zones.DEFAULT_STALL_SECONDS,
) -> Domain:
    """`leases`: hold through this shared store (several replicas), as `replica`; without,
    holds are kept in this process."""
    locks: Locks = KeyedLocks() if leases is None else LeasedLocks(leases, replica)
    nodes = NodeDirectory(store, tls)
    registry = SharedOperations(
        store.operations, owner=replica, service_name=NAME, locks=locks, alone=leases is None
    )
    pools = Pools(store, local, clients)
    calls = NodeCalls(nodes, node_retry_seconds)
    volumes = Volumes(pools, calls, locks, volume_stats_seconds)
    snapshots = Snapshots(pools, locks)
    templates = TemplateCache(pools, calls, locks)
    copies = Copies(pools, calls, volumes, snapshots, templates, registry)
    lifecycle = PoolLifecycle(pools, templates, locks)
    return Domain(
        store,
        locks,
        registry,
        nodes,
        calls,
        pools,
        volumes,
        snapshots,
        templates,
        copies,
        lifecycle,
        ZoneCopies(pools, registry, stall_seconds=zone_copy_stall_seconds),
    )


def _lifecycle_servicer(d: Domain) -> LifecycleServicer:
    inventory = Inventory(d.pools, d.nodes)
    abandoned = Abandoned(inventory, d.locks, d.registry.is_running)
    return LifecycleServicer(d.pools, d.lifecycle, d.locks, inventory, abandoned)


def _bindings(d: Domain) -> list[Binding]:
    return [
        bind(
            lifecycle_pb2,
            lifecycle_pb2_grpc,
            "PrimaryDataStoreLifeCycle",
            _lifecycle_servicer(d),
        ),
        bind(
            driver_pb2,
            driver_pb2_grpc,
            "PrimaryDataStoreDriver",
            DriverServicer(d.pools, d.volumes, d.snapshots, d.templates, d.copies, d.lifecycle),
        ),
        bind(
            strategies_pb2,
            strategies_pb2_grpc,
            "SnapshotStrategy",
            SnapshotStrategyServicer(d.snapshots, d.copies, d.zones),
        ),
        bind(
            strategies_pb2,
            strategies_pb2_grpc,
            "VMSnapshotStrategy",
            VMSnapshotStrategyServicer(d.snapshots),
        ),
        bind(
            hosts_pb2,
            hosts_pb2_grpc,
            "HostListener",
            HostListenerServicer(HostEvents(d.pools, d.nodes, d.calls)),
        ),
        bind(
            hosts_pb2,
            hosts_pb2_grpc,
            "NodeRegistry",
            NodeRegistryServicer(d.nodes, Heartbeats(d.nodes, d.calls), d.calls.running),
        ),
        bind_operations(OperationsServicer(d.registry)),
    ]


def _probe(d: Domain) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        """Ready when the database answers and every pool's StorPool API takes our token."""
        d.store.ping()
        checked = []
        for pool in d.pools.all():
            try:
                d.pools.api(pool).for_probes().template(pool.template)
            except errors.SpcsError as error:
                raise errors.FailedPrecondition(
                    f"pool {pool.name} ({pool.uuid}): StorPool is not usable: {error.message}"
                ) from None
            checked.append(pool.name)
        return True, f"database ok; StorPool reachable for pools: {', '.join(checked) or 'none'}"

    return probe


def build(settings: ManagementSettings) -> Server:
    replica = replica_id()
    url = settings.state_url
    # held while the service runs: `spcs migrate-db` refuses a file a live service uses
    lock = lock_sqlite(Path(str(url.database)), exclusive=False) if is_sqlite(url) else None
    store = SqlState(url, settings.database_password, replica=replica)
    shared = not is_sqlite(settings.state_url)
    tls = TlsFiles(
        settings.server.tls_cert,
        settings.server.tls_key,
        settings.server.tls_ca,
        settings.server.tls_client_auth,
    )
    retry = RetryPolicy(total_seconds=settings.storpool_retry_seconds)
    d = build_domain(
        store,
        api_clients(retry),
        local=settings.storpool,
        tls=tls,
        node_retry_seconds=settings.node_retry_seconds,
        volume_stats_seconds=settings.volume_stats_seconds,
        leases=store if shared else None,
        replica=replica,
        zone_copy_stall_seconds=settings.zone_copy_stall_seconds,
    )
    bindings = _bindings(d)
    identity = IdentityInfo(
        name=NAME,
        services=[],
        features=FEATURES,
        storpool_cluster_id=settings.storpool.cluster_id or "",
        probe=_probe(d),
    )
    bindings.insert(
        0, bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(identity))
    )
    identity.services = [b.name for b in bindings]
    server = Server(NAME, settings.server, bindings, authz.management_policy())

    sweeper = recovery.Sweeper(d.pools, d.registry.is_running)
    d.registry.on_take_over(lambda rows: recovery.stop_node_jobs(d.calls, rows))
    d.registry.on_take_over(lambda _rows: sweeper.request())
    server.on_start(sweeper.start)
    server.on_start(d.registry.serve)
    server.on_stop(d.registry.stop)
    server.on_stop(sweeper.stop)
    if isinstance(d.locks, LeasedLocks):
        server.on_start(d.locks.start)
        server.on_stop(d.locks.stop)
    server.on_stop(d.nodes.close)
    server.on_stop(store.close)
    if lock is not None:
        server.on_stop(lambda: os.close(lock))
    return server
