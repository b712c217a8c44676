"""The node under faults: cancel, kill mid-copy, StorPool hiccups, a full store, limits."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.management.nodes import NodeDirectory
from spcs.management.sql_state import SqlState
from spcs.v1 import node_pb2, types_pb2
from tests.node.test_commands import make_template, object_file, result_of, snapshot_of
from tests.stacks import NodeStack, start_management
from tests.support import pattern, qemu_img, same_content

MIB = 1 << 20


def random_snapshot(stack: NodeStack, name: str, size: int) -> str:
    """A snapshot full of incompressible bytes: zlib-compressing it takes a few seconds."""
    volume = stack.volume(f"cs-vol-{name}", size)
    return snapshot_of(stack, volume, f"cs-snap-{name}", {0: os.urandom(size)})


def slow_backup(stack: NodeStack, op_id: str, snap: str, path: str) -> operations_pb2.Operation:
    return stack.commands.BackupSnapshot(
        node_pb2.NodeBackupSnapshotRequest(
            operation_id=op_id,
            snapshot_path=snap,
            destination=types_pb2.SecondaryStore(url=stack.url),
            destination_path=path,
            compression=types_pb2.COMPRESSION_ZLIB,
        )
    )


def wait_running(stack: NodeStack, name: str, at_least: int = 1) -> None:
    deadline = time.monotonic() + 30
    while stack.metadata(name).bytes_done < at_least:
        assert time.monotonic() < deadline, "the copy never started moving bytes"
        time.sleep(0.05)


def test_cancel_mid_copy(node: NodeStack):
    snap = random_snapshot(node, "cancel", 384 * MIB)
    op = slow_backup(node, "bk-cancel", snap, "snapshots/c/s1")
    wait_running(node, op.name)
    started = time.monotonic()
    node.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    done = node.wait(op.name, timeout=10)
    assert time.monotonic() - started < 3
    assert done.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert node.metadata(op.name).state == types_pb2.JOB_STATE_CANCELLED
    target = node.secondary / "snapshots/c"
    assert not (target / "s1").exists() and list(target.iterdir()) == []
    assert node.attachments() == []


def test_node_killed_mid_copy_then_restarted(node: NodeStack):
    snap = random_snapshot(node, "kill", 384 * MIB)
    op = slow_backup(node, "bk-kill", snap, "snapshots/k/s1")
    wait_running(node, op.name)
    node.node.popen.send_signal(signal.SIGKILL)
    node.node.popen.wait(10)
    final = node.secondary / "snapshots/k/s1"
    assert not final.exists()  # nothing that looks complete
    node.start_node()
    interrupted = node.operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    assert interrupted.done and "interrupted" in interrupted.error.message
    # the snapshot may still be attached here; a retry with the same id re-attaches and finishes
    retry = slow_backup(node, "bk-kill", snap, "snapshots/k/s1")
    result_of(node, retry, node_pb2.BackupResult())
    assert final.is_file()
    assert [p.name for p in final.parent.iterdir()] == ["s1"]  # the partial file is gone
    assert same_content(object_file(node, snap, node_pb2.DISK_KIND_SNAPSHOT), final, "raw", "qcow2")


def test_transient_storpool_errors_are_ridden_out(node: NodeStack):
    _image, raw = make_template(node, size=64 * MIB)
    volume = node.volume("cs-vol-tr", 64 * MIB)
    node.emu.set_faults({"transientRate": 0.4, "seed": 7})
    op = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id="dl-tr",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path="template/tmpl/2/201",
            destination_path=volume,
        )
    )
    result_of(node, op, node_pb2.DownloadResult())
    disk = node.adaptor.ConnectPhysicalDisk(
        node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path=volume))
    )
    node.emu.set_faults({})
    assert disk.attached and same_content(raw, node.device(volume))
    assert "retrying" in node.node.log_with("retrying")


def test_storpool_unreachable_is_unavailable(stack: NodeStack):
    stack.start_node()
    volume = stack.volume("cs-vol-down", 8 * MIB)
    port = stack.emu.port
    stack.emu.stop()
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as down:
            stack.adaptor.ConnectPhysicalDisk(
                node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path=volume)), timeout=60
            )
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreachable" in down.value.details()
        assert time.monotonic() - started < 15
    finally:
        stack.emu.start(port=port)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_secondary_store_full(node: NodeStack):
    full = node.secondary / "full"  # a store of its own below the served one
    full.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(full)], check=True)
    try:
        snap = random_snapshot(node, "full", 32 * MIB)
        op = node.commands.BackupSnapshot(
            node_pb2.NodeBackupSnapshotRequest(
                operation_id="bk-full",
                snapshot_path=snap,
                destination=types_pb2.SecondaryStore(url=f"file://{full}"),
                destination_path="s/x",
                format=types_pb2.IMAGE_FORMAT_RAW,
            )
        )
        failed = node.wait(op.name)
        assert failed.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "no space" in failed.error.message
        assert list((full / "s").iterdir()) == []  # the partial file was removed
        assert node.attachments() == []
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_copy_slots_are_limited(stack: NodeStack):
    stack.start_node("--max-copies", "1")
    first = random_snapshot(stack, "slot1", 256 * MIB)
    second = random_snapshot(stack, "slot2", 8 * MIB)
    op = slow_backup(stack, "bk-slot1", first, "snapshots/l/1")
    with pytest.raises(grpc.RpcError) as full:
        slow_backup(stack, "bk-slot2", second, "snapshots/l/2")
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 1" in full.value.details()
    stack.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    stack.wait(op.name)
    result_of(
        stack, slow_backup(stack, "bk-slot2", second, "snapshots/l/2"), node_pb2.BackupResult()
    )


def test_registers_with_management_and_survives_its_absence(stack: NodeStack):
    mgmt = start_management(stack.tmp)
    try:
        stack.start_node("--management", mgmt.address)
        store = SqlState(stack.tmp / "m.db")
        deadline = time.monotonic() + 15
        while True:
            nodes = NodeDirectory(store).all()
            if nodes:
                break
            assert time.monotonic() < deadline, stack.node.log()
            time.sleep(0.1)
        assert [(n.host_id, n.address, n.client_id, n.cluster_id) for n in nodes] == [
            ("host-1", stack.node.address, 1, "emu.a")
        ]
        store.close()
    finally:
        assert mgmt.terminate() == 0
    # management is gone: the node keeps serving
    disk = stack.adaptor.GetPhysicalDisk(
        node_pb2.GetPhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=stack.volume("cs-vol-alone", 8 * MIB))
        )
    )
    assert disk.size_bytes == 8 * MIB


def test_probe_reports_readiness(node: NodeStack):
    from spcs.v1 import identity_pb2, identity_pb2_grpc

    identity = identity_pb2_grpc.IdentityStub(node.channel)
    reply = identity.Probe(identity_pb2.ProbeRequest())
    assert reply.ready and "client 1 running" in reply.message
    port = node.emu.port
    node.emu.stop()
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as down:
            identity.Probe(identity_pb2.ProbeRequest(), timeout=60)
        assert down.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "unreachable" in down.value.details()
        assert time.monotonic() - started < 10  # a probe answers quickly
    finally:
        node.emu.start(port=port)
    assert qemu_img("--version") and pattern(1, 4)
