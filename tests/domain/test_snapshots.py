"""Snapshots (spcs.management.snapshots) in-process: take and its replays, delete, the
strategies' decisions, and VM snapshots (take, revert, delete), checked against StorPool's
state in the MemoryStorPool."""

from __future__ import annotations

import pytest

from spcs.common import errors
from spcs.demo.stack import TEMPLATE
from spcs.v1 import strategies_pb2, types_pb2
from tests.domain.conftest import MIB, Env, new_id, ref_of

pytestmark = pytest.mark.fast

HIGHEST = strategies_pb2.STRATEGY_PRIORITY_HIGHEST
CANT_HANDLE = strategies_pb2.STRATEGY_PRIORITY_CANT_HANDLE
DELETE = strategies_pb2.SNAPSHOT_OPERATION_DELETE


def _clone(env: Env, snapshot: types_pb2.Snapshot) -> str:
    """A volume made from the snapshot, straight in StorPool (so the snapshot has a child)."""
    return env.sp.volume_create(name=new_id("child"), parent=ref_of(snapshot.path))


# ---- take -------------------------------------------------------------------------------------


def test_take_names_tags_and_sizes_the_snapshot(env: Env):
    volume = env.create_volume(16 * MIB)
    uuid = new_id("snap")
    taken = env.take_snapshot(volume, uuid=uuid, vm_uuid="vm-1")
    snap = env.snapshot(taken.path)
    assert (snap.name, snap.size, snap.template, snap.on_volume) == (
        f"cs-snap-{uuid}",
        16 * MIB,
        TEMPLATE,
        f"cs-vol-{volume.uuid}",
    )
    assert snap.tags == {"uuid": uuid, "cs": "snapshot", "cvm": "vm-1"}
    assert env.volume(volume.path).parent == snap.name
    assert (taken.global_id, taken.size_bytes, taken.store.primary.pool_uuid) == (
        snap.global_id,
        16 * MIB,
        env.pool_uuid,
    )


def test_take_replayed_is_the_same_snapshot_even_after_later_ones(env: Env):
    volume = env.create_volume()
    first = env.take_snapshot(volume)
    env.take_snapshot(volume)  # a later snapshot sits between the volume and the first
    again = env.take_snapshot(volume, uuid=first.uuid)
    assert (again.path, again.size_bytes) == (first.path, first.size_bytes)
    assert len(env.sp.snapshots()) == 2


def test_take_replayed_on_another_volume_is_already_exists(env: Env):
    volume, other = env.create_volume(), env.create_volume()
    taken = env.take_snapshot(volume)
    with pytest.raises(errors.AlreadyExists, match=taken.uuid):
        env.take_snapshot(other, uuid=taken.uuid)
    assert [s.on_volume for s in env.sp.snapshots()] == [f"cs-vol-{volume.uuid}"]
    assert env.volume(other.path).parent == ""


def test_take_of_a_missing_volume_is_not_found(env: Env):
    with pytest.raises(errors.NotFound, match=r"emu\.a\.zz"):
        env.take_snapshot(types_pb2.Volume(path="/dev/storpool-byid/emu.a.zz"))
    assert env.sp.snapshots() == []


def test_take_with_a_vm_uuid_storpool_cannot_tag_makes_nothing(env: Env):
    volume = env.create_volume()
    with pytest.raises(errors.InvalidArgument, match="vm_uuid"):
        env.take_snapshot(volume, vm_uuid="vm 1")
    assert env.sp.snapshots() == []


def test_take_refused_for_space_is_resource_exhausted_and_makes_nothing(env: Env):
    volume = env.create_volume()
    env.sp.fail_next("VolumeSnapshot", "insufficientResources")
    with pytest.raises(errors.ResourceExhausted, match="insufficientResources"):
        env.take_snapshot(volume)
    assert env.sp.snapshots() == []
    assert env.domain.locks.held() == {}
    assert env.take_snapshot(volume).path  # and the next attempt works


# ---- delete and the strategy -------------------------------------------------------------------


def test_delete_by_path_then_replay(env: Env):
    taken = env.take_snapshot(env.create_volume())
    snap = types_pb2.Snapshot(path=taken.path)
    # the volume's newest snapshot is its parent: StorPool only marks it deleted
    assert env.domain.snapshots.delete(snap, env.pool_uuid)
    assert env.sp.snapshot_or_none(ref_of(taken.path)) is None
    assert not env.domain.snapshots.delete(snap, env.pool_uuid)


def test_delete_by_uuid_without_a_pool_looks_in_every_pool(env: Env):
    volume = env.create_volume()
    older = env.take_snapshot(volume)
    newer = env.take_snapshot(volume)
    assert env.domain.snapshots.delete(types_pb2.Snapshot(uuid=older.uuid))
    assert env.sp.snapshot_or_none(f"cs-snap-{older.uuid}") is None
    assert env.sp.snapshot_or_none(ref_of(newer.path)) is not None


def test_delete_a_java_plugin_snapshot_found_by_its_uuid_tag(env: Env):
    volume = env.create_volume()
    uuid = new_id("snap")
    gid = env.sp.snapshot_create(
        ref_of(volume.path),
        name=None,  # type: ignore[arg-type]  # StorPool: no name = anonymous
        tags={"uuid": uuid, "cs": "snapshot"},
    )
    assert env.domain.snapshots.delete(types_pb2.Snapshot(uuid=uuid), env.pool_uuid)
    assert env.sp.snapshot_or_none(f"~{gid}") is None


def test_delete_detaches_the_snapshot_first(env: Env):
    taken = env.take_snapshot(env.create_volume())
    env.sp.attach(ref_of(taken.path), 1, read_only=True, snapshot=True, timeout=10)
    assert env.domain.snapshots.delete(types_pb2.Snapshot(path=taken.path), env.pool_uuid)
    assert env.sp.attachments() == []


def test_a_snapshot_with_clones_counts_as_deleted_once(env: Env):
    taken = env.take_snapshot(env.create_volume())
    _clone(env, taken)
    snap = types_pb2.Snapshot(path=taken.path)
    assert env.domain.snapshots.delete(snap, env.pool_uuid)
    assert [s.deleted for s in env.sp.snapshots()] == [True]  # kept for its clone
    assert not env.domain.snapshots.delete(snap, env.pool_uuid)
    decision = env.domain.snapshots.can_handle(
        strategies_pb2.CanHandleSnapshotRequest(snapshot=snap, operation=DELETE)
    )
    assert decision.priority == CANT_HANDLE


@pytest.mark.parametrize(
    ("operation", "exists", "priority"),
    [
        (strategies_pb2.SNAPSHOT_OPERATION_DELETE, True, HIGHEST),
        (strategies_pb2.SNAPSHOT_OPERATION_COPY, True, HIGHEST),  # CopySnapshot, to another zone
        (strategies_pb2.SNAPSHOT_OPERATION_DELETE, False, CANT_HANDLE),
        (strategies_pb2.SNAPSHOT_OPERATION_TAKE, True, CANT_HANDLE),
    ],
    ids=["delete", "copy", "delete-missing", "take"],
)
def test_can_handle_asks_storpool(env: Env, operation, exists: bool, priority):
    taken = env.take_snapshot(env.create_volume())
    uuid = taken.uuid if exists else new_id("never")
    decision = env.domain.snapshots.can_handle(
        strategies_pb2.CanHandleSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid=uuid), operation=operation
        )
    )
    assert decision.priority == priority, decision.reason


# ---- VM snapshots -------------------------------------------------------------------------------


def _vm_refs(volumes: list[types_pb2.Volume]) -> list[strategies_pb2.VolumeSnapshotRef]:
    return [
        strategies_pb2.VolumeSnapshotRef(volume_uuid=v.uuid, volume_path=v.path) for v in volumes
    ]


def _vm_take(env: Env, vm_snapshot: str, volumes: list[types_pb2.Volume]):
    return env.domain.snapshots.vm_take(
        strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid=vm_snapshot, vm_uuid="vm-1", volumes=_vm_refs(volumes), pool=env.ref()
        )
    )


def test_vm_can_handle(env: Env):
    volume = env.create_volume()

    def decide(paths: list[str], with_memory: bool = False) -> int:
        return env.domain.snapshots.vm_can_handle(
            strategies_pb2.CanHandleVMSnapshotRequest(
                vm_uuid="vm-1", volume_paths=paths, with_memory=with_memory
            )
        ).priority

    assert decide([volume.path]) == HIGHEST
    assert decide([volume.path], with_memory=True) == CANT_HANDLE
    assert decide([]) == CANT_HANDLE
    assert decide([volume.path, "/mnt/nfs/other.qcow2"]) == CANT_HANDLE
    assert decide([volume.path, "/dev/storpool-byid/emu.a.zz"]) == CANT_HANDLE


def test_vm_take_is_one_group_snapshot_named_and_tagged(env: Env):
    volumes = [env.create_volume(4 * MIB), env.create_volume(8 * MIB)]
    vms = new_id("vms")
    env.sp.calls.clear()
    taken = _vm_take(env, vms, volumes)
    assert env.sp.calls["VolumesGroupSnapshot"] == 1
    for ref, volume in zip(taken.volumes, volumes, strict=True):
        snap = env.snapshot(ref.snapshot_path)
        assert snap.name == f"cs-vmsnap-{vms}-{volume.uuid}"
        assert snap.tags == {"uuid": vms, "cs": "group", "cvm": "vm-1"}
        assert (ref.volume_path, ref.size_bytes) == (volume.path, volume.size_bytes)
        assert env.volume(volume.path).parent == snap.name


def test_vm_take_replayed_answers_the_same_without_a_new_group_snapshot(env: Env):
    volumes = [env.create_volume(), env.create_volume()]
    vms = new_id("vms")
    first = _vm_take(env, vms, volumes)
    env.sp.calls.clear()
    assert _vm_take(env, vms, volumes) == first
    assert "VolumesGroupSnapshot" not in env.sp.calls
    assert len(env.sp.snapshots()) == 2


def test_vm_take_replayed_with_other_volumes_keeps_the_original(env: Env):
    volumes = [env.create_volume(), env.create_volume()]
    vms = new_id("vms")
    first = _vm_take(env, vms, volumes)
    with pytest.raises(errors.AlreadyExists, match=vms):
        _vm_take(env, vms, volumes[:1])
    assert all(not env.snapshot(r.snapshot_path).deleted for r in first.volumes)
    assert len(env.sp.snapshots()) == 2


def test_vm_take_with_a_missing_volume_makes_nothing(env: Env):
    volume = env.create_volume()
    ghost = types_pb2.Volume(uuid=new_id("vol"), path="/dev/storpool-byid/emu.a.zz")
    with pytest.raises(errors.NotFound):
        _vm_take(env, new_id("vms"), [volume, ghost])
    assert env.sp.snapshots() == []


def test_vm_take_refused_by_storpool_makes_nothing(env: Env):
    volumes = [env.create_volume(), env.create_volume()]
    env.sp.fail_next("VolumesGroupSnapshot", "busy")
    with pytest.raises(errors.FailedPrecondition):
        _vm_take(env, new_id("vms"), volumes)
    assert env.sp.snapshots() == []
    assert env.domain.locks.held() == {}


def test_vm_revert_detaches_reverts_and_re_applies_iops(env: Env):
    limited = env.create_volume(max_iops=400)
    plain = env.create_volume()
    vms = new_id("vms")
    taken = _vm_take(env, vms, [limited, plain])
    for volume in (limited, plain):
        env.sp.write(env.volume(volume.path).name, MIB)  # changed after the VM snapshot
        env.sp.attach(ref_of(volume.path), 1, read_only=False, snapshot=False, timeout=10)
    env.take_snapshot(limited)  # a later snapshot: the revert goes back past it
    refs = list(taken.volumes)
    refs[1].max_iops = 250
    env.domain.snapshots.vm_revert(
        strategies_pb2.RevertVMSnapshotRequest(
            vm_snapshot_uuid=vms, vm_uuid="vm-1", volumes=refs, pool=env.ref()
        )
    )
    assert env.sp.attachments() == []
    for ref in refs:
        obj = env.volume(ref.volume_path)
        assert obj.parent == env.snapshot(ref.snapshot_path).name
        assert env.sp.volumes_space()[obj.name][1] == 0  # the data as it was
    assert [env.volume(r.volume_path).iops for r in refs] == [400, 250]


def test_vm_revert_of_a_running_vm_changes_nothing(env: Env):
    volume = env.create_volume()
    vms = new_id("vms")
    taken = _vm_take(env, vms, [volume])
    env.sp.write(env.volume(volume.path).name, MIB)
    with pytest.raises(errors.FailedPrecondition, match="running"):
        env.domain.snapshots.vm_revert(
            strategies_pb2.RevertVMSnapshotRequest(
                vm_snapshot_uuid=vms,
                vm_uuid="vm-1",
                volumes=taken.volumes,
                pool=env.ref(),
                vm_running=True,
            )
        )
    assert env.sp.volumes_space()[env.volume(volume.path).name][1] == MIB


def test_vm_delete_counts_what_was_there(env: Env):
    volumes = [env.create_volume(), env.create_volume()]
    vms = new_id("vms")
    taken = _vm_take(env, vms, volumes)
    request = strategies_pb2.DeleteVMSnapshotRequest(
        vm_snapshot_uuid=vms, volumes=taken.volumes, pool=env.ref()
    )
    assert env.domain.snapshots.vm_delete(request) == 2
    assert all(env.sp.snapshot_or_none(ref_of(r.snapshot_path)) is None for r in taken.volumes)
    assert env.domain.snapshots.vm_delete(request) == 0
