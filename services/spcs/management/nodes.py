"""Registered node services: who they are, whether they are healthy, and channels to them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf import timestamp_pb2

from spcs.common import errors, validate
from spcs.common.sqlite import Database
from spcs.common.tls import TlsFiles, open_channel
from spcs.v1 import hosts_pb2, hosts_pb2_grpc

# A node announces itself every REFRESH seconds; after STALE without news it is unhealthy.
REFRESH_SECONDS = 30
STALE_SECONDS = 3 * REFRESH_SECONDS
DEFAULT_MAX_COPIES = 2  # the node's own default, for nodes that do not announce theirs


@dataclass(frozen=True)
class NodeRecord:
    host_id: str
    address: str
    client_id: int
    cluster_id: str
    version: str
    last_seen: float
    client_running: bool
    max_copies: int = DEFAULT_MAX_COPIES

    @property
    def healthy(self) -> bool:
        return time.time() - self.last_seen < STALE_SECONDS


class NodeDirectory:
    def __init__(self, db: Database, tls: TlsFiles | None = None) -> None:
        self._db = db
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
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO nodes(host_id, address, client_id, cluster_id, version, last_seen, "
                "max_copies) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(host_id) DO UPDATE SET "
                "address=excluded.address, client_id=excluded.client_id, "
                "cluster_id=excluded.cluster_id, version=excluded.version, "
                "last_seen=excluded.last_seen, max_copies=excluded.max_copies",
                (host_id, address, client_id, cluster_id, version, time.time(), max_copies),
            )

    def forget(self, host_id: str) -> bool:
        with self._db.transaction() as conn:
            removed = conn.execute("DELETE FROM nodes WHERE host_id = ?", (host_id,)).rowcount
        with self._lock:
            cached = self._channels.pop(host_id, None)
        if cached is not None:
            cached[1].close()
        return bool(removed)

    def set_client_running(self, host_id: str, running: bool) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE nodes SET client_running = ? WHERE host_id = ?", (int(running), host_id)
            )

    def _record(self, row) -> NodeRecord:  # type: ignore[no-untyped-def]
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

    def get(self, host_id: str) -> NodeRecord:
        rows = self._db.query("SELECT * FROM nodes WHERE host_id = ?", (host_id,))
        if not rows:
            raise errors.NotFound(
                f"no node service has registered for host {host_id!r}; start `spcs node "
                f"--host-id {host_id} --management <this service>` on that host"
            )
        return self._record(rows[0])

    def all(self) -> list[NodeRecord]:
        return [self._record(row) for row in self._db.query("SELECT * FROM nodes ORDER BY host_id")]

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


class NodeRegistryServicer(hosts_pb2_grpc.NodeRegistryServicer):
    def __init__(
        self, nodes: NodeDirectory, copies_running: Callable[[str], int] = lambda _host: 0
    ) -> None:
        self._nodes = nodes
        self._copies_running = copies_running

    def RegisterNode(self, request, context):
        validate.require(request, "host_id", "address", "storpool_client_id")
        validate.identifier(request.host_id, "host_id")
        if not 1 <= request.storpool_client_id <= 4095:
            raise errors.InvalidArgument(
                f"storpool_client_id {request.storpool_client_id} is outside 1-4095 (SP_OURID)"
            )
        self._nodes.register(
            request.host_id,
            request.address,
            request.storpool_client_id,
            request.storpool_cluster_id,
            request.version,
            request.max_copies or DEFAULT_MAX_COPIES,
        )
        return hosts_pb2.RegisterNodeResponse(refresh_seconds=REFRESH_SECONDS)

    def ListNodes(self, request, context):
        return hosts_pb2.ListNodesResponse(
            nodes=[
                node_message(n, copies_running=self._copies_running(n.host_id))
                for n in self._nodes.all()
            ]
        )
