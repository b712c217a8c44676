"""Copies and the nodes that run them: copy slots, the queue, dead nodes, progress."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs.v1 import driver_pb2, hosts_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, running_stack
from tests.management.test_bursts import results, start_all


@pytest.fixture
def three_slots(tmp_path: Path) -> Iterator[Mgmt]:
    """Nodes that run three copies at once (not the default, two), on loop devices."""
    with running_stack(tmp_path, node_args=["--max-copies", "3"], loop=True) as mgmt:
        yield mgmt


def random_snapshot(mgmt: Mgmt, size: int) -> types_pb2.Snapshot:
    """A snapshot of incompressible bytes: a zlib backup of it takes a while."""
    volume = mgmt.create_volume(size)
    mgmt.write(volume.path, {0: os.urandom(size)})
    snapshot = mgmt.take_snapshot(volume.path)
    snapshot.store.CopyFrom(mgmt.primary())
    return snapshot


def backup_request(
    mgmt: Mgmt, snapshot: types_pb2.Snapshot, host: str = ""
) -> driver_pb2.CopyDataRequest:
    return driver_pb2.CopyDataRequest(
        operation_id=new_id("backup"),
        source=types_pb2.DataObject(snapshot=snapshot),
        destination=types_pb2.DataObject(
            snapshot=types_pb2.Snapshot(
                uuid=new_id("bk"), path="snapshots/5/1", store=mgmt.secondary()
            )
        ),
        options=driver_pb2.CopyOptions(host_id=host, compression=types_pb2.COMPRESSION_ZLIB),
    )


def metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    op.metadata.Unpack(meta)
    return meta


def running_on_node(mgmt: Mgmt, n: int) -> int:
    with mgmt.node_channel(n) as channel:
        ops = operations_pb2_grpc.OperationsStub(channel).ListOperations(
            operations_pb2.ListOperationsRequest(filter="done=false")
        )
    return len(ops.operations)


def test_copies_beyond_a_hosts_slots_wait_in_the_queue(three_slots: Mgmt):
    mgmt = three_slots
    snapshot = random_snapshot(mgmt, 24 * MIB)
    ops = start_all(mgmt, [backup_request(mgmt, snapshot, "host-1") for _ in range(6)])
    seen_waiting: set[str] = set()
    most_on_node = 0
    while True:
        current = [
            mgmt.operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
            for op in ops
        ]
        for op in current:
            meta = metadata(op)
            if meta.state == types_pb2.JOB_STATE_PENDING and meta.waiting_for:
                assert "free copy slot" in meta.waiting_for and "host-1" in meta.waiting_for
                assert meta.stage.startswith("queued")
                seen_waiting.add(op.name)
        most_on_node = max(most_on_node, running_on_node(mgmt, 1))
        if all(op.done for op in current):
            break
        time.sleep(0.05)
    done = results(mgmt, ops)  # every one succeeded, none RESOURCE_EXHAUSTED
    assert {r.host_id for r in done} == {"host-1"}
    assert len(seen_waiting) >= 3, "the copies past the two slots were not shown as queued"
    assert most_on_node <= 3
    for result in done:
        assert (mgmt.stack.secondary / result.result.snapshot.path).stat().st_size > MIB
    listed = mgmt.stack.management
    assert listed is not None


def test_unpinned_copies_go_to_a_host_with_a_free_slot(three_slots: Mgmt):
    mgmt = three_slots
    snapshot = random_snapshot(mgmt, 16 * MIB)
    ops = start_all(mgmt, [backup_request(mgmt, snapshot) for _ in range(4)])
    done = results(mgmt, ops)
    hosts = [r.host_id for r in done]
    assert sorted(set(hosts)) == ["host-1", "host-2"], hosts
    nodes = {n.host_id: n for n in mgmt_nodes(mgmt)}
    assert nodes["host-1"].max_copies == 3 and nodes["host-1"].copies_running == 0


def mgmt_nodes(mgmt: Mgmt) -> list[hosts_pb2.Node]:
    from spcs.v1 import hosts_pb2_grpc

    return list(
        hosts_pb2_grpc.NodeRegistryStub(mgmt.channel).ListNodes(hosts_pb2.ListNodesRequest()).nodes
    )


def test_a_dead_node_is_skipped_within_seconds(three_slots: Mgmt):
    mgmt = three_slots
    snapshot = random_snapshot(mgmt, 4 * MIB)
    node1 = mgmt.stack.nodes[0]
    node1.popen.send_signal(signal.SIGKILL)
    node1.popen.wait(10)
    started = time.monotonic()
    done = results(mgmt, start_all(mgmt, [backup_request(mgmt, snapshot) for _ in range(3)]))
    elapsed = time.monotonic() - started
    assert [r.host_id for r in done] == ["host-2"] * 3
    assert elapsed < 12, f"three copies took {elapsed:.1f}s with one dead node"
    # a copy pinned to the dead host waits for it (node_retry_seconds, 3 s here), then fails
    pinned = mgmt.driver.CopyData(backup_request(mgmt, snapshot, "host-1"))
    started = time.monotonic()
    failed = mgmt.wait(pinned.name)
    assert failed.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "host-1" in failed.error.message
    assert time.monotonic() - started < 15
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is not None
    # the node comes back on its address: copies reach it again at once
    mgmt.stack.ports.nodes = (node1.port, mgmt.stack.nodes[1].port)
    mgmt.stack.restart_node(1)
    mgmt.stack._wait_registered()
    started = time.monotonic()
    back = mgmt.wait(mgmt.driver.CopyData(backup_request(mgmt, snapshot, "host-1")).name)
    assert not back.HasField("error"), back.error
    assert time.monotonic() - started < 10


def test_progress_mirrors_the_node_job(three_slots: Mgmt):
    mgmt = three_slots
    snapshot = random_snapshot(mgmt, 96 * MIB)
    op = mgmt.driver.CopyData(backup_request(mgmt, snapshot, "host-2"))
    node_samples: list[tuple[float, int]] = []
    lags = []
    with mgmt.node_channel(2) as channel:
        node_ops = operations_pb2_grpc.OperationsStub(channel)
        while True:
            ours = mgmt.operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
            now = time.monotonic()
            meta = metadata(ours)
            if ours.done:
                break
            listed = node_ops.ListOperations(
                operations_pb2.ListOperationsRequest(filter="done=false")
            ).operations
            if listed:
                node_meta = metadata(listed[0])
                node_samples.append((now, node_meta.bytes_done))
                assert meta.host_id == "host-2"  # named as soon as the node has the job
                # what the node had done half a second ago is shown here by now
                earlier = [done for t, done in node_samples if t <= now - 0.5]
                if earlier:
                    lags.append(meta.bytes_done - max(earlier))
                    assert meta.bytes_done >= max(earlier), (meta, node_samples[-10:])
                if node_meta.state == types_pb2.JOB_STATE_RUNNING and node_meta.bytes_done:
                    assert meta.state == types_pb2.JOB_STATE_RUNNING or not earlier
            time.sleep(0.05)
    assert not ours.HasField("error"), ours.error
    assert len(lags) >= 3, "the copy was too quick to watch"
    assert metadata(ours).host_id == "host-2"
