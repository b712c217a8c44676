"""Scenario tests for the codes that need real objects: ALREADY_EXISTS (a key replayed with other
arguments), FAILED_PRECONDITION (the system is not in the needed state), OUT_OF_RANGE (shrink,
too-small volumes), PERMISSION_DENIED (a wrong StorPool token) and ABORTED (a conflicting
operation while a job holds the object). Every object goes through the resource tracker.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.v1 import driver_pb2, lifecycle_pb2, node_pb2, strategies_pb2, types_pb2
from tests.contract.conftest import Objects, Template, add_pool
from tests.contract.harness import (
    BASE_TEMPLATE,
    LIFECYCLE_TEMPLATE,
    MIB,
    Contract,
    Resources,
    code_of,
    expect_error,
    new_id,
    twice,
)

ABORTED = grpc.StatusCode.ABORTED
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def store(pool: str) -> types_pb2.DataStore:
    return types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool))


def ref(pool: str) -> types_pb2.PrimaryStore:
    return types_pb2.PrimaryStore(pool_uuid=pool)


def create_volume(c: Contract, res: Resources, pool: str, size: int, **fields) -> types_pb2.Volume:
    volume = types_pb2.Volume(uuid=fields.pop("uuid", new_id("vol")), size_bytes=size, **fields)
    res.volume(pool, volume)
    return c.driver.CreateVolume(driver_pb2.CreateVolumeRequest(pool=ref(pool), volume=volume))


def take_snapshot(c: Contract, res: Resources, pool: str, volume: types_pb2.Volume):
    snapshot = types_pb2.Snapshot(uuid=new_id("snap"), volume_path=volume.path)
    res.snapshot(pool, snapshot)
    return c.driver.TakeSnapshot(driver_pb2.TakeSnapshotRequest(pool=ref(pool), snapshot=snapshot))


def volume_size(c: Contract, pool: str, path: str) -> int:
    return c.driver.GetVolumeStats(
        driver_pb2.GetVolumeStatsRequest(pool=ref(pool), volume_path=path)
    ).size_bytes


# ---- ALREADY_EXISTS -----------------------------------------------------------------------------


def test_create_volume_replayed_with_another_size(contract: Contract, res: Resources, objects):
    c, pool = contract, objects.pool
    volume = create_volume(c, res, pool, 2 * MIB, max_iops=500)
    for size in (4 * MIB, MIB):
        expect_error(
            c.driver.CreateVolume,
            driver_pb2.CreateVolumeRequest(
                pool=ref(pool), volume=types_pb2.Volume(uuid=volume.uuid, size_bytes=size)
            ),
            ALREADY_EXISTS,
            volume.uuid,
        )
    assert volume_size(c, pool, volume.path) == 2 * MIB
    # other limits are other arguments too (CSI: same key, different arguments)
    expect_error(
        c.driver.CreateVolume,
        driver_pb2.CreateVolumeRequest(
            pool=ref(pool), volume=types_pb2.Volume(uuid=volume.uuid, size_bytes=2 * MIB)
        ),
        ALREADY_EXISTS,
        volume.uuid,
    )
    # the exact replay answers exactly what the first call did
    again = c.driver.CreateVolume(
        driver_pb2.CreateVolumeRequest(
            pool=ref(pool),
            volume=types_pb2.Volume(uuid=volume.uuid, size_bytes=2 * MIB, max_iops=500),
        )
    )
    assert (again.path, again.max_iops) == (volume.path, 500)


def test_initialize_pool_replayed_with_other_settings(contract: Contract, objects: Objects):
    c = contract
    same = c.initialize_request(objects.pool, BASE_TEMPLATE)
    assert c.lifecycle.InitializePool(same).uuid == objects.pool  # the exact replay is OK
    other = c.initialize_request(objects.pool, BASE_TEMPLATE)
    other.capacity_bytes = 1 << 30
    expect_error(c.lifecycle.InitializePool, other, ALREADY_EXISTS, objects.pool)


def test_second_pool_on_the_same_endpoint_and_template(contract: Contract, objects: Objects):
    c, pool = contract, new_id("pool")
    expect_error(
        c.lifecycle.InitializePool,
        c.initialize_request(pool, BASE_TEMPLATE),
        ALREADY_EXISTS,
        objects.pool,
        BASE_TEMPLATE,
    )
    expect_error(
        c.lifecycle.GetPool, lifecycle_pb2.PoolRef(pool_uuid=pool), grpc.StatusCode.NOT_FOUND
    )


def test_snapshot_uuid_replayed_on_another_volume(contract: Contract, res: Resources, objects):
    other = create_volume(contract, res, objects.pool, MIB)
    expect_error(
        contract.driver.TakeSnapshot,
        driver_pb2.TakeSnapshotRequest(
            pool=ref(objects.pool),
            snapshot=types_pb2.Snapshot(uuid=objects.snapshot.uuid, volume_path=other.path),
        ),
        ALREADY_EXISTS,
        objects.snapshot.uuid,
    )


def test_operation_id_replayed_with_other_arguments(contract: Contract, res: Resources, objects):
    c, pool = contract, objects.pool
    request = driver_pb2.CopyDataRequest(
        operation_id=new_id("op"),
        source=types_pb2.DataObject(
            snapshot=types_pb2.Snapshot(path=objects.snapshot.path, store=store(pool))
        ),
        destination=types_pb2.DataObject(
            volume=types_pb2.Volume(uuid=new_id("vol"), store=store(pool))
        ),
    )
    res.volume(pool, request.destination.volume)
    op = res.operation(c.driver.CopyData(request).name)
    c.succeeded(op, driver_pb2.CopyDataResult())
    other = driver_pb2.CopyDataRequest()
    other.CopyFrom(request)
    other.destination.volume.uuid = new_id("vol")
    expect_error(c.driver.CopyData, other, ALREADY_EXISTS, op)
    # one registry of operation ids: another RPC cannot reuse it either
    expect_error(
        c.snapshots.BackupSnapshot,
        strategies_pb2.BackupSnapshotRequest(
            operation_id=request.operation_id,
            snapshot=objects.snapshot,
            pool=ref(pool),
            destination=types_pb2.SecondaryStore(url=c.secondary_url),
            destination_path=f"snapshots/1/1/{objects.snapshot.uuid}",
        ),
        ALREADY_EXISTS,
        op,
    )


def test_node_operation_id_replayed_with_other_arguments(
    contract: Contract, res: Resources, objects: Objects
):
    c = contract
    relative = f"snapshots/1/2/{new_id('file')}"
    res.file(c.stack.secondary / relative)
    request = node_pb2.NodeBackupSnapshotRequest(
        operation_id=new_id("op"),
        snapshot_path=objects.snapshot.path,
        destination=types_pb2.SecondaryStore(url=c.secondary_url),
        destination_path=relative,
        format=types_pb2.IMAGE_FORMAT_RAW,
    )
    first = c.commands(1).BackupSnapshot(request)
    res.operation(first.name, host=1)
    assert c.commands(1).BackupSnapshot(request).name == first.name
    done = c.wait(first.name, c.node_operations(1))
    result = node_pb2.BackupResult()
    assert not done.HasField("error") and done.response.Unpack(result)
    assert (result.path, result.virtual_size_bytes) == (relative, 2 * MIB)
    other = node_pb2.NodeBackupSnapshotRequest()
    other.CopyFrom(request)
    other.destination_path = relative + "-other"
    expect_error(c.commands(1).BackupSnapshot, other, ALREADY_EXISTS, first.name)


def test_vm_snapshot_replayed_with_other_volumes_keeps_the_original(
    contract: Contract, res: Resources, objects: Objects
):
    c, pool = contract, objects.pool
    a, b, other = (create_volume(c, res, pool, MIB) for _ in range(3))

    def take(*volumes: types_pb2.Volume) -> strategies_pb2.TakeVMSnapshotRequest:
        return strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid=vm_snapshot,
            vm_uuid="vm-1",
            volumes=[
                strategies_pb2.VolumeSnapshotRef(volume_uuid=v.uuid, volume_path=v.path)
                for v in volumes
            ],
            pool=ref(pool),
        )

    vm_snapshot = new_id("vms")
    taken = c.vm_snapshots.TakeVMSnapshot(take(a, b))
    res.vm_snapshot(pool, taken)
    expect_error(c.vm_snapshots.TakeVMSnapshot, take(b, other), ALREADY_EXISTS, vm_snapshot)
    for volume in taken.volumes:  # the VM snapshot is intact
        can = c.snapshots.CanHandleSnapshot(
            strategies_pb2.CanHandleSnapshotRequest(
                snapshot=types_pb2.Snapshot(path=volume.snapshot_path),
                operation=strategies_pb2.SNAPSHOT_OPERATION_DELETE,
                pool=ref(pool),
            )
        )
        assert can.priority == strategies_pb2.STRATEGY_PRIORITY_HIGHEST, can
    assert c.vm_snapshots.TakeVMSnapshot(take(a, b)) == taken


# ---- FAILED_PRECONDITION ------------------------------------------------------------------------


def test_delete_pool_holding_volumes_and_snapshots(contract: Contract, objects: Objects):
    c = contract
    before = c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=objects.pool))
    expect_error(
        c.lifecycle.DeletePool,
        lifecycle_pb2.DeletePoolRequest(pool_uuid=objects.pool),
        FAILED_PRECONDITION,
        f"cs-vol-{objects.volume.uuid}",
        f"cs-snap-{objects.snapshot.uuid}",
    )
    assert c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=objects.pool)) == before


def test_pool_states_gate_placement(
    contract: Contract, res: Resources, objects: Objects, template: Template
):
    """A pool takes new volumes only when Up: never before AttachZone, not in maintenance and
    not disabled; it is zone-wide, so AttachCluster is refused."""
    c, pool = contract, new_id("pool")
    c.lifecycle.InitializePool(c.initialize_request(pool, LIFECYCLE_TEMPLATE))
    res.pool(pool)
    pool_ref = lifecycle_pb2.PoolRef(pool_uuid=pool)
    expect_error(c.lifecycle.EnablePool, pool_ref, FAILED_PRECONDITION, "AttachZone")
    expect_error(
        c.lifecycle.AttachCluster,
        lifecycle_pb2.AttachClusterRequest(pool_uuid=pool, cluster_id="cluster-1"),
        FAILED_PRECONDITION,
        "AttachZone",
    )
    add_pool(c, res, pool, LIFECYCLE_TEMPLATE)  # replays InitializePool, then attaches
    create = driver_pb2.CreateVolumeRequest(
        pool=ref(pool), volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB)
    )
    res.volume(pool, create.volume)
    for refuse, allow in (
        (c.lifecycle.MaintainPool, c.lifecycle.CancelMaintainPool),
        (c.lifecycle.DisablePool, c.lifecycle.EnablePool),
    ):
        state = refuse(pool_ref).state
        expect_error(
            c.driver.CreateVolume,
            create,
            FAILED_PRECONDITION,
            lifecycle_pb2.PoolState.Name(state).removeprefix("POOL_STATE_").title(),
        )
        # a copy into the pool is accepted as an operation and fails inside it
        copy = driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                template=types_pb2.Template(
                    uuid=new_id("tmpl"), path=template.install_path, store=c.secondary()
                )
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=store(pool))
            ),
        )
        failed = c.wait(res.operation(c.driver.CopyData(copy).name))
        assert failed.error.code == FAILED_PRECONDITION.value[0], failed
        allow(pool_ref)
    assert c.driver.CreateVolume(create).size_bytes == MIB


def test_a_pool_not_attached_to_its_zone_takes_no_volumes(contract: Contract, res: Resources):
    c, pool = contract, new_id("pool")
    c.lifecycle.InitializePool(c.initialize_request(pool, LIFECYCLE_TEMPLATE))
    res.pool(pool)
    create = driver_pb2.CreateVolumeRequest(
        pool=ref(pool), volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB)
    )
    res.volume(pool, create.volume)
    expect_error(c.driver.CreateVolume, create, FAILED_PRECONDITION, "AttachZone")


def test_maintenance_does_not_skip_attach_zone(contract: Contract, res: Resources):
    c, pool = contract, new_id("pool")
    c.lifecycle.InitializePool(c.initialize_request(pool, LIFECYCLE_TEMPLATE))
    res.pool(pool)
    pool_ref = lifecycle_pb2.PoolRef(pool_uuid=pool)
    # either call may refuse (FAILED_PRECONDITION); what must not happen is an Up pool
    for step in (c.lifecycle.MaintainPool, c.lifecycle.CancelMaintainPool):
        code, details = code_of(step, pool_ref)
        assert code in (grpc.StatusCode.OK, FAILED_PRECONDITION), (code, details)
    assert c.lifecycle.GetPool(pool_ref).state != lifecycle_pb2.POOL_STATE_UP


def test_revert_vm_snapshot_of_a_running_vm(contract: Contract, objects: Objects):
    expect_error(
        contract.vm_snapshots.RevertVMSnapshot,
        strategies_pb2.RevertVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            vm_uuid="vm-1",
            volumes=[
                strategies_pb2.VolumeSnapshotRef(
                    volume_path=objects.volume.path, snapshot_path=objects.snapshot.path
                )
            ],
            pool=ref(objects.pool),
            vm_running=True,
        ),
        FAILED_PRECONDITION,
        "vm-1",
    )


def test_live_resize_is_rolled_back_when_the_guest_cannot_be_told(
    contract: Contract, res: Resources, objects: Objects
):
    c, pool = contract, objects.pool
    volume = create_volume(c, res, pool, 2 * MIB)
    error = expect_error(
        c.driver.ResizeVolume,
        driver_pb2.ResizeVolumeRequest(
            pool=ref(pool),
            volume=types_pb2.Volume(path=volume.path),
            new_size_bytes=4 * MIB,
            host_id="host-1",
            vm_name="i-2-3-VM",
        ),
        FAILED_PRECONDITION,
        "libvirt",
    )
    assert "rolled back" in error.details()
    assert volume_size(c, pool, volume.path) == 2 * MIB


# ---- OUT_OF_RANGE -------------------------------------------------------------------------------


def test_shrink_needs_shrink_ok(contract: Contract, res: Resources, objects: Objects):
    c, pool = contract, objects.pool
    volume = create_volume(c, res, pool, 4 * MIB)
    shrink = driver_pb2.ResizeVolumeRequest(
        pool=ref(pool), volume=types_pb2.Volume(path=volume.path), new_size_bytes=2 * MIB
    )
    expect_error(c.driver.ResizeVolume, shrink, grpc.StatusCode.OUT_OF_RANGE, "shrink_ok")
    node_shrink = node_pb2.ResizePhysicalDiskRequest(
        disk=node_pb2.DiskRef(path=volume.path), new_size_bytes=2 * MIB
    )
    expect_error(
        c.adaptor(1).ResizePhysicalDisk, node_shrink, grpc.StatusCode.OUT_OF_RANGE, "shrink_ok"
    )
    assert volume_size(c, pool, volume.path) == 4 * MIB
    shrink.shrink_ok = True
    assert twice(c.driver.ResizeVolume, shrink).size_bytes == 2 * MIB
    node_shrink.new_size_bytes, node_shrink.shrink_ok = MIB, True
    assert twice(c.adaptor(1).ResizePhysicalDisk, node_shrink).size_bytes == MIB


def test_download_into_a_too_small_volume(
    contract: Contract, res: Resources, objects: Objects, template: Template
):
    """Without resize_to_virtual_size the volume must hold the image: the node's job fails
    OUT_OF_RANGE and writes nothing."""
    c = contract
    volume = create_volume(c, res, objects.pool, template.virtual_size // 2)
    request = node_pb2.DownloadVolumeRequest(
        operation_id=new_id("op"),
        source=types_pb2.SecondaryStore(url=c.secondary_url),
        source_path=f"{template.install_path}/901.qcow2",
        destination_path=volume.path,
    )
    op = res.operation(c.commands(1).DownloadVolume(request).name, host=1)
    done = c.wait(op, c.node_operations(1))
    assert done.error.code == grpc.StatusCode.OUT_OF_RANGE.value[0], done
    assert "resize_to_virtual_size" in done.error.message
    assert volume_size(c, objects.pool, volume.path) == template.virtual_size // 2


# ---- PERMISSION_DENIED --------------------------------------------------------------------------


def test_wrong_storpool_token(contract: Contract, objects: Objects):
    c, pool, token = contract, new_id("pool"), "ct-wrong-token-0123456789"
    request = c.initialize_request(pool, LIFECYCLE_TEMPLATE)
    request.url = c.pool_url(LIFECYCLE_TEMPLATE, token=token)
    error = expect_error(c.lifecycle.InitializePool, request, grpc.StatusCode.PERMISSION_DENIED)
    assert token not in error.details() and "SP_AUTH_TOKEN" in error.details()
    expect_error(
        c.lifecycle.GetPool, lifecycle_pb2.PoolRef(pool_uuid=pool), grpc.StatusCode.NOT_FOUND
    )
    # a rotated token that does not work is refused, and the pool keeps its connection
    before = c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=objects.pool))
    update = lifecycle_pb2.UpdatePoolRequest(
        pool_uuid=objects.pool, url=c.pool_url(BASE_TEMPLATE, token=token)
    )
    error = expect_error(c.lifecycle.UpdatePool, update, grpc.StatusCode.PERMISSION_DENIED)
    assert token not in error.details()
    assert c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=objects.pool)) == before
    assert c.driver.GetStorageStats(driver_pb2.GetStorageStatsRequest(pool=ref(objects.pool)))


# ---- ABORTED: a conflicting call while a job holds the object -----------------------------------

ATTEMPTS = 5


def overlapping(
    c: Contract,
    start: Callable[[], str],
    conflicts: dict[str, Callable[[], tuple[grpc.StatusCode, str]]],
) -> dict[str, tuple[grpc.StatusCode, str]] | None:
    """Start a job, run the conflicting calls, then look at the job: if it still runs, every
    call overlapped with it and the outcomes are returned; if it ended first, None."""
    name = start()
    outcomes = {what: conflict() for what, conflict in conflicts.items()}
    still_running = not c.operations.GetOperation(
        operations_pb2.GetOperationRequest(name=name)
    ).done
    done = c.wait(name)
    assert not done.HasField("error"), done.error
    return outcomes if still_running else None


def test_conflicting_calls_while_a_backup_runs(contract: Contract, res: Resources, objects):
    """While BackupSnapshot reads a snapshot, whatever would remove it is ABORTED at once
    (retry with backoff); other readers of the snapshot (another backup, a clone, a revert of a
    volume to it) run beside it; a replay of the same operation is not a conflict; a running
    operation cannot be deleted. Once the backup ended, the deletes go through."""
    c, pool = contract, objects.pool
    for _attempt in range(ATTEMPTS):
        volume = create_volume(c, res, pool, 8 * MIB)
        c.driver.GrantAccess(
            driver_pb2.GrantAccessRequest(
                object=types_pb2.DataObject(
                    volume=types_pb2.Volume(path=volume.path, store=store(pool))
                ),
                host_id="host-1",
            )
        )
        c.write(1, volume.path, 0, os.urandom(8 * MIB))  # incompressible: a slower backup
        snapshot = take_snapshot(c, res, pool, volume)
        relative = f"snapshots/1/3/{snapshot.uuid}"
        res.file(c.stack.secondary / relative)
        backup = strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot=snapshot,
            pool=ref(pool),
            destination=types_pb2.SecondaryStore(url=c.secondary_url),
            destination_path=relative,
            compression=types_pb2.COMPRESSION_ZLIB,
        )
        other_backup = strategies_pb2.BackupSnapshotRequest()
        other_backup.CopyFrom(backup)
        other_backup.operation_id = new_id("op")
        other_backup.destination_path = relative + "-2"
        res.file(c.stack.secondary / other_backup.destination_path)
        clone = driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path=snapshot.path, store=store(pool))
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=store(pool))
            ),
        )
        res.volume(pool, clone.destination.volume)
        # when the backup wins the race these may really start: track them too
        res.operation(f"operations/{clone.operation_id}")
        res.operation(f"operations/{other_backup.operation_id}")
        delete_snapshot = strategies_pb2.DeleteSnapshotRequest(snapshot=snapshot, pool=ref(pool))
        delete_data = driver_pb2.DeleteDataRequest(
            pool=ref(pool), object=types_pb2.DataObject(snapshot=snapshot)
        )
        revert = driver_pb2.RevertSnapshotRequest(
            pool=ref(pool), snapshot=snapshot, volume=types_pb2.Volume(path=volume.path)
        )
        name = f"operations/{backup.operation_id}"
        conflicts: dict[str, Callable[[], tuple[grpc.StatusCode, str]]] = {
            "DeleteSnapshot": lambda r=delete_snapshot: code_of(c.snapshots.DeleteSnapshot, r),
            "DeleteData": lambda r=delete_data: code_of(c.driver.DeleteData, r),
            "RevertSnapshot": lambda r=revert: code_of(c.driver.RevertSnapshot, r),
            "BackupSnapshot (another id)": lambda r=other_backup: code_of(
                c.snapshots.BackupSnapshot, r
            ),
            "CopyData (a clone)": lambda r=clone: code_of(c.driver.CopyData, r),
            "DeleteOperation": lambda n=name: code_of(
                c.operations.DeleteOperation, operations_pb2.DeleteOperationRequest(name=n)
            ),
            "BackupSnapshot (replay)": lambda r=backup: code_of(c.snapshots.BackupSnapshot, r),
        }
        outcomes = overlapping(
            c,
            lambda r=backup: res.operation(c.snapshots.BackupSnapshot(r).name),
            conflicts,
        )
        if outcomes is not None:
            break
    else:
        pytest.fail(f"the backup always ended before the conflicting calls ({ATTEMPTS} tries)")
    replay, deletion = outcomes.pop("BackupSnapshot (replay)"), outcomes.pop("DeleteOperation")
    assert replay[0] == grpc.StatusCode.OK, replay
    assert deletion[0] == FAILED_PRECONDITION and "cancel it first" in deletion[1], deletion
    for what in ("RevertSnapshot", "BackupSnapshot (another id)", "CopyData (a clone)"):
        code, details = outcomes.pop(what)
        assert code == grpc.StatusCode.OK, f"{what}: a reader of the snapshot, got {details}"
    for what, (code, details) in outcomes.items():
        assert code == ABORTED, f"{what}: expected ABORTED, got {code.name}: {details}"
        assert "BackupSnapshot" in details and "retry" in details, f"{what}: {details}"
        assert "shared" in details and "exclusive" in details, f"{what}: {details}"
    # the readers ended: the delete now works
    c.succeeded(c.snapshots.BackupSnapshot(other_backup).name, driver_pb2.CopyDataResult())
    c.succeeded(c.driver.CopyData(clone).name, driver_pb2.CopyDataResult())
    assert c.snapshots.DeleteSnapshot(delete_snapshot).deleted


def test_create_while_a_copy_creates_the_same_volume(
    contract: Contract, res: Resources, objects: Objects, template: Template
):
    """A copy that creates volume X holds X's key until it ends: CreateVolume of X and another
    copy into X are ABORTED; afterwards CreateVolume of X with the copy's size is a replay."""
    c, pool = contract, objects.pool
    for _attempt in range(ATTEMPTS):
        destination = types_pb2.Volume(uuid=new_id("vol"), store=store(pool))
        res.volume(pool, destination)
        template_uuid = new_id("tmpl")
        res.template(pool, template_uuid)
        copy = driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                template=types_pb2.Template(
                    uuid=template_uuid, path=template.install_path, store=c.secondary()
                )
            ),
            destination=types_pb2.DataObject(volume=destination),
        )
        other_copy = driver_pb2.CopyDataRequest()
        other_copy.CopyFrom(copy)
        other_copy.operation_id = new_id("op")
        res.operation(f"operations/{other_copy.operation_id}")
        create = driver_pb2.CreateVolumeRequest(
            pool=ref(pool),
            volume=types_pb2.Volume(uuid=destination.uuid, size_bytes=template.virtual_size),
        )
        outcomes = overlapping(
            c,
            lambda r=copy: res.operation(c.driver.CopyData(r).name),
            {
                "CreateVolume": lambda r=create: code_of(c.driver.CreateVolume, r),
                "CopyData (another id)": lambda r=other_copy: code_of(c.driver.CopyData, r),
            },
        )
        if outcomes is not None:
            break
    else:
        pytest.fail(f"the copy always ended before the conflicting calls ({ATTEMPTS} tries)")
    for what, (code, details) in outcomes.items():
        assert code == ABORTED, f"{what}: expected ABORTED, got {code.name}: {details}"
        assert "CopyData" in details and "retry" in details, f"{what}: {details}"
    assert c.driver.CreateVolume(create).size_bytes == template.virtual_size
