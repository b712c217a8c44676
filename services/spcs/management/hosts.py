"""CloudStack's host listener: which KVM hosts can use which pool.

Host connect asks the host's node to probe StorPool (client id, cluster id, client running) and
records the host as connected. A host without a usable StorPool client, or whose StorPool
cluster id is unknown, is skipped with a warning (connected=false), never an error, and a
(re)connecting host never touches the pool's capacity — the reason the Java plugin has its own
listener instead of CloudStack's default.
"""

from __future__ import annotations

import logging

from spcs.common import errors
from spcs.management.nodecalls import NodeCalls
from spcs.management.nodes import NodeDirectory, node_message
from spcs.management.pools import Pools
from spcs.v1 import hosts_pb2, node_pb2

log = logging.getLogger(__name__)


class HostEvents:
    def __init__(self, pools: Pools, nodes: NodeDirectory, calls: NodeCalls) -> None:
        self.pools = pools
        self.nodes = nodes
        self.calls = calls

    def connect(self, request: hosts_pb2.HostConnectRequest) -> hosts_pb2.HostConnectResponse:
        pool = self.pools.get(request.pool_uuid)
        try:
            node = self.nodes.get(request.host_id)
        except errors.NotFound as missing:
            return self._skip(request, missing.message)
        try:
            probe = self.calls.command(
                request.host_id,
                "ModifyStoragePool",
                lambda s: s.ModifyStoragePool,
                node_pb2.ModifyStoragePoolRequest(pool_uuid=pool.uuid, add=True),
            )
        except (errors.Unavailable, errors.FailedPrecondition, errors.NotFound) as error:
            return self._skip(request, f"its node could not probe StorPool: {error.message}")
        self.nodes.set_client_running(request.host_id, probe.client_running)
        if not probe.client_running:
            return self._skip(
                request, f"the StorPool client {probe.storpool_client_id} is not running on it"
            )
        if not probe.storpool_cluster_id:
            # CloudStack's agent refuses a host whose cluster id it can not tell
            return self._skip(
                request,
                "its node knows no StorPool cluster id: SP_CLUSTER_ID is not set in the "
                "host's StorPool config and StorPool shows no volume or snapshot to read it "
                "from; set SP_CLUSTER_ID=<location>.<subcluster> in /etc/storpool.conf on "
                f"host {request.host_id} (or in the file its node's --storpool-conf names, or "
                "in the node's environment) and restart the node",
            )
        self.pools.store.connect_host(pool.uuid, request.host_id, probe.storpool_client_id)
        log.info(
            "host %s connected to pool %s (StorPool client %d, cluster %s)",
            request.host_id,
            pool.name,
            probe.storpool_client_id,
            probe.storpool_cluster_id,
        )
        return hosts_pb2.HostConnectResponse(
            connected=True,
            reason=f"StorPool client {probe.storpool_client_id} running",
            node=node_message(
                self.nodes.get(node.host_id), self.pools.store.pools_of_host(request.host_id)
            ),
        )

    def _skip(
        self, request: hosts_pb2.HostConnectRequest, why: str
    ) -> hosts_pb2.HostConnectResponse:
        log.warning("host %s not connected to pool %s: %s", request.host_id, request.pool_uuid, why)
        self.pools.store.disconnect_host(request.host_id, [request.pool_uuid])
        return hosts_pb2.HostConnectResponse(connected=False, reason=why)

    def disconnected(self, request: hosts_pb2.HostEventRequest) -> str:
        pools = [request.pool_uuid] if request.pool_uuid else None
        count = self.pools.store.disconnect_host(request.host_id, pools)
        return f"host {request.host_id} disconnected from {count} pool(s)"

    def added(self, request: hosts_pb2.HostEventRequest) -> str:
        try:
            node = self.nodes.get(request.host_id)
        except errors.NotFound:
            return (
                f"host {request.host_id} added; no node service has registered for it yet "
                "(start `spcs node` there)"
            )
        return f"host {request.host_id} added; its node at {node.address} is registered"

    def about_to_be_removed(self, request: hosts_pb2.HostEventRequest) -> str:
        pools = self.pools.store.pools_of_host(request.host_id)
        return (
            f"host {request.host_id} is connected to {len(pools)} pool(s); they are "
            "disconnected when it is removed"
        )

    def removed(self, request: hosts_pb2.HostEventRequest) -> str:
        count = self.pools.store.disconnect_host(request.host_id)
        forgotten = self.nodes.forget(request.host_id)
        return (
            f"host {request.host_id} removed: disconnected from {count} pool(s)"
            f"{', its node registration dropped' if forgotten else ''}"
        )
