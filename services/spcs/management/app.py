"""Wiring of the management service: database, registries, domain objects, gRPC services."""

from __future__ import annotations

import logging

from spcs.common import authz, errors
from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.journal import SqliteJournal
from spcs.common.locks import KeyedLocks
from spcs.common.operations import OperationRegistry, OperationsServicer
from spcs.common.server import Server, bind, bind_operations
from spcs.common.tls import TlsFiles
from spcs.management import recovery
from spcs.management.copies import Copies
from spcs.management.db import open_database
from spcs.management.hosts import HostEvents
from spcs.management.lifecycle import PoolLifecycle
from spcs.management.nodecalls import NodeCalls
from spcs.management.nodes import NodeDirectory, NodeRegistryServicer
from spcs.management.pools import Pools
from spcs.management.servicers import (
    DriverServicer,
    HostListenerServicer,
    LifecycleServicer,
    SnapshotStrategyServicer,
    VMSnapshotStrategyServicer,
)
from spcs.management.settings import ManagementSettings
from spcs.management.snapshots import Snapshots
from spcs.management.templates import TemplateCache
from spcs.management.volumes import Volumes
from spcs.storpool.api import RetryPolicy
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
)


def build(settings: ManagementSettings) -> Server:
    db = open_database(settings.db)
    tls = TlsFiles(
        settings.server.tls_cert,
        settings.server.tls_key,
        settings.server.tls_ca,
        settings.server.tls_client_auth,
    )
    locks = KeyedLocks()
    nodes = NodeDirectory(db, tls)
    registry = OperationRegistry(journal=SqliteJournal(db), service_name=NAME, locks=locks)
    pools = Pools(db, settings.storpool, RetryPolicy(total_seconds=settings.storpool_retry_seconds))
    calls = NodeCalls(nodes, settings.node_retry_seconds)
    volumes = Volumes(pools, calls, locks, settings.volume_stats_seconds)
    snapshots = Snapshots(pools, locks)
    templates = TemplateCache(pools, calls, locks)
    copies = Copies(pools, calls, volumes, snapshots, templates, registry)
    lifecycle = PoolLifecycle(pools, templates, locks)
    bindings = [
        bind(
            lifecycle_pb2,
            lifecycle_pb2_grpc,
            "PrimaryDataStoreLifeCycle",
            LifecycleServicer(pools, lifecycle, locks),
        ),
        bind(
            driver_pb2,
            driver_pb2_grpc,
            "PrimaryDataStoreDriver",
            DriverServicer(pools, volumes, snapshots, templates, copies, lifecycle, locks),
        ),
        bind(
            strategies_pb2,
            strategies_pb2_grpc,
            "SnapshotStrategy",
            SnapshotStrategyServicer(snapshots, copies, registry),
        ),
        bind(
            strategies_pb2,
            strategies_pb2_grpc,
            "VMSnapshotStrategy",
            VMSnapshotStrategyServicer(snapshots),
        ),
        bind(
            hosts_pb2,
            hosts_pb2_grpc,
            "HostListener",
            HostListenerServicer(HostEvents(pools, nodes, calls)),
        ),
        bind(hosts_pb2, hosts_pb2_grpc, "NodeRegistry", NodeRegistryServicer(nodes, calls.running)),
        bind_operations(OperationsServicer(registry)),
    ]

    def probe() -> tuple[bool, str]:
        """Ready when the database answers and every pool's StorPool API takes our token."""
        db.query("SELECT 1")
        checked = []
        for pool in pools.all():
            try:
                pools.api(pool).for_probes().template(pool.template)
            except errors.SpcsError as error:
                raise errors.FailedPrecondition(
                    f"pool {pool.name} ({pool.uuid}): StorPool is not usable: {error.message}"
                ) from None
            checked.append(pool.name)
        return True, f"database ok; StorPool reachable for pools: {', '.join(checked) or 'none'}"

    identity = IdentityInfo(
        name=NAME,
        services=[],
        features=FEATURES,
        storpool_cluster_id=settings.storpool.cluster_id or "",
        probe=probe,
    )
    bindings.insert(
        0, bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(identity))
    )
    identity.services = [b.name for b in bindings]
    server = Server(NAME, settings.server, bindings, authz.management_policy())
    server.on_start(lambda: recovery.sweep_in_background(pools, registry.is_running))
    server.on_stop(nodes.close)
    server.on_stop(db.close)
    return server
