"""Wiring of the management service: database, registries and the gRPC services."""

from __future__ import annotations

import logging

from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.journal import SqliteJournal
from spcs.common.operations import OperationRegistry, OperationsServicer
from spcs.common.server import Server, bind, bind_operations
from spcs.common.tls import TlsFiles
from spcs.management.db import open_database
from spcs.management.nodes import NodeDirectory, NodeRegistryServicer
from spcs.management.settings import ManagementSettings
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


def build(settings: ManagementSettings) -> Server:
    db = open_database(settings.db)
    tls = TlsFiles(
        settings.server.tls_cert,
        settings.server.tls_key,
        settings.server.tls_ca,
        settings.server.tls_client_auth,
    )
    nodes = NodeDirectory(db, tls)
    operations = OperationRegistry(journal=SqliteJournal(db), service_name=NAME)
    bindings = [
        bind(
            lifecycle_pb2,
            lifecycle_pb2_grpc,
            "PrimaryDataStoreLifeCycle",
            lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleServicer(),
        ),
        bind(
            driver_pb2,
            driver_pb2_grpc,
            "PrimaryDataStoreDriver",
            driver_pb2_grpc.PrimaryDataStoreDriverServicer(),
        ),
        bind(
            strategies_pb2,
            strategies_pb2_grpc,
            "SnapshotStrategy",
            strategies_pb2_grpc.SnapshotStrategyServicer(),
        ),
        bind(
            strategies_pb2,
            strategies_pb2_grpc,
            "VMSnapshotStrategy",
            strategies_pb2_grpc.VMSnapshotStrategyServicer(),
        ),
        bind(hosts_pb2, hosts_pb2_grpc, "HostListener", hosts_pb2_grpc.HostListenerServicer()),
        bind(hosts_pb2, hosts_pb2_grpc, "NodeRegistry", NodeRegistryServicer(nodes)),
        bind_operations(OperationsServicer(operations)),
    ]
    identity = IdentityInfo(
        name=NAME,
        services=[b.name for b in bindings],
        storpool_cluster_id=settings.storpool.cluster_id or "",
    )
    bindings.insert(
        0, bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(identity))
    )
    identity.services = [b.name for b in bindings]
    server = Server(NAME, settings.server, bindings)
    server.on_stop(nodes.close)
    server.on_stop(db.close)
    return server
