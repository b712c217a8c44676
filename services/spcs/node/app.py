"""Wiring of the node service: StorPool access for this host, copy jobs, the gRPC services."""

from __future__ import annotations

import logging

from spcs import _datamover
from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.operations import OperationRegistry, OperationsServicer
from spcs.common.server import Server, bind, bind_operations
from spcs.node.settings import NodeSettings
from spcs.v1 import identity_pb2, identity_pb2_grpc, node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)
NAME = "spcs-node"


def build(settings: NodeSettings) -> Server:
    for directory in (settings.mount_root, settings.state_dir):
        directory.mkdir(parents=True, exist_ok=True)
    operations = OperationRegistry(
        host_id=settings.host_id, max_running=settings.max_copies, service_name=NAME
    )
    bindings = [
        bind(node_pb2, node_pb2_grpc, "StorageAdaptor", node_pb2_grpc.StorageAdaptorServicer()),
        bind(node_pb2, node_pb2_grpc, "AgentCommands", node_pb2_grpc.AgentCommandsServicer()),
        bind_operations(OperationsServicer(operations)),
    ]
    identity = IdentityInfo(
        name=NAME,
        services=[],
        host_id=settings.host_id,
        storpool_client_id=settings.storpool.our_id or 0,
        storpool_cluster_id=settings.storpool.cluster_id or "",
        datamover_version=_datamover.__version__,
    )
    bindings.insert(
        0, bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(identity))
    )
    identity.services = [b.name for b in bindings]
    return Server(NAME, settings.server, bindings)
