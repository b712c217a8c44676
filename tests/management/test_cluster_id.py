"""A host is connected only when its StorPool cluster id is known: a node started without
SP_CLUSTER_ID takes it from StorPool (the global ids of the cluster's objects), or HostConnect
answers connected=false naming SP_CLUSTER_ID. Real services: the emulator, management, nodes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spcs.v1 import hosts_pb2, hosts_pb2_grpc, lifecycle_pb2, node_pb2, node_pb2_grpc
from tests.management.helpers import MIB, Mgmt, running_stack


@pytest.fixture
def mgmt(tmp_path: Path) -> Iterator[Mgmt]:
    """A stack with a pool whose hosts are connected, and no StorPool object yet."""
    with running_stack(tmp_path) as stack:
        yield stack


def restart_node_without_cluster_id(mgmt: Mgmt, n: int) -> None:
    """Node `n` again, from a StorPool config that has no SP_CLUSTER_ID."""
    stack = mgmt.stack
    old = stack.nodes[n - 1]
    old.popen.send_signal(signal.SIGTERM)
    assert old.popen.wait(20) == 0
    conf = stack.workdir / f"storpool.client-{n}.conf"
    lines = conf.read_text().splitlines()
    kept = [line for line in lines if not line.startswith("SP_CLUSTER_ID=")]
    conf.write_text("\n".join(kept) + "\n")
    stack.restart_node(n)
    wait_registered(mgmt, f"host-{n}", stack.nodes[n - 1].address)


def registered(mgmt: Mgmt, host_id: str) -> hosts_pb2.Node | None:
    registry = hosts_pb2_grpc.NodeRegistryStub(mgmt.channel)
    nodes = registry.ListNodes(hosts_pb2.ListNodesRequest(), timeout=5).nodes
    return next((node for node in nodes if node.host_id == host_id), None)


def wait_registered(mgmt: Mgmt, host_id: str, address: str) -> hosts_pb2.Node:
    deadline = time.monotonic() + 30
    while True:
        node = registered(mgmt, host_id)
        if node is not None and node.address == address and node.healthy:
            return node
        assert time.monotonic() < deadline, f"{host_id} did not register from {address}"
        time.sleep(0.1)


def probe(mgmt: Mgmt, n: int) -> node_pb2.ModifyStoragePoolResponse:
    with mgmt.node_channel(n) as channel:
        return node_pb2_grpc.AgentCommandsStub(channel).ModifyStoragePool(
            node_pb2.ModifyStoragePoolRequest(pool_uuid=mgmt.pool_uuid, add=True)
        )


def connect(mgmt: Mgmt, host_id: str) -> hosts_pb2.HostConnectResponse:
    return mgmt.hosts.HostConnect(
        hosts_pb2.HostConnectRequest(host_id=host_id, pool_uuid=mgmt.pool_uuid)
    )


def connected_hosts(mgmt: Mgmt) -> list[str]:
    pool = mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=mgmt.pool_uuid))
    return sorted(pool.connected_host_ids)


def test_a_node_without_sp_cluster_id(mgmt: Mgmt):
    emu = mgmt.stack.emulator
    assert emu is not None and emu.cluster_id == "emu.a"
    assert connected_hosts(mgmt) == ["host-1", "host-2"]
    assert probe(mgmt, 2).storpool_cluster_id == "emu.a"  # from its config
    conf = mgmt.stack.workdir / "storpool.client-2.conf"
    assert "SP_CLUSTER_ID=emu.a" in conf.read_text().splitlines()
    restart_node_without_cluster_id(mgmt, 2)
    assert "SP_CLUSTER_ID" not in conf.read_text()
    # StorPool holds no object yet, so nothing tells the cluster id: not connected, and why
    assert probe(mgmt, 2).storpool_cluster_id == ""
    refused = connect(mgmt, "host-2")
    assert not refused.connected
    assert "SP_CLUSTER_ID" in refused.reason and "/etc/storpool.conf" in refused.reason
    assert "host-2" in refused.reason and "--storpool-conf" in refused.reason
    assert connected_hosts(mgmt) == ["host-1"]
    assert registered(mgmt, "host-2").storpool_cluster_id == ""
    # once the cluster holds a volume, its global id shows the cluster id
    volume = mgmt.create_volume(MIB)
    assert volume.global_id.startswith("emu.a.")
    reply = probe(mgmt, 2)
    assert (reply.storpool_cluster_id, reply.client_running) == ("emu.a", True)
    joined = connect(mgmt, "host-2")
    assert joined.connected, joined.reason
    assert connected_hosts(mgmt) == ["host-1", "host-2"]
    # a node started now registers with the cluster id it found
    restart_node_without_cluster_id(mgmt, 2)
    assert registered(mgmt, "host-2").storpool_cluster_id == "emu.a"
    assert connect(mgmt, "host-2").connected
    # and a host configured with SP_CLUSTER_ID is unaffected
    assert probe(mgmt, 1).storpool_cluster_id == "emu.a" and connect(mgmt, "host-1").connected
