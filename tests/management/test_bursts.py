"""Deploy bursts: readers of one source share it, writers and deleters wait their turn.

CloudStack does not retry copyAsync, so every ABORTED here would be a failed VM deploy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.longrunning import operations_pb2

from spcs.v1 import driver_pb2, strategies_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error
from tests.management.test_copies import volume_object
from tests.support import pattern


def start_all(
    mgmt: Mgmt, requests: list[driver_pb2.CopyDataRequest]
) -> list[operations_pb2.Operation]:
    """Send every CopyData at the same time (one thread each), as CloudStack's workers do."""
    barrier = threading.Barrier(len(requests))

    def send(request: driver_pb2.CopyDataRequest) -> operations_pb2.Operation:
        barrier.wait(10)
        return mgmt.driver.CopyData(request, timeout=30)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def results(mgmt: Mgmt, ops: list[operations_pb2.Operation]) -> list[driver_pb2.CopyDataResult]:
    out = []
    for op in ops:
        done = mgmt.wait(op.name)
        assert not done.HasField("error"), done.error
        result = driver_pb2.CopyDataResult()
        assert done.response.Unpack(result)
        out.append(result)
    return out


def while_running(
    mgmt: Mgmt, ops: list[operations_pb2.Operation], call: Callable[[], None]
) -> None:
    """Run `call` while at least one of `ops` is still running (the test's own check)."""
    running = [
        op
        for op in ops
        if not mgmt.operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name)).done
    ]
    assert running, "the copies finished before the conflicting call could be made"
    call()


def test_fifty_deploys_from_one_cached_template(mgmt: Mgmt):
    template, raw = mgmt.template_on_secondary(301, size=40 * MIB)
    cached = mgmt.copy(
        types_pb2.DataObject(template=template),
        types_pb2.DataObject(template=types_pb2.Template(uuid=template.uuid, store=mgmt.primary())),
    ).result.template
    source = types_pb2.DataObject(template=cached)
    requests = [
        driver_pb2.CopyDataRequest(
            operation_id=new_id("deploy"), source=source, destination=volume_object(mgmt, 64 * MIB)
        )
        for _ in range(50)
    ]
    # every clone takes a while in StorPool, so the burst really overlaps
    mgmt.stack.emulator.set_faults({"delays": {"VolumeCreate": 0.5}})
    try:
        ops = start_all(mgmt, requests)

        def delete_template() -> None:
            refused = rpc_error(
                mgmt.driver.DeleteData,
                driver_pb2.DeleteDataRequest(
                    object=types_pb2.DataObject(template=cached), pool=mgmt.pool_ref()
                ),
            )
            assert refused.code() == grpc.StatusCode.ABORTED, refused.details()
            assert "shared" in refused.details()

        while_running(mgmt, ops, delete_template)
        done = results(mgmt, ops)
    finally:
        mgmt.stack.emulator.set_faults({})
    assert all(r.kind == "template-to-volume" and r.bytes_written == 0 for r in done)
    gids = {r.result.volume.global_id for r in done}
    assert len(gids) == 50
    for result in done:
        obj = mgmt.api.volume(f"~{result.result.volume.global_id}")
        assert obj.parent == f"cs-tmpl-{template.uuid}-{mgmt.pool_uuid}"
        assert obj.size == 64 * MIB
    # the bytes of two of them are the template's
    for result in (done[0], done[-1]):
        assert mgmt.read(result.result.volume.path)[: len(raw)] == raw
    # the cache snapshot survived the refused delete; once the deploys are done it can go
    assert mgmt.api.snapshot_or_none(f"~{cached.global_id}") is not None
    mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            object=types_pb2.DataObject(template=cached), pool=mgmt.pool_ref()
        )
    )


def test_twenty_volumes_and_backups_from_one_snapshot(mgmt: Mgmt):
    volume = mgmt.create_volume(16 * MIB)
    mgmt.write(volume.path, {MIB: pattern(302, MIB)})
    snapshot = mgmt.take_snapshot(volume.path)
    snapshot.store.CopyFrom(mgmt.primary())
    source = types_pb2.DataObject(snapshot=snapshot)
    clones = [
        driver_pb2.CopyDataRequest(
            operation_id=new_id("clone"), source=source, destination=volume_object(mgmt)
        )
        for _ in range(20)
    ]
    # backups of the same snapshot run beside the clones (and beside each other, on one node)
    backups = [
        driver_pb2.CopyDataRequest(
            operation_id=new_id("backup"),
            source=source,
            destination=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(
                    uuid=new_id("bk"), path="snapshots/9/302", store=mgmt.secondary()
                )
            ),
            options=driver_pb2.CopyOptions(host_id="host-1"),
        )
        for _ in range(2)
    ]
    mgmt.stack.emulator.set_faults({"delays": {"VolumeCreate": 0.5}})
    try:
        ops = start_all(mgmt, clones + backups)

        def delete_snapshot() -> None:
            refused = rpc_error(
                mgmt.snapshots.DeleteSnapshot,
                strategies_pb2.DeleteSnapshotRequest(snapshot=snapshot, pool=mgmt.pool_ref()),
            )
            assert refused.code() == grpc.StatusCode.ABORTED, refused.details()

        while_running(mgmt, ops, delete_snapshot)
        done = results(mgmt, ops)
    finally:
        mgmt.stack.emulator.set_faults({})
    assert [r.kind for r in done] == ["snapshot-to-volume"] * 20 + ["snapshot-to-secondary"] * 2
    for result in done[:20]:
        assert mgmt.api.volume(f"~{result.result.volume.global_id}").parent == (
            f"cs-snap-{snapshot.uuid}"
        )
    for result in done[20:]:
        data = (mgmt.stack.secondary / result.result.snapshot.path).read_bytes()
        assert data.startswith(b"QFI\xfb")
    assert mgmt.read(done[0].result.volume.path)[MIB : 2 * MIB] == pattern(302, MIB)
    # the snapshot is still there, and nothing is left attached on host-1 by the shared reads
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is not None
    deadline = time.monotonic() + 10
    while [a for a in mgmt.api.attachments() if a.global_id == snapshot.global_id]:
        assert time.monotonic() < deadline, "the backups left the snapshot attached"
        time.sleep(0.1)


def test_a_writer_conflicts_with_readers(mgmt: Mgmt):
    """Resize (a change of the source) is ABORTED while a copy reads the volume; another copy
    reading it is not."""
    volume = mgmt.create_volume(8 * MIB)
    source = types_pb2.DataObject(
        volume=types_pb2.Volume(uuid=volume.uuid, path=volume.path, store=mgmt.primary())
    )
    export = driver_pb2.CopyDataRequest(
        operation_id=new_id("export"),
        source=source,
        destination=types_pb2.DataObject(
            volume=types_pb2.Volume(path="volumes/9/1", store=mgmt.secondary())
        ),
    )
    mgmt.stack.emulator.set_faults({"delays": {"VolumesReassignWait": 1.5}})
    try:
        first = mgmt.driver.CopyData(export)
        second = mgmt.driver.CopyData(
            driver_pb2.CopyDataRequest(
                operation_id=new_id("export"),
                source=source,
                destination=types_pb2.DataObject(
                    volume=types_pb2.Volume(path="volumes/9/2", store=mgmt.secondary())
                ),
            )
        )
        refused = rpc_error(
            mgmt.driver.ResizeVolume,
            driver_pb2.ResizeVolumeRequest(
                pool=mgmt.pool_ref(), volume=volume, new_size_bytes=16 * MIB
            ),
        )
        assert refused.code() == grpc.StatusCode.ABORTED
        assert "exclusive" in refused.details() and "shared" in refused.details()
        results(mgmt, [first, second])
    finally:
        mgmt.stack.emulator.set_faults({})
    grown = mgmt.driver.ResizeVolume(
        driver_pb2.ResizeVolumeRequest(pool=mgmt.pool_ref(), volume=volume, new_size_bytes=16 * MIB)
    )
    assert grown.size_bytes == 16 * MIB
