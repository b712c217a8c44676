"""The whole lifecycle, N times (SPCS_CONTRACT_ITERATIONS, default 10), every mutating call
repeated with the same request and its reply compared; afterwards nothing may be left.

Per iteration: add a pool (InitializePool, AttachZone, HostConnect of both hosts), pool state
changes and UpdatePool, a DATA volume, a template on secondary → volume (CopyData), attach on
host 1 and write through the node's device, snapshot, backup of the snapshot to secondary (an
operation), a volume from the snapshot and one from the backup (both read back), resize and a
new offering, revert, revoke, detach from all hosts, VM info and tags, a VM snapshot taken,
reverted and deleted, every object deleted, the pool deleted.
"""

from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf.message import Message

from spcs.v1 import driver_pb2, hosts_pb2, lifecycle_pb2, strategies_pb2, types_pb2
from tests.contract.conftest import Template
from tests.contract.harness import (
    HOSTS,
    LIFECYCLE_TEMPLATE,
    MIB,
    ZONE,
    Contract,
    Resources,
    expect_error,
    iterations,
    new_id,
    twice,
)
from tests.support import pattern

SIZE = 2 * MIB


def _no_timestamps(reply: Message) -> None:
    """HostConnect's node carries last_seen, which moves with every announcement."""
    if isinstance(reply, hosts_pb2.HostConnectResponse):
        reply.node.ClearField("last_seen")


class Lifecycle:
    """One run of the lifecycle on a fresh pool; every object goes through the tracker too."""

    def __init__(self, c: Contract, res: Resources, template: Template, n: int) -> None:
        self.c = c
        self.res = res
        self.template = template
        self.n = n
        self.pool = new_id(f"pool{n}")

    @property
    def pool_ref(self) -> types_pb2.PrimaryStore:
        return types_pb2.PrimaryStore(pool_uuid=self.pool)

    def volume_object(self, volume: types_pb2.Volume) -> types_pb2.DataObject:
        return types_pb2.DataObject(
            volume=types_pb2.Volume(
                uuid=volume.uuid, path=volume.path, store=self.c.primary(self.pool)
            )
        )

    def copy(self, request: driver_pb2.CopyDataRequest) -> driver_pb2.CopyDataResult:
        """Start, replay while it may still run (same operation), wait, replay once done (the
        finished operation with the same response)."""
        first = self.c.driver.CopyData(request)
        self.res.operation(first.name)
        assert first.name == f"operations/{request.operation_id}"
        assert self.c.driver.CopyData(request).name == first.name
        result = self.c.succeeded(first.name, driver_pb2.CopyDataResult())
        replay = self.c.driver.CopyData(request)
        assert replay.done and replay.name == first.name
        again = driver_pb2.CopyDataResult()
        assert replay.response.Unpack(again) and again == result
        return result

    # ---- the steps ---------------------------------------------------------------------------

    def add_pool(self) -> None:
        c = self.c
        init = c.initialize_request(self.pool, LIFECYCLE_TEMPLATE)
        pool = twice(c.lifecycle.InitializePool, init)
        self.res.pool(self.pool)
        assert (pool.uuid, pool.state, pool.sp_template) == (
            self.pool,
            lifecycle_pb2.POOL_STATE_INITIALIZED,
            LIFECYCLE_TEMPLATE,
        )
        attach = lifecycle_pb2.AttachZoneRequest(pool_uuid=self.pool, zone_id=ZONE)
        assert twice(c.lifecycle.AttachZone, attach).state == lifecycle_pb2.POOL_STATE_UP
        for host in HOSTS:
            connect = hosts_pb2.HostConnectRequest(host_id=host, pool_uuid=self.pool)
            reply = twice(c.hosts.HostConnect, connect, _no_timestamps)
            assert reply.connected and self.pool in reply.node.pool_uuids, reply
        pool = c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=self.pool))
        assert list(pool.connected_host_ids) == list(HOSTS)

    def pool_states(self) -> None:
        c, ref = self.c, lifecycle_pb2.PoolRef(pool_uuid=self.pool)
        for call, state in (
            (c.lifecycle.MaintainPool, lifecycle_pb2.POOL_STATE_MAINTENANCE),
            (c.lifecycle.CancelMaintainPool, lifecycle_pb2.POOL_STATE_UP),
            (c.lifecycle.DisablePool, lifecycle_pb2.POOL_STATE_DISABLED),
            (c.lifecycle.EnablePool, lifecycle_pb2.POOL_STATE_UP),
        ):
            assert twice(call, ref).state == state
        update = lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=self.pool, capacity_bytes=2 << 40, tags=["contract", "ssd"], update_tags=True
        )
        updated = twice(c.lifecycle.UpdatePool, update)
        assert (updated.capacity_bytes, list(updated.tags)) == (2 << 40, ["contract", "ssd"])
        stats = c.driver.GetStorageStats(driver_pb2.GetStorageStatsRequest(pool=self.pool_ref))
        assert stats.capacity_bytes > 0

    def create_volume(self) -> types_pb2.Volume:
        request = driver_pb2.CreateVolumeRequest(
            pool=self.pool_ref,
            volume=types_pb2.Volume(
                uuid=new_id("vol"), size_bytes=SIZE, type=types_pb2.VOLUME_TYPE_DATA, max_iops=1000
            ),
        )
        volume = twice(self.c.driver.CreateVolume, request)
        self.res.volume(self.pool, volume)
        assert volume.size_bytes == SIZE and volume.path.startswith("/dev/storpool-byid/")
        return volume

    def template_volume(self) -> types_pb2.Volume:
        template_uuid = new_id("tmpl")
        request = driver_pb2.CopyDataRequest(
            operation_id=new_id("op-tmpl"),
            source=types_pb2.DataObject(
                template=types_pb2.Template(
                    uuid=template_uuid,
                    path=self.template.install_path,
                    store=self.c.secondary(),
                    format=types_pb2.IMAGE_FORMAT_QCOW2,
                )
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(
                    uuid=new_id("root"),
                    type=types_pb2.VOLUME_TYPE_ROOT,
                    store=self.c.primary(self.pool),
                )
            ),
        )
        self.res.template(self.pool, template_uuid)
        self.template_uuid = template_uuid
        result = self.copy(request)
        assert result.kind == "template-to-volume"
        volume = result.result.volume
        self.res.volume(self.pool, volume)
        assert volume.size_bytes == self.template.virtual_size
        return volume

    def grant(self, volume: types_pb2.Volume, host: str) -> None:
        request = driver_pb2.GrantAccessRequest(object=self.volume_object(volume), host_id=host)
        assert twice(self.c.driver.GrantAccess, request).path == volume.path

    def take_snapshot(self, volume: types_pb2.Volume) -> types_pb2.Snapshot:
        request = driver_pb2.TakeSnapshotRequest(
            pool=self.pool_ref,
            snapshot=types_pb2.Snapshot(
                uuid=new_id("snap"), volume_uuid=volume.uuid, volume_path=volume.path
            ),
        )
        snapshot = twice(self.c.driver.TakeSnapshot, request)
        self.res.snapshot(self.pool, snapshot)
        assert snapshot.size_bytes == SIZE and snapshot.path != volume.path
        return snapshot

    def backup(self, snapshot: types_pb2.Snapshot) -> types_pb2.Snapshot:
        relative = f"snapshots/2/{self.n}/{snapshot.uuid}"
        self.res.file(self.c.stack.secondary / relative)
        request = strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op-backup"),
            snapshot=snapshot,
            pool=self.pool_ref,
            destination=types_pb2.SecondaryStore(url=self.c.secondary_url),
            destination_path=relative,
        )
        first = self.c.snapshots.BackupSnapshot(request)
        self.res.operation(first.name)
        assert self.c.snapshots.BackupSnapshot(request).name == first.name
        result = self.c.succeeded(first.name, driver_pb2.CopyDataResult())
        replay = self.c.snapshots.BackupSnapshot(request)
        again = driver_pb2.CopyDataResult()
        assert replay.done and replay.response.Unpack(again) and again == result
        backup = result.result.snapshot
        assert (backup.path, backup.format, backup.size_bytes) == (
            relative,
            types_pb2.IMAGE_FORMAT_QCOW2,
            SIZE,
        )
        return backup

    def volume_from(self, source: types_pb2.DataObject, kind: str) -> types_pb2.Volume:
        request = driver_pb2.CopyDataRequest(
            operation_id=new_id("op-from"),
            source=source,
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=self.c.primary(self.pool))
            ),
        )
        self.res.volume(self.pool, request.destination.volume)
        result = self.copy(request)
        assert result.kind == kind
        return result.result.volume

    def resize(self, volume: types_pb2.Volume) -> None:
        request = driver_pb2.ResizeVolumeRequest(
            pool=self.pool_ref,
            volume=types_pb2.Volume(uuid=volume.uuid, path=volume.path, max_iops=1000),
            new_size_bytes=2 * SIZE,
        )
        assert twice(self.c.driver.ResizeVolume, request).size_bytes == 2 * SIZE
        stats = self.c.driver.GetVolumeStats(
            driver_pb2.GetVolumeStatsRequest(pool=self.pool_ref, volume_path=volume.path)
        )
        assert stats.size_bytes == 2 * SIZE
        offering = driver_pb2.ChangeVolumeOfferingRequest(
            pool=self.pool_ref,
            volume=types_pb2.Volume(
                uuid=volume.uuid,
                path=volume.path,
                max_iops=1000,
                max_bandwidth_bytes_per_second=8 * MIB,
                qos_class="gold",
            ),
        )
        changed = twice(self.c.driver.ChangeVolumeOffering, offering)
        assert (changed.max_iops, changed.qos_class) == (1000, "gold")

    def revert(self, volume: types_pb2.Volume, snapshot: types_pb2.Snapshot) -> None:
        request = driver_pb2.RevertSnapshotRequest(
            pool=self.pool_ref,
            snapshot=types_pb2.Snapshot(uuid=snapshot.uuid, path=snapshot.path),
            volume=types_pb2.Volume(uuid=volume.uuid, path=volume.path),
        )
        reverted = twice(self.c.driver.RevertSnapshot, request)
        # VolumeRevert (without revertSize) keeps the volume's size; the limit it had is
        # re-applied (StorPool's revert drops it)
        assert (reverted.size_bytes, reverted.max_iops) == (2 * SIZE, 1000)

    def revoke(self, volume: types_pb2.Volume, host: str) -> None:
        request = driver_pb2.RevokeAccessRequest(object=self.volume_object(volume), host_id=host)
        assert self.c.driver.RevokeAccess(request).detached
        assert not self.c.driver.RevokeAccess(request).detached

    def detach_everywhere(self, volume: types_pb2.Volume) -> None:
        for host in HOSTS:
            self.grant(volume, host)
        request = driver_pb2.DetachVolumeFromAllStorageNodesRequest(
            pool=self.pool_ref, volume_path=volume.path
        )
        assert list(self.c.driver.DetachVolumeFromAllStorageNodes(request).detached_client_ids) == [
            1,
            2,
        ]
        assert not self.c.driver.DetachVolumeFromAllStorageNodes(request).detached_client_ids

    def vm_snapshot(self, volumes: list[types_pb2.Volume]) -> None:
        c, vm = self.c, new_id("vm")
        for device_id, volume in enumerate(volumes):
            info = driver_pb2.ProvideVmInfoRequest(
                pool=self.pool_ref,
                volume=types_pb2.Volume(path=volume.path, vm_uuid=vm, device_id=device_id),
            )
            twice(c.driver.ProvideVmInfo, info)
        tags = driver_pb2.ProvideVmTagsRequest(
            pool=self.pool_ref,
            vm_uuid=vm,
            volume_paths=[v.path for v in volumes],
            key="vc-policy",
            value="daily",
        )
        assert twice(c.driver.ProvideVmTags, tags).volumes_updated == len(volumes)
        refs = [
            strategies_pb2.VolumeSnapshotRef(volume_uuid=v.uuid, volume_path=v.path)
            for v in volumes
        ]
        can = c.vm_snapshots.CanHandleVMSnapshot(
            strategies_pb2.CanHandleVMSnapshotRequest(
                vm_uuid=vm, volume_paths=[v.path for v in volumes]
            )
        )
        assert can.priority == strategies_pb2.STRATEGY_PRIORITY_HIGHEST
        take = strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"), vm_uuid=vm, volumes=refs, pool=self.pool_ref
        )
        taken = twice(c.vm_snapshots.TakeVMSnapshot, take)
        self.res.vm_snapshot(self.pool, taken)
        assert [r.volume_path for r in taken.volumes] == [v.path for v in volumes]
        assert all(r.snapshot_path.startswith("/dev/storpool-byid/") for r in taken.volumes)
        before = {v.path: self.read_after_grant(v) for v in volumes}
        for volume in volumes:  # change what the VM snapshot must undo
            self.write(volume, pattern(90 + self.n, 4096))
        revert = strategies_pb2.RevertVMSnapshotRequest(
            vm_snapshot_uuid=take.vm_snapshot_uuid,
            vm_uuid=vm,
            volumes=taken.volumes,
            pool=self.pool_ref,
        )
        twice(c.vm_snapshots.RevertVMSnapshot, revert)
        assert {v.path: self.read_after_grant(v) for v in volumes} == before
        delete = strategies_pb2.DeleteVMSnapshotRequest(
            vm_snapshot_uuid=take.vm_snapshot_uuid, volumes=taken.volumes, pool=self.pool_ref
        )
        assert c.vm_snapshots.DeleteVMSnapshot(delete).snapshots_deleted == len(volumes)
        assert c.vm_snapshots.DeleteVMSnapshot(delete).snapshots_deleted == 0

    # ---- bytes through host 1's device ---------------------------------------------------------

    def write(self, volume: types_pb2.Volume, data: bytes) -> None:
        self.grant(volume, HOSTS[0])
        self.c.write(1, volume.path, 0, data)

    def read_after_grant(self, volume: types_pb2.Volume, length: int = 4096) -> bytes:
        self.grant(volume, HOSTS[0])
        return self.c.read(1, volume.path, 0, length)

    # ---- deleting ------------------------------------------------------------------------------

    def delete_volume(self, volume: types_pb2.Volume) -> None:
        request = driver_pb2.DeleteDataRequest(
            pool=self.pool_ref, object=types_pb2.DataObject(volume=volume)
        )
        assert self.c.driver.DeleteData(request).deleted
        assert not self.c.driver.DeleteData(request).deleted

    def delete_snapshot(self, snapshot: types_pb2.Snapshot) -> None:
        request = strategies_pb2.DeleteSnapshotRequest(snapshot=snapshot, pool=self.pool_ref)
        assert self.c.snapshots.DeleteSnapshot(request).deleted
        assert not self.c.snapshots.DeleteSnapshot(request).deleted

    def delete_template(self) -> None:
        request = driver_pb2.DeleteDataRequest(
            pool=self.pool_ref,
            object=types_pb2.DataObject(template=types_pb2.Template(uuid=self.template_uuid)),
        )
        assert self.c.driver.DeleteData(request).deleted
        assert not self.c.driver.DeleteData(request).deleted

    def delete_pool(self) -> None:
        request = lifecycle_pb2.DeletePoolRequest(pool_uuid=self.pool)
        first = self.c.lifecycle.DeletePool(request)
        assert (first.deleted, first.template_snapshots_removed) == (True, 0)
        second = self.c.lifecycle.DeletePool(request)
        assert (second.deleted, second.template_snapshots_removed) == (False, 0)
        expect_error(
            self.c.lifecycle.GetPool,
            lifecycle_pb2.PoolRef(pool_uuid=self.pool),
            grpc.StatusCode.NOT_FOUND,
            self.pool,
        )

    # ---- the whole run ---------------------------------------------------------------------------

    def run(self) -> None:
        self.add_pool()
        self.pool_states()
        data = self.create_volume()
        root = self.template_volume()
        # the template's bytes arrived; the DATA volume is the one we write
        assert self.read_after_grant(root) == self.template.writes[0]
        written = pattern(self.n, 4096)
        self.write(data, written)
        assert self.c.read(1, data.path, 0, 4096) == written
        snapshot = self.take_snapshot(data)
        backup = self.backup(snapshot)
        clone = self.volume_from(
            types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(
                    uuid=snapshot.uuid, path=snapshot.path, store=self.c.primary(self.pool)
                )
            ),
            "snapshot-to-volume",
        )
        restored = self.volume_from(
            types_pb2.DataObject(snapshot=backup), "secondary-snapshot-to-volume"
        )
        for volume in (clone, restored):
            assert self.read_after_grant(volume) == written, volume
        self.resize(data)
        self.write(data, pattern(50 + self.n, 4096))
        self.revert(data, snapshot)
        # revert force-detached the volume; attached again it reads as the snapshot
        assert self.read_after_grant(data) == written
        self.revoke(data, HOSTS[0])
        self.detach_everywhere(data)
        self.vm_snapshot([data, root])
        for volume in (clone, restored):
            self.revoke(volume, HOSTS[0])
        self.revoke(root, HOSTS[0])
        for volume in (data, root, clone, restored):
            self.delete_volume(volume)
        self.delete_snapshot(snapshot)
        self.delete_template()
        self.delete_pool()


def test_lifecycle_is_idempotent_and_leaves_nothing(
    contract: Contract, res: Resources, template: Template
):
    before = contract.inventory()
    count = iterations()
    for n in range(1, count + 1):
        Lifecycle(contract, res, template, n).run()
        assert contract.inventory() == before, f"iteration {n} left StorPool objects behind"
    running = contract.running_operations()
    assert not any(running.values()), f"operations still running: {running}"
    # the tracker's deletes find nothing left (each is idempotent and answers OK)
    assert res.cleanup() == []
    unfinished = contract.operations.ListOperations(
        operations_pb2.ListOperationsRequest(filter="done=false")
    )
    assert not unfinished.operations


@pytest.mark.parametrize("count", ["0", "x"])
def test_iteration_count_must_be_a_positive_number(monkeypatch: pytest.MonkeyPatch, count: str):
    monkeypatch.setenv("SPCS_CONTRACT_ITERATIONS", count)
    with pytest.raises(ValueError, match="SPCS_CONTRACT_ITERATIONS"):
        iterations()
