"""Driver volume operations, asserting on StorPool's objects (the emulator) and on bytes."""

from __future__ import annotations

import re
import threading

import grpc
import pytest

from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, OTHER_TEMPLATE, Mgmt, new_id, rpc_error
from tests.support import log_containing, pattern


def test_create_data_volume_tags_limits_and_replay(mgmt: Mgmt):
    uuid = new_id("vol")
    volume = mgmt.create_volume(
        64 * MIB,
        uuid=uuid,
        vm_uuid="vm-1",
        device_id=1,
        max_iops=500,
        max_bandwidth_bytes_per_second=10 * MIB,
        vc_policy="daily",
        type=types_pb2.VOLUME_TYPE_DATA,
    )
    gid = volume.global_id
    assert volume.path == f"/dev/storpool-byid/{gid}" and volume.size_bytes == 64 * MIB
    obj = mgmt.api.volume(f"~{gid}")
    assert (obj.name, obj.size, obj.template, obj.iops, obj.bw) == (
        f"cs-vol-{uuid}",
        64 * MIB,
        "spcs-demo",
        500,
        10240,
    )
    assert obj.tags == {
        "uuid": uuid,
        "cs": "volume",
        "cvm": "vm-1",
        "disk": "1",
        "vc-policy": "daily",
    }
    again = mgmt.create_volume(
        64 * MIB,
        uuid=uuid,
        vm_uuid="vm-1",
        device_id=1,
        max_iops=500,
        max_bandwidth_bytes_per_second=10 * MIB,
        vc_policy="daily",
        type=types_pb2.VOLUME_TYPE_DATA,
    )
    assert again == volume  # the same volume, and the same answer
    other_limits = rpc_error(mgmt.create_volume, 64 * MIB, uuid=uuid, max_iops=500)
    assert other_limits.code() == grpc.StatusCode.ALREADY_EXISTS
    clash = rpc_error(mgmt.create_volume, 128 * MIB, uuid=uuid)
    assert clash.code() == grpc.StatusCode.ALREADY_EXISTS and "size" in clash.details()
    assert [v.name for v in mgmt.api.volumes()].count(f"cs-vol-{uuid}") == 1


def test_offering_template_and_qos_class(mgmt: Mgmt):
    on_other = mgmt.create_volume(MIB, sp_template=OTHER_TEMPLATE)
    assert mgmt.api.volume(f"~{on_other.global_id}").template == OTHER_TEMPLATE
    with_qos = mgmt.create_volume(MIB, sp_template=OTHER_TEMPLATE, qos_class="gold")
    obj = mgmt.api.volume(f"~{with_qos.global_id}")
    assert obj.template == "spcs-demo" and obj.tags["qc"] == "gold"
    for volume in (on_other, with_qos):  # data in spcs-other would block that pool's delete
        mgmt.driver.DeleteData(
            driver_pb2.DeleteDataRequest(
                pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=volume)
            )
        )


@pytest.mark.parametrize(
    ("size", "fields", "words"),
    [
        (0, {}, "size_bytes is required"),
        (1000, {}, "multiple of 512"),
        (MIB, {"uuid": "bad uuid!"}, "volume.uuid"),
        (MIB, {"uuid": ""}, "uuid is required"),
        (MIB, {"vm_uuid": "has space"}, "StorPool tag"),
    ],
)
def test_create_bad_input(mgmt: Mgmt, size, fields, words):
    before = mgmt.storpool_names()
    error = rpc_error(mgmt.create_volume, size, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details()
    assert mgmt.storpool_names() == before


def test_delete_attached_volume_and_missing_is_ok(mgmt: Mgmt):
    volume = mgmt.create_volume(8 * MIB)
    mgmt.attach_here(volume.path, host=1)
    mgmt.attach_here(volume.path, host=2)
    delete = driver_pb2.DeleteDataRequest(
        pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=volume)
    )
    assert mgmt.driver.DeleteData(delete).deleted
    assert mgmt.api.volume_or_none(f"~{volume.global_id}") is None
    assert not any(a.global_id == volume.global_id for a in mgmt.api.attachments())
    assert not mgmt.driver.DeleteData(delete).deleted
    by_uuid = driver_pb2.DeleteDataRequest(
        pool=mgmt.pool_ref(),
        object=types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("never"))),
    )
    assert not mgmt.driver.DeleteData(by_uuid).deleted


def test_resize_grow_shrink_and_rollback_when_the_guest_cannot_be_told(mgmt: Mgmt):
    volume = mgmt.create_volume(32 * MIB, max_iops=100)
    ref = f"~{volume.global_id}"
    grown = mgmt.driver.ResizeVolume(
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(),
            volume=types_pb2.Volume(path=volume.path, max_iops=200),
            new_size_bytes=64 * MIB,
        )
    )
    assert grown.size_bytes == 64 * MIB and mgmt.api.volume(ref).iops == 200
    refused = rpc_error(
        mgmt.driver.ResizeVolume,
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(), volume=types_pb2.Volume(path=volume.path), new_size_bytes=16 * MIB
        ),
    )
    assert refused.code() == grpc.StatusCode.OUT_OF_RANGE and "shrink_ok" in refused.details()
    assert (
        mgmt.driver.ResizeVolume(
            driver_pb2.ResizeVolumeRequest(
                pool=mgmt.pool_ref(),
                volume=types_pb2.Volume(path=volume.path, max_iops=200),
                new_size_bytes=16 * MIB,
                shrink_ok=True,
            )
        ).size_bytes
        == 16 * MIB
    )
    # live resize: the node must tell the VM; without libvirt it cannot, so the size rolls back
    failed = rpc_error(
        mgmt.driver.ResizeVolume,
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(),
            volume=types_pb2.Volume(path=volume.path, max_iops=300),
            new_size_bytes=48 * MIB,
            host_id="host-1",
            vm_name="i-2-3-VM",
        ),
    )
    assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rolled back to 16777216" in failed.details() and "libvirt" in failed.details()
    assert (mgmt.api.volume(ref).size, mgmt.api.volume(ref).iops) == (16 * MIB, 200)


def test_snapshot_revert_restores_bytes_and_limits(mgmt: Mgmt):
    volume = mgmt.create_volume(16 * MIB, max_iops=700, vm_uuid="vm-r")
    mgmt.write(volume.path, {0: pattern(1, MIB)})
    snapshot = mgmt.driver.TakeSnapshot(
        driver_pb2.TakeSnapshotRequest(
            pool=mgmt.pool_ref(),
            snapshot=types_pb2.Snapshot(
                uuid=new_id("snap"), volume_path=volume.path, vm_uuid="vm-r"
            ),
        )
    )
    snap = mgmt.api.snapshot(f"~{snapshot.global_id}")
    assert snap.tags == {"uuid": snapshot.uuid, "cs": "snapshot", "cvm": "vm-r"}
    # replay: the same snapshot
    assert (
        mgmt.driver.TakeSnapshot(
            driver_pb2.TakeSnapshotRequest(
                pool=mgmt.pool_ref(),
                snapshot=types_pb2.Snapshot(uuid=snapshot.uuid, volume_path=volume.path),
            )
        ).path
        == snapshot.path
    )
    mgmt.write(volume.path, {0: b"overwritten" * 100})
    mgmt.api.volume_update(f"~{volume.global_id}", iops=50)
    mgmt.attach_here(volume.path, host=2)  # revert force-detaches it
    reverted = mgmt.driver.RevertSnapshot(
        driver_pb2.RevertSnapshotRequest(
            pool=mgmt.pool_ref(),
            snapshot=snapshot,
            volume=types_pb2.Volume(path=volume.path, max_iops=700),
        )
    )
    assert reverted.max_iops == 700
    assert mgmt.read(volume.path)[:MIB] == pattern(1, MIB)
    missing = rpc_error(
        mgmt.driver.RevertSnapshot,
        driver_pb2.RevertSnapshotRequest(
            pool=mgmt.pool_ref(),
            snapshot=types_pb2.Snapshot(path="/dev/storpool-byid/emu.a.zzzz"),
            volume=types_pb2.Volume(path=volume.path),
        ),
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_access_vm_info_and_tags(mgmt: Mgmt):
    volume = mgmt.create_volume(8 * MIB)
    ref = f"~{volume.global_id}"
    obj = types_pb2.DataObject(volume=types_pb2.Volume(path=volume.path, store=mgmt.primary()))
    granted = mgmt.driver.GrantAccess(driver_pb2.GrantAccessRequest(object=obj, host_id="host-2"))
    assert granted.path == volume.path
    assert [
        (a.client, a.rights) for a in mgmt.api.attachments() if a.global_id == volume.global_id
    ] == [(2, "rw")]
    mgmt.driver.ProvideVmInfo(
        driver_pb2.ProvideVmInfoRequest(
            pool=mgmt.pool_ref(),
            volume=types_pb2.Volume(
                path=volume.path, vm_uuid="vm-9", device_id=0, vc_policy="weekly"
            ),
        )
    )
    assert {k: v for k, v in mgmt.api.volume(ref).tags.items() if k != "uuid"} == {
        "cs": "volume",
        "cvm": "vm-9",
        "disk": "0",
        "vc-policy": "weekly",
    }
    updated = mgmt.driver.ProvideVmTags(
        driver_pb2.ProvideVmTagsRequest(
            pool=mgmt.pool_ref(),
            vm_uuid="vm-9",
            volume_paths=[volume.path],
            key="vc-policy",
            value="monthly",
        )
    )
    assert updated.volumes_updated == 1 and mgmt.api.volume(ref).tags["vc-policy"] == "monthly"
    other_key = rpc_error(
        mgmt.driver.ProvideVmTags,
        driver_pb2.ProvideVmTagsRequest(
            pool=mgmt.pool_ref(), vm_uuid="vm-9", volume_paths=[volume.path], key="owner"
        ),
    )
    assert other_key.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert mgmt.driver.RevokeAccess(
        driver_pb2.RevokeAccessRequest(object=obj, host_id="host-2", clear_vm_tags=True)
    ).detached
    assert "cvm" not in mgmt.api.volume(ref).tags and "disk" not in mgmt.api.volume(ref).tags
    # the guard before a VM starts: attached on two hosts → detached everywhere
    mgmt.attach_here(volume.path, host=1)
    mgmt.attach_here(volume.path, host=2)
    cleared = mgmt.driver.DetachVolumeFromAllStorageNodes(
        driver_pb2.DetachVolumeFromAllStorageNodesRequest(
            pool=mgmt.pool_ref(), volume_path=volume.path
        )
    )
    assert list(cleared.detached_client_ids) == [1, 2]
    assert not any(a.global_id == volume.global_id for a in mgmt.api.attachments())
    stats = mgmt.driver.GetVolumeStats(
        driver_pb2.GetVolumeStatsRequest(pool=mgmt.pool_ref(), volume_path=volume.path)
    )
    assert stats.size_bytes == 8 * MIB


def test_change_offering_and_migrate_between_pools(mgmt: Mgmt):
    other = mgmt.add_pool(OTHER_TEMPLATE)
    try:
        volume = mgmt.create_volume(8 * MIB, max_iops=100)
        mgmt.write(volume.path, {4096: pattern(5, 64 * 1024)})
        changed = mgmt.driver.ChangeVolumeOffering(
            driver_pb2.ChangeVolumeOfferingRequest(
                pool=mgmt.pool_ref(),
                volume=types_pb2.Volume(path=volume.path, max_iops=900, qos_class="silver"),
            )
        )
        assert changed.max_iops == 900 and changed.qos_class == "silver"
        # VM stopped: a full copy through baseOn, a new volume on the other pool
        moved = mgmt.driver.MigrateVolume(
            driver_pb2.MigrateVolumeRequest(
                source_pool=mgmt.pool_ref(),
                volume=types_pb2.Volume(path=volume.path),
                destination_pool=mgmt.pool_ref(other),
            )
        )
        assert moved.path != volume.path and moved.sp_template == OTHER_TEMPLATE
        assert mgmt.read(moved.path)[4096 : 4096 + 64 * 1024] == pattern(5, 64 * 1024)
        again = mgmt.driver.MigrateVolume(
            driver_pb2.MigrateVolumeRequest(
                source_pool=mgmt.pool_ref(),
                volume=types_pb2.Volume(path=volume.path),
                destination_pool=mgmt.pool_ref(other),
            )
        )
        assert again.path == moved.path
        # VM running: the same volume, re-templated in place
        live = mgmt.driver.MigrateVolume(
            driver_pb2.MigrateVolumeRequest(
                source_pool=mgmt.pool_ref(),
                volume=types_pb2.Volume(path=volume.path),
                destination_pool=mgmt.pool_ref(other),
                vm_running=True,
            )
        )
        assert live.path == volume.path and live.sp_template == OTHER_TEMPLATE
        for path in (volume.path, moved.path):
            mgmt.driver.DeleteData(
                driver_pb2.DeleteDataRequest(
                    pool=mgmt.pool_ref(other),
                    object=types_pb2.DataObject(volume=types_pb2.Volume(path=path)),
                )
            )
    finally:
        from spcs.v1 import lifecycle_pb2

        mgmt.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=other))


def test_conflicting_operations_on_one_volume_are_aborted(mgmt: Mgmt):
    volume = mgmt.create_volume(8 * MIB)
    mgmt.stack.emulator.set_faults({"delays": {"VolumeUpdate": 1.5}})
    try:
        results: dict[str, object] = {}

        def slow_resize() -> None:
            results["resize"] = mgmt.driver.ResizeVolume(
                driver_pb2.ResizeVolumeRequest(
                    pool=mgmt.pool_ref(),
                    volume=types_pb2.Volume(path=volume.path),
                    new_size_bytes=16 * MIB,
                )
            )

        thread = threading.Thread(target=slow_resize)
        thread.start()
        import time

        time.sleep(0.5)
        clash = rpc_error(
            mgmt.driver.DeleteData,
            driver_pb2.DeleteDataRequest(
                pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=volume)
            ),
        )
        thread.join(10)
    finally:
        mgmt.stack.emulator.set_faults({})
    assert clash.code() == grpc.StatusCode.ABORTED
    assert "ResizeVolume" in clash.details() and "retry" in clash.details()
    assert results["resize"].size_bytes == 16 * MIB


def test_rpc_log_line_shows_the_time_spent_in_storpool_and_the_database(mgmt: Mgmt):
    """The per-RPC line splits the call's time: all of it vs. the StorPool API calls in it and
    the state database's transactions."""
    uuid = new_id("vol")
    mgmt.driver.CreateVolume(
        driver_pb2.CreateVolumeRequest(
            pool=mgmt.pool_ref(), volume=types_pb2.Volume(uuid=uuid, size_bytes=64 * MIB)
        ),
        metadata=(("x-request-id", f"sp-time-{uuid}"),),
    )
    mgmt.lifecycle.ListPools(
        lifecycle_pb2.ListPoolsRequest(),
        metadata=(("x-request-id", f"no-sp-{uuid}"),),  # answered from the database
    )
    log = log_containing(mgmt.stack.management.log_path, f"[no-sp-{uuid}] rpc=")
    times = {}
    for rid in (f"sp-time-{uuid}", f"no-sp-{uuid}"):
        found = re.search(
            rf"\[{rid}\] rpc=\S+ key=\S+ status=OK ms=([\d.]+) storpool_ms=([\d.]+) "
            r"db_ms=([\d.]+)",
            log,
        )
        assert found, f"no RPC line for {rid}"
        times[rid] = (float(found[1]), float(found[2]), float(found[3]))
    total, in_storpool, in_database = times[f"sp-time-{uuid}"]
    assert in_storpool > 0 and in_storpool + in_database <= total + 0.02  # each rounded
    total, in_storpool, in_database = times[f"no-sp-{uuid}"]
    assert in_storpool == 0 and 0 < in_database <= total
