"""Registered node services: who they are, whether they are healthy, and channels to them."""

from __future__ import annotations

import threading
import time

import grpc
from google.protobuf import timestamp_pb2

from spcs.common import errors
from spcs.common.tls import TlsFiles, open_channel
from spcs.management.state import DEFAULT_MAX_COPIES, NodeRecord, StateStore
from spcs.v1 import hosts_pb2


class NodeDirectory:
    def __init__(self, store: StateStore, tls: TlsFiles | None = None) -> None:
        self._store = store
        self._tls = tls
        self._channels: dict[str, tuple[str, grpc.Channel]] = {}
        self._lock = threading.Lock()

    def register(
        self,
        host_id: str,
        address: str,
        client_id: int,
        cluster_id: str,
        version: str,
        max_copies: int = DEFAULT_MAX_COPIES,
    ) -> None:
        self._store.register_node(
            NodeRecord(
                host_id, address, client_id, cluster_id, version, time.time(), False, max_copies
            )
        )

    def pools_of(self, host_id: str) -> list[str]:
        """The pools the host is connected to."""
        return self._store.pools_of_host(host_id)

    def forget(self, host_id: str) -> bool:
        removed = self._store.forget_node(host_id)
        with self._lock:
            cached = self._channels.pop(host_id, None)
        if cached is not None:
            cached[1].close()
        return removed

    def set_client_running(self, host_id: str, running: bool) -> None:
        self._store.set_client_running(host_id, running)

    def get(self, host_id: str) -> NodeRecord:
        node = self._store.node(host_id)
        if node is None:
            raise errors.NotFound(
                f"no node service has registered for host {host_id!r}; start `spcs node "
                f"--host-id {host_id} --management <this service>` on that host"
            )
        return node

    def all(self) -> list[NodeRecord]:
        return self._store.nodes()

    def channel(self, host_id: str) -> grpc.Channel:
        node = self.get(host_id)
        with self._lock:
            cached = self._channels.get(host_id)
            if cached is not None and cached[0] == node.address:
                return cached[1]
            if cached is not None:
                cached[1].close()
            channel = open_channel(node.address, self._tls)
            self._channels[host_id] = (node.address, channel)
            return channel

    def renew_channel(self, host_id: str) -> None:
        """Connect afresh next time: a channel to a node that was down sits out gRPC's reconnect
        backoff. The old channel is left to calls still using it (closed once unreferenced)."""
        with self._lock:
            self._channels.pop(host_id, None)

    def close(self) -> None:
        with self._lock:
            for _, channel in self._channels.values():
                channel.close()
            self._channels.clear()


def node_message(
    node: NodeRecord, pool_uuids: list[str] | None = None, copies_running: int = 0
) -> hosts_pb2.Node:
    seen = timestamp_pb2.Timestamp()
    seen.FromNanoseconds(int(node.last_seen * 1e9))
    return hosts_pb2.Node(
        host_id=node.host_id,
        address=node.address,
        storpool_client_id=node.client_id,
        storpool_cluster_id=node.cluster_id,
        version=node.version,
        last_seen=seen,
        healthy=node.healthy,
        storpool_client_running=node.client_running,
        pool_uuids=pool_uuids or [],
        max_copies=node.max_copies,
        copies_running=copies_running,
    )
