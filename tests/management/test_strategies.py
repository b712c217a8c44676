"""Snapshot and VM-snapshot strategies: decisions made by asking StorPool, group snapshots."""

from __future__ import annotations

import grpc

from spcs.v1 import driver_pb2, strategies_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error
from tests.support import pattern

HIGHEST = strategies_pb2.STRATEGY_PRIORITY_HIGHEST
CANT = strategies_pb2.STRATEGY_PRIORITY_CANT_HANDLE
DELETE = strategies_pb2.SNAPSHOT_OPERATION_DELETE


def test_can_handle_and_delete_by_asking_storpool(mgmt: Mgmt):
    volume = mgmt.create_volume(4 * MIB)
    snapshot = mgmt.take_snapshot(volume.path)
    by_uuid = types_pb2.Snapshot(uuid=snapshot.uuid)  # CloudStack lost the path: still found
    answer = mgmt.snapshots.CanHandleSnapshot(
        strategies_pb2.CanHandleSnapshotRequest(snapshot=by_uuid, operation=DELETE)
    )
    assert answer.priority == HIGHEST and snapshot.global_id in answer.reason
    take = mgmt.snapshots.CanHandleSnapshot(
        strategies_pb2.CanHandleSnapshotRequest(
            snapshot=by_uuid, operation=strategies_pb2.SNAPSHOT_OPERATION_TAKE
        )
    )
    assert take.priority == CANT
    unknown = mgmt.snapshots.CanHandleSnapshot(
        strategies_pb2.CanHandleSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid=new_id("nope")), operation=DELETE
        )
    )
    assert unknown.priority == CANT
    mgmt.attach_here(snapshot.path, host=2, snapshot=True)
    assert mgmt.snapshots.DeleteSnapshot(
        strategies_pb2.DeleteSnapshotRequest(snapshot=by_uuid)
    ).deleted
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is None
    assert not mgmt.snapshots.DeleteSnapshot(
        strategies_pb2.DeleteSnapshotRequest(snapshot=by_uuid)
    ).deleted


def test_java_plugin_objects_are_found_by_tags(mgmt: Mgmt):
    """Objects the Java plugin made are anonymous (~gid) and carry uuid/cs tags."""
    volume = mgmt.create_volume(4 * MIB)
    uuid = new_id("legacy")
    data = mgmt.api.raw(
        "POST",
        f"VolumeSnapshot/~{volume.global_id}",
        {"name": "", "tags": {"uuid": uuid, "cs": "snapshot"}},
        what="anonymous snapshot",
    )
    gid = data["snapshotGlobalId"]
    answer = mgmt.snapshots.CanHandleSnapshot(
        strategies_pb2.CanHandleSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid=uuid), operation=DELETE
        )
    )
    assert answer.priority == HIGHEST and gid in answer.reason
    # and a volume made from it by its byid path, the way CloudStack refers to it
    clone = mgmt.copy(
        types_pb2.DataObject(
            snapshot=types_pb2.Snapshot(path=f"/dev/storpool-byid/{gid}", store=mgmt.primary())
        ),
        types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("vol"), store=mgmt.primary())),
    )
    assert clone.result.volume.size_bytes == 4 * MIB
    assert mgmt.snapshots.DeleteSnapshot(
        strategies_pb2.DeleteSnapshotRequest(snapshot=types_pb2.Snapshot(uuid=uuid))
    ).deleted


def test_java_plugin_template_cache_is_found_by_its_uuid_tag(mgmt: Mgmt):
    """The Java plugin's template cache snapshot is anonymous, tagged uuid=<template>,
    cs=template, in the pool's StorPool template: a deploy clones it (no download) and
    DeleteData{template{uuid}} deletes it instead of leaking it."""
    source = mgmt.create_volume(4 * MIB)
    mgmt.write(source.path, {0: pattern(61, 4096)})
    uuid = new_id("java-tmpl")
    data = mgmt.api.raw(
        "POST",
        f"VolumeSnapshot/~{source.global_id}",
        {"name": "", "tags": {"uuid": uuid, "cs": "template"}},
        what="anonymous template snapshot",
    )
    gid = data["snapshotGlobalId"]
    # a first use of the template: it is cached already, so no download (no such file here)
    deploy = mgmt.copy(
        types_pb2.DataObject(
            template=types_pb2.Template(
                uuid=uuid, path="template/tmpl/2/999", store=mgmt.secondary()
            )
        ),
        types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("vol"), store=mgmt.primary())),
    )
    assert deploy.bytes_written == 0
    assert mgmt.api.volume(f"~{deploy.result.volume.global_id}").parent in (gid, f"~{gid}")
    assert mgmt.read(deploy.result.volume.path)[:4096] == pattern(61, 4096)
    deleted = mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            object=types_pb2.DataObject(template=types_pb2.Template(uuid=uuid)),
            pool=mgmt.pool_ref(),
        )
    )
    assert deleted.deleted
    left = mgmt.api.snapshot_or_none(f"~{gid}")
    assert left is None or left.deleted  # with the deployed clone it is only marked deleted


def test_backup_snapshot_operation(mgmt: Mgmt):
    volume = mgmt.create_volume(4 * MIB)
    mgmt.write(volume.path, {0: pattern(51, 4096)})
    snapshot = mgmt.take_snapshot(volume.path)
    op = mgmt.snapshots.BackupSnapshot(
        strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot=snapshot,
            pool=mgmt.pool_ref(),
            destination=types_pb2.SecondaryStore(url=mgmt.url),
            destination_path=f"snapshots/3/{snapshot.uuid}",
            format=types_pb2.IMAGE_FORMAT_RAW,
        )
    )
    done = mgmt.wait(op.name)
    result = driver_pb2.CopyDataResult()
    assert done.response.Unpack(result)
    file = mgmt.stack.secondary / f"snapshots/3/{snapshot.uuid}"
    assert file.read_bytes()[:4096] == pattern(51, 4096)
    assert result.result.snapshot.format == types_pb2.IMAGE_FORMAT_RAW


def test_vm_snapshots_take_revert_delete(mgmt: Mgmt):
    vm = new_id("vm")
    volumes = [mgmt.create_volume(4 * MIB, vm_uuid=vm) for _ in range(2)]
    for n, volume in enumerate(volumes):
        mgmt.write(volume.path, {0: pattern(60 + n, 8192)})
    refs = [
        strategies_pb2.VolumeSnapshotRef(volume_uuid=v.uuid, volume_path=v.path) for v in volumes
    ]
    can = mgmt.vm_snapshots.CanHandleVMSnapshot(
        strategies_pb2.CanHandleVMSnapshotRequest(
            vm_uuid=vm, volume_paths=[v.path for v in volumes]
        )
    )
    assert can.priority == HIGHEST
    memory = mgmt.vm_snapshots.CanHandleVMSnapshot(
        strategies_pb2.CanHandleVMSnapshotRequest(
            vm_uuid=vm, volume_paths=[v.path for v in volumes], with_memory=True
        )
    )
    assert memory.priority == CANT
    foreign = mgmt.vm_snapshots.CanHandleVMSnapshot(
        strategies_pb2.CanHandleVMSnapshotRequest(
            vm_uuid=vm, volume_paths=[volumes[0].path, "/var/lib/libvirt/images/x.qcow2"]
        )
    )
    assert foreign.priority == CANT
    take = strategies_pb2.TakeVMSnapshotRequest(
        vm_snapshot_uuid=new_id("vms"), vm_uuid=vm, volumes=refs, pool=mgmt.pool_ref()
    )
    taken = mgmt.vm_snapshots.TakeVMSnapshot(take)
    assert mgmt.vm_snapshots.TakeVMSnapshot(take) == taken  # replay
    snaps = [
        mgmt.api.snapshot(r.snapshot_path.replace("/dev/storpool-byid/", "~"))
        for r in taken.volumes
    ]
    assert all(s.tags == {"uuid": take.vm_snapshot_uuid, "cs": "group", "cvm": vm} for s in snaps)
    for volume in volumes:
        mgmt.write(volume.path, {0: b"changed" * 100})
    revert = strategies_pb2.RevertVMSnapshotRequest(
        vm_snapshot_uuid=take.vm_snapshot_uuid,
        vm_uuid=vm,
        volumes=taken.volumes,
        pool=mgmt.pool_ref(),
        vm_running=True,
    )
    running = rpc_error(mgmt.vm_snapshots.RevertVMSnapshot, revert)
    assert running.code() == grpc.StatusCode.FAILED_PRECONDITION and "stop it" in running.details()
    revert.vm_running = False
    mgmt.vm_snapshots.RevertVMSnapshot(revert)
    for n, volume in enumerate(volumes):
        assert mgmt.read(volume.path)[:8192] == pattern(60 + n, 8192)
    deleted = mgmt.vm_snapshots.DeleteVMSnapshot(
        strategies_pb2.DeleteVMSnapshotRequest(
            vm_snapshot_uuid=take.vm_snapshot_uuid, volumes=taken.volumes, pool=mgmt.pool_ref()
        )
    )
    assert deleted.snapshots_deleted == 2
    assert all(mgmt.api.snapshot_or_none(s.ref) is None for s in snaps)
