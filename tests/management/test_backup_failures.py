"""A failed, cancelled or interrupted copy removes only what it created itself, and a retry works.

The snapshot a backup reads is the caller's: it stays whatever happens to the backup. What the
copy wrote half-way (a partial file on secondary, a volume it created) goes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.v1 import driver_pb2, strategies_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error, running_stack
from tests.management.test_copies import volume_object
from tests.management.test_queue import backup_request, metadata, random_snapshot
from tests.support import log_containing, qemu_img


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Mgmt]:
    """On loop devices: the snapshot a backup reads is a block device, as on a StorPool host."""
    with running_stack(tmp_path, loop=True) as mgmt:
        yield mgmt


def partials(mgmt: Mgmt) -> list[Path]:
    return sorted(mgmt.stack.secondary.rglob("*.spcs-partial.*"))


def wait_copying(mgmt: Mgmt, name: str) -> types_pb2.OperationMetadata:
    """Until the node has written part of the copy (so a partial file exists)."""
    deadline = time.monotonic() + 60
    while True:
        op = mgmt.operations.GetOperation(operations_pb2.GetOperationRequest(name=name))
        meta = metadata(op)
        assert not op.done, op
        if meta.bytes_done > 0 and partials(mgmt):
            return meta
        assert time.monotonic() < deadline, meta
        time.sleep(0.05)


def assert_retry_succeeds(mgmt: Mgmt, request: driver_pb2.CopyDataRequest) -> None:
    """The same request (same operation id) again: a new attempt that writes a valid backup."""
    assert mgmt.driver.CopyData(request).name == f"operations/{request.operation_id}"
    done = mgmt.wait(f"operations/{request.operation_id}")
    assert not done.HasField("error"), done.error
    result = driver_pb2.CopyDataResult()
    done.response.Unpack(result)
    file = mgmt.stack.secondary / result.result.snapshot.path
    assert "No errors" in qemu_img("check", str(file))


def copy_error(mgmt: Mgmt, source: types_pb2.DataObject, destination: types_pb2.DataObject) -> int:
    """The status code a copy ends with."""
    request = driver_pb2.CopyDataRequest(
        operation_id=new_id("op"), source=source, destination=destination
    )
    return mgmt.wait(mgmt.driver.CopyData(request).name).error.code


def test_a_cancelled_backup_keeps_the_snapshot_and_the_same_id_retried_succeeds(stack: Mgmt):
    mgmt = stack
    snapshot = random_snapshot(mgmt, 64 * MIB)
    request = backup_request(mgmt, snapshot, "host-1")
    op = mgmt.driver.CopyData(request)
    wait_copying(mgmt, op.name)
    mgmt.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    cancelled = mgmt.wait(op.name)
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert metadata(cancelled).state == types_pb2.JOB_STATE_CANCELLED
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is not None
    assert partials(mgmt) == []
    assert not list((mgmt.stack.secondary / "snapshots/5/1").glob("bk-*"))
    # the same operation id again: a new attempt, which succeeds
    assert_retry_succeeds(mgmt, request)


def test_a_node_killed_mid_backup_leaves_nothing_partial_and_a_retry_succeeds(stack: Mgmt):
    mgmt = stack
    snapshot = random_snapshot(mgmt, 64 * MIB)
    request = backup_request(mgmt, snapshot, "host-1")
    op = mgmt.driver.CopyData(request)
    wait_copying(mgmt, op.name)
    node = mgmt.stack.nodes[0]
    node.popen.send_signal(signal.SIGKILL)
    node.popen.wait(10)
    assert partials(mgmt), "the killed copy should have left its partial file"
    failed = mgmt.wait(op.name)
    assert failed.error.code in (
        grpc.StatusCode.UNAVAILABLE.value[0],
        grpc.StatusCode.ABORTED.value[0],
    ), failed.error
    assert "host-1" in failed.error.message
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is not None
    # the node starts again: what its interrupted job was writing goes
    mgmt.stack.restart_node(1)
    deadline = time.monotonic() + 20
    while partials(mgmt):
        assert time.monotonic() < deadline, partials(mgmt)
        time.sleep(0.1)
    assert "left by interrupted job" in log_containing(
        mgmt.stack.nodes[0].log_path, "left by interrupted job"
    )
    mgmt.stack._wait_registered()
    # the same operation id retried: the copy runs again (on the restarted node) and succeeds
    assert_retry_succeeds(mgmt, request)


def test_a_failed_strategy_backup_keeps_the_snapshot(stack: Mgmt):
    mgmt = stack
    volume = mgmt.create_volume(4 * MIB)
    snapshot = mgmt.take_snapshot(volume.path)
    (mgmt.stack.secondary / "snapshots").mkdir(exist_ok=True)
    (mgmt.stack.secondary / "snapshots" / "file").write_bytes(b"in the way")
    request = strategies_pb2.BackupSnapshotRequest(
        operation_id=new_id("op"),
        snapshot=snapshot,
        pool=mgmt.pool_ref(),
        destination=types_pb2.SecondaryStore(url=mgmt.url),
        destination_path="snapshots/file/s1",
    )
    failed = mgmt.wait(mgmt.snapshots.BackupSnapshot(request).name)
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is not None
    os.unlink(mgmt.stack.secondary / "snapshots" / "file")
    # the same id again (same arguments) after the cause is fixed
    done = mgmt.wait(mgmt.snapshots.BackupSnapshot(request).name)
    assert not done.HasField("error"), done.error


def test_a_failed_copy_into_a_volume_removes_only_a_volume_it_created(stack: Mgmt):
    mgmt = stack
    missing = types_pb2.DataObject(
        volume=types_pb2.Volume(
            path="volumes/1/no-such-file.qcow2",
            store=mgmt.secondary(),
            format=types_pb2.IMAGE_FORMAT_QCOW2,
            size_bytes=4 * MIB,
        )
    )
    # the copy creates the volume: a failure removes it
    new = volume_object(mgmt, 4 * MIB)
    assert copy_error(mgmt, missing, new) == grpc.StatusCode.NOT_FOUND.value[0]
    assert f"cs-vol-{new.volume.uuid}" not in mgmt.storpool_names()
    # the caller's own volume (made with CreateVolume) is never deleted by a failed copy
    own = mgmt.create_volume(4 * MIB)
    mgmt.write(own.path, {0: b"mine"})
    into_own = volume_object(mgmt, 4 * MIB, uuid=own.uuid)
    assert copy_error(mgmt, missing, into_own) == grpc.StatusCode.NOT_FOUND.value[0]
    assert mgmt.read(own.path)[:4] == b"mine"


def test_a_failed_template_backup_keeps_a_cache_it_did_not_make(stack: Mgmt):
    mgmt = stack
    template, _ = mgmt.template_on_secondary(401, size=8 * MIB)
    cached = mgmt.copy(
        types_pb2.DataObject(template=template),
        types_pb2.DataObject(template=types_pb2.Template(uuid=template.uuid, store=mgmt.primary())),
    ).result.template
    volume = mgmt.copy(types_pb2.DataObject(template=cached), volume_object(mgmt)).result.volume
    (mgmt.stack.secondary / "template" / "tmpl" / "2" / "402").parent.mkdir(
        parents=True, exist_ok=True
    )
    (mgmt.stack.secondary / "template" / "tmpl" / "2" / "402").write_bytes(b"a file in the way")
    op = mgmt.driver.CopyData(
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                volume=types_pb2.Volume(path=volume.path, store=mgmt.primary())
            ),
            destination=types_pb2.DataObject(
                template=types_pb2.Template(
                    uuid=template.uuid, path="template/tmpl/2/402", store=mgmt.secondary()
                )
            ),
        )
    )
    assert mgmt.wait(op.name).error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # the template's cache snapshot was there before this copy: it stays
    assert mgmt.api.snapshot_or_none(f"~{cached.global_id}") is not None
    refused = rpc_error(
        mgmt.driver.CopyData,
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(template=cached),
            destination=types_pb2.DataObject(template=cached),
        ),
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
