"""Request contracts, holds and StorPool errors, in-process: the servicers' `@rpc` checks (called
directly, with no gRPC), each copy kind's extra contract, conflicting operations answered
ABORTED naming the holder, and StorPool's error answers as domain errors that leave nothing
half-made."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from spcs.common import errors, holds
from spcs.common.validate import MAX_SIZE
from spcs.demo.stack import TEMPLATE
from spcs.management.copies import COPIES
from spcs.management.volumes import volume_key
from spcs.v1 import driver_pb2, lifecycle_pb2, strategies_pb2, types_pb2
from tests.domain.conftest import (
    MIB,
    OTHER_TEMPLATE,
    Env,
    data_object,
    new_id,
    new_volume_object,
    ref_of,
    secondary,
    snapshot_object,
)

pytestmark = pytest.mark.fast

MISSING_PATH = "/dev/storpool-byid/emu.a.zz"


def _clear(message: Message, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        message = getattr(message, part)
    message.ClearField(last)


def _operations(env: Env) -> list:
    return env.domain.registry.list("", 0, "")[0]


# ---- the servicers' request contracts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "size", "words"),
    [
        ("pool.pool_uuid", MIB, "pool.pool_uuid is required"),
        ("volume.uuid", MIB, "volume.uuid is required"),
        ("", 0, "volume.size_bytes is required"),
        ("", 1000, "multiple of 512"),
        ("", MAX_SIZE + 512, "volume.size_bytes"),
    ],
)
def test_create_volume_contract(env: Env, drop: str, size: int, words: str):
    request = driver_pb2.CreateVolumeRequest(
        pool=env.ref(), volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=size)
    )
    if drop:
        _clear(request, drop)
    with pytest.raises(errors.InvalidArgument, match=words):
        env.driver.CreateVolume(request, None)
    assert env.sp.calls == {}


@pytest.mark.parametrize(
    ("call", "request_", "words"),
    [
        pytest.param(
            "DeleteData",
            driver_pb2.DeleteDataRequest(
                pool=types_pb2.PrimaryStore(pool_uuid="p-1"), object=types_pb2.DataObject()
            ),
            "object must be a volume, a snapshot or a template",
            id="DeleteData",
        ),
        pytest.param(
            "RevertSnapshot",
            driver_pb2.RevertSnapshotRequest(
                pool=types_pb2.PrimaryStore(pool_uuid="p-1"),
                snapshot=types_pb2.Snapshot(name="s"),
                volume=types_pb2.Volume(path=MISSING_PATH),
            ),
            "snapshot needs a path or uuid",
            id="RevertSnapshot",
        ),
        pytest.param(
            "ResizeVolume",
            driver_pb2.ResizeVolumeRequest(
                pool=types_pb2.PrimaryStore(pool_uuid="p-1"),
                volume=types_pb2.Volume(path=MISSING_PATH),
            ),
            "new_size_bytes is required",
            id="ResizeVolume",
        ),
        pytest.param(
            "CopyData",
            driver_pb2.CopyDataRequest(
                operation_id="bad id!",
                source=data_object("volume", secondary()),
                destination=data_object("volume", secondary()),
            ),
            "operation_id",
            id="CopyData",
        ),
    ],
)
def test_driver_contracts_are_checked_before_any_lookup(env: Env, call: str, request_, words):
    with pytest.raises(errors.InvalidArgument, match=words):
        getattr(env.driver, call)(request_, None)
    assert env.sp.calls == {}


def test_take_vm_snapshot_needs_every_volumes_uuid(env: Env):
    volume = env.create_volume()
    env.sp.calls.clear()
    request = strategies_pb2.TakeVMSnapshotRequest(
        vm_snapshot_uuid=new_id("vms"),
        vm_uuid="vm-1",
        pool=env.ref(),
        volumes=[strategies_pb2.VolumeSnapshotRef(volume_path=volume.path)],
    )
    with pytest.raises(errors.InvalidArgument, match=r"volumes\[0\]\.volume_uuid is required"):
        env.vm_strategy.TakeVMSnapshot(request, None)
    assert env.sp.calls == {} and env.sp.snapshots() == []


def test_every_mutation_runs_through_its_servicer_with_the_holds_it_declares(env: Env):
    """The servicer wrapper refuses holds an RPC does not declare (holds.Undeclared)."""
    other = env.add_pool(OTHER_TEMPLATE)
    d, ref = env.driver, env.ref()
    volume = d.CreateVolume(
        driver_pb2.CreateVolumeRequest(
            pool=ref, volume=types_pb2.Volume(uuid=new_id("v"), size_bytes=MIB)
        ),
        None,
    )
    d.ResizeVolume(
        driver_pb2.ResizeVolumeRequest(pool=ref, volume=volume, new_size_bytes=2 * MIB), None
    )
    d.ProvideVmInfo(
        driver_pb2.ProvideVmInfoRequest(
            pool=ref, volume=types_pb2.Volume(path=volume.path, vm_uuid="vm-1")
        ),
        None,
    )
    d.ChangeVolumeOffering(
        driver_pb2.ChangeVolumeOfferingRequest(
            pool=ref, volume=types_pb2.Volume(path=volume.path, max_iops=10)
        ),
        None,
    )
    snapshot = d.TakeSnapshot(
        driver_pb2.TakeSnapshotRequest(
            pool=ref, snapshot=types_pb2.Snapshot(uuid=new_id("s"), volume_path=volume.path)
        ),
        None,
    )
    d.RevertSnapshot(
        driver_pb2.RevertSnapshotRequest(pool=ref, snapshot=snapshot, volume=volume), None
    )
    vms = new_id("vms")
    refs = [strategies_pb2.VolumeSnapshotRef(volume_uuid=volume.uuid, volume_path=volume.path)]
    taken = env.vm_strategy.TakeVMSnapshot(
        strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid=vms, vm_uuid="vm-1", volumes=refs, pool=ref
        ),
        None,
    )
    env.vm_strategy.RevertVMSnapshot(
        strategies_pb2.RevertVMSnapshotRequest(
            vm_snapshot_uuid=vms, vm_uuid="vm-1", volumes=taken.volumes, pool=ref
        ),
        None,
    )
    assert (
        env.vm_strategy.DeleteVMSnapshot(
            strategies_pb2.DeleteVMSnapshotRequest(
                vm_snapshot_uuid=vms, volumes=taken.volumes, pool=ref
            ),
            None,
        ).snapshots_deleted
        == 1
    )
    assert env.strategy.DeleteSnapshot(
        strategies_pb2.DeleteSnapshotRequest(snapshot=snapshot, pool=ref), None
    ).deleted
    moved = d.MigrateVolume(
        driver_pb2.MigrateVolumeRequest(
            source_pool=ref, volume=volume, destination_pool=env.ref(other.uuid)
        ),
        None,
    )
    for path, pool in ((volume.path, ref), (moved.path, env.ref(other.uuid))):
        delete = driver_pb2.DeleteDataRequest(
            pool=pool, object=types_pb2.DataObject(volume=types_pb2.Volume(path=path))
        )
        assert d.DeleteData(delete, None).deleted
    lc = env.lifecycle
    for call in ("MaintainPool", "CancelMaintainPool", "DisablePool", "EnablePool"):
        getattr(lc, call)(lifecycle_pb2.PoolRef(pool_uuid=other.uuid), None)
    lc.UpdatePool(
        lifecycle_pb2.UpdatePoolRequest(pool_uuid=other.uuid, capacity_bytes=1 << 41), None
    )
    assert lc.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=other.uuid), None).deleted
    assert env.sp.volumes() == [] and env.domain.locks.held() == {}


# ---- each copy kind's contract: checked at the call, before a job starts ---------------------


def _complete_copy(env: Env, key: tuple[str, str, str, str]) -> driver_pb2.CopyDataRequest:
    """A CopyData of the kind `key` with every field its contract could ask for set."""
    s_kind, s_store, d_kind, d_store = key
    other = env.add_pool(OTHER_TEMPLATE)
    pools = iter((env.pool_uuid, other.uuid))

    def part(kind: str, where: str, uuid: str) -> types_pb2.DataObject:
        if where == "primary":
            return data_object(kind, env.primary(next(pools)), uuid=uuid, path=MISSING_PATH)
        if where == "direct_download":
            url = types_pb2.DirectDownloadSource(url="https://images.example.com/t.qcow2")
            return data_object(kind, types_pb2.DataStore(direct_download=url), uuid=uuid)
        return data_object(kind, secondary(), uuid=uuid, path=f"{kind}s/2/3")

    return env.copy_request(part(s_kind, s_store, "src-1"), part(d_kind, d_store, "dst-1"))


def _needs(key) -> list[tuple[tuple[str, ...], str]]:
    """(fields dropped together, the words the refusal must contain)."""
    needs = COPIES[key].needs
    cases = [((f,), f"{f} is required") for f in (*needs.required, *needs.ids)]
    cases += [(group, "needs a path or uuid") for group in needs.one_of]
    cases += [(group, " or ".join(group) + " is required") for group in needs.id_of]
    return cases


@pytest.mark.parametrize(
    "key", [k for k, rule in COPIES.items() if _needs(k)], ids=lambda k: COPIES[k].kind
)
def test_a_copy_missing_a_field_its_kind_needs_is_refused_at_the_call(env: Env, key):
    complete = _complete_copy(env, key)
    COPIES[key].needs.check(complete)  # the complete request passes
    env.sp.calls.clear()
    for fields, words in _needs(key):
        request = driver_pb2.CopyDataRequest()
        request.CopyFrom(complete)
        for dotted in fields:
            _clear(request, dotted)
        with pytest.raises(errors.InvalidArgument) as refused:
            env.driver.CopyData(request, None)
        assert words in refused.value.message, (fields, refused.value.message)
    assert _operations(env) == [] and env.sp.calls == {}


def test_a_copy_within_one_pool_is_refused_as_cant_copy(env: Env):
    volume = data_object("volume", env.primary(), uuid="v-1", path=MISSING_PATH)
    with pytest.raises(errors.InvalidArgument, match="CanCopy answers false"):
        env.driver.CopyData(env.copy_request(volume, volume), None)
    assert _operations(env) == []


# ---- holds: a conflict is ABORTED at once, naming the holder -------------------------------------


def test_a_delete_while_a_resize_holds_the_volume_is_aborted(env: Env):
    volume = env.create_volume()
    pool = env.domain.pools.get(env.pool_uuid)
    with env.domain.locks.hold("ResizeVolume", volume=holds.storpool_object(volume.global_id)):
        with pytest.raises(errors.Conflict) as clash:
            env.domain.volumes.delete(pool, volume)
        assert "ResizeVolume" in clash.value.message and "retry" in clash.value.message
        assert f"storpool:{volume.global_id}" in clash.value.message
    assert env.sp.volume_or_none(ref_of(volume.path)) is not None
    assert env.domain.volumes.delete(pool, volume)  # once it is free


def test_a_create_while_a_copy_creates_the_same_uuid_is_aborted(env: Env):
    uuid = new_id("vol")
    key = volume_key(types_pb2.Volume(uuid=uuid))
    with env.domain.locks.hold("snapshot-to-volume", destination=key):
        with pytest.raises(errors.Conflict, match="snapshot-to-volume"):
            env.create_volume(uuid=uuid)
        with env.domain.locks.hold("CreateVolume", volume=volume_key(types_pb2.Volume(uuid="x"))):
            pass  # other uuids are free
    assert env.sp.volumes() == []
    assert env.domain.locks.held() == {}


def test_a_copy_from_a_snapshot_being_deleted_is_aborted_and_starts_nothing(env: Env):
    snapshot = env.take_snapshot(env.create_volume())
    held = holds.storpool_object(snapshot.global_id)
    request = env.copy_request(
        snapshot_object(snapshot, env.pool_uuid), new_volume_object(env.pool_uuid)
    )
    with (
        env.domain.locks.hold("DeleteSnapshot", snapshot=held),
        pytest.raises(errors.Conflict, match="DeleteSnapshot"),
    ):
        env.domain.copies.start(request)
    assert _operations(env) == [] and len(env.sp.volumes()) == 1


def test_readers_of_a_snapshot_share_it_and_a_delete_is_aborted(env: Env):
    volume = env.create_volume()
    snapshot = env.take_snapshot(volume)
    backup = holds.holds("snapshot-to-secondary", source=holds.storpool_object(snapshot.global_id))
    release = env.domain.locks.acquire(backup, "BackupSnapshot snapshots/1 (operations/op-b)")
    try:
        clone = env.copied(
            env.copy_request(
                snapshot_object(snapshot, env.pool_uuid), new_volume_object(env.pool_uuid)
            )
        )
        assert env.volume(clone.result.volume.path).parent == env.snapshot(snapshot.path).name
        # a revert of a volume to the snapshot reads it too
        env.domain.volumes.revert(
            driver_pb2.RevertSnapshotRequest(pool=env.ref(), snapshot=snapshot, volume=volume)
        )
        with pytest.raises(errors.Conflict, match="BackupSnapshot") as clash:
            env.domain.snapshots.delete(types_pb2.Snapshot(path=snapshot.path), env.pool_uuid)
        assert "exclusive" in clash.value.message and "shared" in clash.value.message
    finally:
        release()
    assert not env.snapshot(snapshot.path).deleted
    assert env.domain.snapshots.delete(types_pb2.Snapshot(path=snapshot.path), env.pool_uuid)


def test_lifecycle_calls_on_a_busy_pool_are_aborted(env: Env):
    with env.domain.locks.hold("MaintainPool", pool=holds.pool(env.pool_uuid)):
        with pytest.raises(errors.Conflict, match="MaintainPool"):
            env.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=env.pool_uuid), None)
        with pytest.raises(errors.Conflict, match="MaintainPool"):
            env.lifecycle.UpdatePool(
                lifecycle_pb2.UpdatePoolRequest(pool_uuid=env.pool_uuid, capacity_bytes=1), None
            )
    assert env.store.pool(env.pool_uuid).capacity_bytes == 1 << 40


def test_a_vm_snapshot_being_taken_cannot_be_deleted(env: Env):
    vms = new_id("vms")
    with (
        env.domain.locks.hold("TakeVMSnapshot", vm_snapshot=holds.vm_snapshot(vms)),
        pytest.raises(errors.Conflict, match="TakeVMSnapshot"),
    ):
        env.domain.snapshots.vm_delete(
            strategies_pb2.DeleteVMSnapshotRequest(vm_snapshot_uuid=vms, pool=env.ref())
        )


# ---- StorPool's errors as domain errors, nothing half-made --------------------------------------


@pytest.mark.parametrize(
    ("sp_error", "transient", "error"),
    [
        ("insufficientResources", False, errors.ResourceExhausted),
        ("busy", False, errors.FailedPrecondition),
        ("invalidParam", False, errors.InvalidArgument),
        ("authFailed", False, errors.PermissionDenied),
        ("someNewError", False, errors.Internal),
        ("busy", True, errors.Unavailable),
    ],
)
def test_a_refused_create_is_the_matching_error_and_makes_nothing(
    env: Env, sp_error: str, transient: bool, error: type[errors.SpcsError]
):
    uuid = new_id("vol")
    env.sp.fail_next("VolumeCreate", sp_error, transient=transient)
    with pytest.raises(error):
        env.create_volume(uuid=uuid)
    assert env.sp.volumes() == [] and env.domain.locks.held() == {}
    assert env.create_volume(uuid=uuid).path  # the same uuid, retried, works


def test_a_refused_delete_keeps_the_volume(env: Env):
    volume = env.create_volume()
    env.sp.fail_next("VolumeDelete", "busy", desc="volume is open")
    with pytest.raises(errors.FailedPrecondition, match="volume is open"):
        env.domain.volumes.delete(env.domain.pools.get(env.pool_uuid), volume)
    assert env.sp.volume_or_none(ref_of(volume.path)) is not None


def test_a_refused_resize_keeps_size_and_limit(env: Env):
    volume = env.create_volume(8 * MIB, max_iops=100)
    env.sp.fail_next("VolumeUpdate", "insufficientResources")
    with pytest.raises(errors.ResourceExhausted):
        env.domain.volumes.resize(
            driver_pb2.ResizeVolumeRequest(
                pool=env.ref(),
                volume=types_pb2.Volume(path=volume.path, max_iops=500),
                new_size_bytes=64 * MIB,
            )
        )
    obj = env.volume(volume.path)
    assert (obj.size, obj.iops, obj.template) == (8 * MIB, 100, TEMPLATE)


def test_a_refused_revert_keeps_the_data(env: Env):
    volume = env.create_volume()
    snapshot = env.take_snapshot(volume)
    name = env.volume(volume.path).name
    env.sp.write(name, MIB)
    env.sp.fail_next("VolumeRevert", "busy")
    with pytest.raises(errors.FailedPrecondition):
        env.domain.volumes.revert(
            driver_pb2.RevertSnapshotRequest(pool=env.ref(), snapshot=snapshot, volume=volume)
        )
    assert env.sp.volumes_space()[name][1] == MIB
    assert env.volume(volume.path).parent == env.snapshot(snapshot.path).name
