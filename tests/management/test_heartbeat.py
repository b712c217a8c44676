"""The KVM HA heartbeat over gRPC: a node reports StorPool's view of its own client and its
neighbours' (one service list), and management answers CloudStack's HA investigator about a
host through another host's node, falling back to the next node (and last to the host's own)
when one does not answer; the emulator shows a client down as a dead host's would be."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from spcs.v1 import (
    hosts_pb2,
    hosts_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from tests.management.helpers import running_stack


def test_heartbeat_through_neighbours(tmp_path: Path):
    with running_stack(tmp_path, pool=False) as mgmt:
        emulator = mgmt.stack.emulator
        assert emulator is not None
        registry = hosts_pb2_grpc.NodeRegistryStub(mgmt.channel)

        def heartbeat(host: str, via: str = "") -> hosts_pb2.CheckHostHeartbeatResponse:
            return registry.CheckHostHeartbeat(
                hosts_pb2.CheckHostHeartbeatRequest(host_id=host, via_host_id=via), timeout=30
            )

        # the node's own RPC: this host's client and the neighbours asked about
        node1 = node_pb2_grpc.AgentCommandsStub(mgmt.node_channel(1))
        seen = node1.CheckHeartbeat(node_pb2.CheckHeartbeatRequest(neighbour_client_ids=[2, 99]))
        assert (seen.own.client_id, seen.own.status, seen.own.running) == (1, "running", True)
        assert [(n.client_id, n.status, n.running) for n in seen.neighbours] == [
            (2, "running", True),
            (99, "", False),
        ]
        features = identity_pb2_grpc.IdentityStub(mgmt.node_channel(1)).GetServerCapabilities(
            identity_pb2.GetServerCapabilitiesRequest()
        )
        assert "host-heartbeat" in features.features

        alive = heartbeat("host-1")
        assert (alive.alive, alive.status, alive.storpool_client_id) == (True, "running", 1)
        assert alive.checked_by_host_id == "host-2"  # asked through the other host

        # host-1 dies: StorPool shows its client down, and its neighbour says so
        emulator.set_client_running(1, False)
        dead = heartbeat("host-1")
        assert (dead.alive, dead.status, dead.checked_by_host_id) == (False, "down", "host-2")
        assert "client 1 down" in dead.message and "host-2" in dead.message
        assert heartbeat("host-1", via="host-1").checked_by_host_id == "host-1"
        emulator.set_client_running(1, True)

        # host-2's node is gone: the question falls back to host-1's own node
        node2 = mgmt.stack.nodes[1]
        node2.popen.send_signal(signal.SIGKILL)
        node2.popen.wait(10)
        fallback = heartbeat("host-1")
        assert (fallback.alive, fallback.checked_by_host_id) == (True, "host-1")
        with pytest.raises(grpc.RpcError) as through_dead:
            heartbeat("host-1", via="host-2")
        assert through_dead.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "host-2" in (through_dead.value.details() or "")

        # about the dead node's host: host-1's node asks, and StorPool still shows client 2
        # running (a node can die while its host and StorPool client live on)
        about2 = heartbeat("host-2")
        assert (about2.alive, about2.checked_by_host_id) == (True, "host-1")

        # no node left to ask: UNAVAILABLE, naming each node tried
        node1_process = mgmt.stack.nodes[0]
        node1_process.popen.send_signal(signal.SIGKILL)
        node1_process.popen.wait(10)
        with pytest.raises(grpc.RpcError) as nobody:
            heartbeat("host-1")
        assert nobody.value.code() == grpc.StatusCode.UNAVAILABLE
        details = nobody.value.details() or ""
        assert "cannot tell whether host host-1" in details
        assert "host-2:" in details and "host-1:" in details

        for bad, code in (
            (hosts_pb2.CheckHostHeartbeatRequest(host_id="host-nope"), grpc.StatusCode.NOT_FOUND),
            (
                hosts_pb2.CheckHostHeartbeatRequest(host_id="host-1", via_host_id="host-nope"),
                grpc.StatusCode.NOT_FOUND,
            ),
            (hosts_pb2.CheckHostHeartbeatRequest(), grpc.StatusCode.INVALID_ARGUMENT),
            (
                hosts_pb2.CheckHostHeartbeatRequest(host_id="host-1", via_host_id="a b"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                registry.CheckHostHeartbeat(bad, timeout=30)
            assert refused.value.code() == code
