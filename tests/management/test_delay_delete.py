"""The delay-delete backup (the Java plugin's `storpool.delete.after.interval`) over gRPC: a
volume delete on such a pool first takes a snapshot StorPool deletes by itself, reports it (also
on a replay), lists it as `cs=delayDelete`, and a volume restored from it holds the deleted
volume's bytes; StorPool then removes it on time. Pools without the setting keep no backup, and a
setting that is not seconds is refused."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, running_stack
from tests.support import SPCS

DETAIL = "storpool.delete.after.interval"


def delay_deleted(mgmt: Mgmt) -> list[lifecycle_pb2.PoolObject]:
    return list(
        mgmt.lifecycle.ListPoolObjects(
            lifecycle_pb2.ListPoolObjectsRequest(
                pool_uuid=mgmt.pool_uuid,
                kind=lifecycle_pb2.POOL_OBJECT_KIND_SNAPSHOT,
                cloudstack_kind="delayDelete",
            )
        ).objects
    )


def delete(mgmt: Mgmt, volume: types_pb2.Volume) -> driver_pb2.DeleteDataResponse:
    return mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=volume)
        )
    )


def test_a_deleted_volume_leaves_a_backup_to_restore_from(tmp_path: Path):
    with running_stack(tmp_path) as mgmt:
        volume = mgmt.create_volume(8 * MIB, vm_uuid="vm-1")
        data = os.urandom(MIB)
        mgmt.write(volume.path, {0: data, 5 * MIB: data[:4096]})
        # no setting: a delete keeps nothing
        plain = delete(mgmt, types_pb2.Volume(uuid=mgmt.create_volume(MIB).uuid))
        assert plain.deleted and not plain.HasField("delay_delete_backup")

        mgmt.lifecycle.UpdatePool(
            lifecycle_pb2.UpdatePoolRequest(pool_uuid=mgmt.pool_uuid, details={DETAIL: "3600"})
        )
        before = time.time()
        gone = delete(mgmt, types_pb2.Volume(uuid=volume.uuid))
        assert gone.deleted
        backup = gone.delay_delete_backup
        assert backup.path.startswith("/dev/storpool-byid/") and backup.path != volume.path
        assert backup.size_bytes == 8 * MIB and backup.vm_uuid == "vm-1"
        assert before + 3600 - 5 <= gone.backup_delete_time.seconds <= time.time() + 3600 + 5
        assert mgmt.api.volume_or_none(f"~{volume.global_id}") is None

        # a replay, by uuid or by path, reports the same backup
        for ref in (types_pb2.Volume(uuid=volume.uuid), types_pb2.Volume(path=volume.path)):
            again = delete(mgmt, ref)
            assert not again.deleted and again.delay_delete_backup.path == backup.path

        (listed,) = delay_deleted(mgmt)
        assert (listed.path, listed.uuid, listed.cloudstack_kind) == (
            backup.path,
            volume.uuid,
            "delayDelete",
        )
        assert listed.delete_time.seconds == gone.backup_delete_time.seconds
        shown = subprocess.run(
            [*SPCS, "ctl", "--management", mgmt.stack.management.address, "snapshot",
             mgmt.pool_uuid, backup.path],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        rows = dict(line.split(None, 1) for line in shown.stdout.splitlines()[1:] if " " in line)
        assert rows["name"].strip() == f"cs-deldel-{volume.global_id}"
        assert "deleted by StorPool at" in shown.stdout and "delayDelete" in shown.stdout

        restored = mgmt.copy(
            types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path=backup.path, store=mgmt.primary())
            ),
            types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("restored"), store=mgmt.primary())
            ),
        )
        bytes_back = mgmt.read(restored.result.volume.path)
        assert bytes_back[:MIB] == data and bytes_back[5 * MIB : 5 * MIB + 4096] == data[:4096]
        assert bytes_back[MIB : 5 * MIB] == bytes(4 * MIB)


def test_storpool_removes_the_backup_on_time(tmp_path: Path):
    with running_stack(tmp_path) as mgmt:
        mgmt.lifecycle.UpdatePool(
            lifecycle_pb2.UpdatePoolRequest(pool_uuid=mgmt.pool_uuid, details={DETAIL: "2"})
        )
        gone = delete(mgmt, mgmt.create_volume(MIB))
        assert gone.HasField("delay_delete_backup") and len(delay_deleted(mgmt)) == 1
        deadline = time.monotonic() + 15
        while delay_deleted(mgmt) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert delay_deleted(mgmt) == []
        assert mgmt.api.snapshot_or_none(f"~{gone.delay_delete_backup.global_id}") is None


def test_a_retried_delete_keeps_one_backup(tmp_path: Path):
    """StorPool took the snapshot but its answer was lost, then the delete itself kept failing:
    the caller's retry finishes the delete with the backup the first attempt took."""
    with running_stack(tmp_path) as mgmt:
        emulator = mgmt.stack.emulator
        assert emulator is not None
        mgmt.lifecycle.UpdatePool(
            lifecycle_pb2.UpdatePoolRequest(pool_uuid=mgmt.pool_uuid, details={DETAIL: "600"})
        )
        volume = mgmt.create_volume(MIB)
        emulator.set_faults({"failAfter": {"VolumeSnapshot": 1}, "failNext": {"VolumeDelete": 999}})
        try:
            with pytest.raises(grpc.RpcError) as failed:
                delete(mgmt, volume)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            emulator.set_faults({})
        assert mgmt.api.volume_or_none(f"~{volume.global_id}") is not None  # still there
        done = delete(mgmt, volume)
        assert done.deleted
        assert [o.path for o in delay_deleted(mgmt)] == [done.delay_delete_backup.path]


def test_a_setting_that_is_not_seconds_is_refused(tmp_path: Path):
    with running_stack(tmp_path, pool=False) as mgmt:
        pool = mgmt.add_pool()
        for value in ("soon", "-5", "1.5", str(11 * 365 * 86400)):
            with pytest.raises(grpc.RpcError) as refused:
                mgmt.lifecycle.InitializePool(
                    lifecycle_pb2.InitializePoolRequest(
                        pool_uuid=new_id("pool"),
                        name="p",
                        url=mgmt.pool_url(),
                        zone_id="zone-1",
                        capacity_bytes=1 << 40,
                        details={DETAIL: value},
                    )
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert DETAIL in (refused.value.details() or "")
            with pytest.raises(grpc.RpcError) as refused:
                mgmt.lifecycle.UpdatePool(
                    lifecycle_pb2.UpdatePoolRequest(pool_uuid=pool, details={DETAIL: value})
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        kept = mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=pool))
        assert DETAIL not in kept.details
