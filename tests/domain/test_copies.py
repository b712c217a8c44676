"""Copies StorPool does itself (spcs.management.copies), in-process: CopyData started through
`Copies.start` and waited for in the operation registry (the job runs on its own thread), then
checked against the MemoryStorPool. Also CanCopy's answers. Copies that need a node (downloads,
backups, exports) are not here: they need the node service."""

from __future__ import annotations

import grpc
import pytest

from spcs.common import errors
from spcs.demo.stack import TEMPLATE
from spcs.management.copies import COPIES
from spcs.management.state import PoolRecord
from spcs.storpool.records import StorPoolSnapshot
from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.domain.conftest import (
    MIB,
    OTHER_TEMPLATE,
    SPARE_TEMPLATE,
    Env,
    code_of,
    data_object,
    new_id,
    new_volume_object,
    secondary,
    snapshot_object,
    volume_object,
)

pytestmark = pytest.mark.fast


def _snapshot_with_data(env: Env, size: int = 8 * MIB, data: int = MIB) -> types_pb2.Snapshot:
    volume = env.create_volume(size)
    env.sp.write(env.volume(volume.path).name, data)
    return env.take_snapshot(volume)


def _cached_template(env: Env, data: int = 2 * MIB) -> tuple[str, StorPoolSnapshot]:
    """A template cached on the pool (as a template made from a volume leaves it)."""
    uuid = new_id("tmpl")
    volume = env.create_volume(16 * MIB)
    env.sp.write(env.volume(volume.path).name, data)
    pool = env.domain.pools.get(env.pool_uuid)
    snap, _ = env.domain.templates.cache_from_volume(pool, env.volume(volume.path), uuid)
    return uuid, snap


def _result_volume(result: driver_pb2.CopyDataResult) -> types_pb2.Volume:
    assert result.result.WhichOneof("object") == "volume"
    return result.result.volume


# ---- snapshot → volume ------------------------------------------------------------------------


def test_a_volume_from_a_snapshot_is_a_clone(env: Env):
    snapshot = _snapshot_with_data(env)
    destination = new_volume_object(env.pool_uuid, 8 * MIB, max_iops=200)
    env.sp.calls.clear()
    result = env.copied(env.copy_request(snapshot_object(snapshot, env.pool_uuid), destination))
    assert (result.kind, result.bytes_written) == ("snapshot-to-volume", 0)
    made = _result_volume(result)
    clone = env.volume(made.path)
    assert clone.name == f"cs-vol-{destination.volume.uuid}"
    assert (clone.parent, clone.template, clone.size, clone.iops) == (
        env.snapshot(snapshot.path).name,
        TEMPLATE,
        8 * MIB,
        200,
    )
    assert clone.tags == {"uuid": destination.volume.uuid, "cs": "volume"}
    assert env.sp.volumes_space()[clone.name] == (8 * MIB, MIB)  # the snapshot's data, no copy
    assert env.sp.calls["VolumeCreate"] == 1 and "VolumesReassignWait" not in env.sp.calls
    assert env.domain.locks.held() == {}


def test_a_clone_is_at_least_as_big_as_its_snapshot(env: Env):
    snapshot = _snapshot_with_data(env, size=16 * MIB)
    destination = new_volume_object(env.pool_uuid, 4 * MIB)
    made = _result_volume(
        env.copied(env.copy_request(snapshot_object(snapshot, env.pool_uuid), destination))
    )
    assert env.volume(made.path).size == 16 * MIB


def test_a_replayed_copy_is_the_same_operation_and_the_same_volume(env: Env):
    snapshot = _snapshot_with_data(env)
    request = env.copy_request(
        snapshot_object(snapshot, env.pool_uuid), new_volume_object(env.pool_uuid)
    )
    first = env.copied(request)
    assert env.copied(request) == first
    other = env.copy_request(
        snapshot_object(snapshot, env.pool_uuid),
        new_volume_object(env.pool_uuid, 16 * MIB),
        operation_id=request.operation_id,
    )
    with pytest.raises(errors.AlreadyExists, match=request.operation_id):
        env.domain.copies.start(other)
    # another operation for the same destination uuid: the volume that exists, not a second one
    again = env.copy_request(request.source, request.destination)
    assert _result_volume(env.copied(again)).path == _result_volume(first).path
    assert len(env.sp.volumes()) == 2  # the source volume and the clone


def test_a_copy_from_a_missing_snapshot_fails_the_call_and_starts_no_job(env: Env):
    source = data_object("snapshot", env.primary(), path="/dev/storpool-byid/emu.a.zz")
    with pytest.raises(errors.NotFound):
        env.domain.copies.start(env.copy_request(source, new_volume_object(env.pool_uuid)))
    assert env.domain.registry.list("", 0, "")[0] == []
    assert env.sp.volumes() == []


def test_a_clone_refused_for_space_fails_the_job_and_makes_nothing(env: Env):
    snapshot = _snapshot_with_data(env)
    before = env.storpool_names()
    env.sp.fail_next("VolumeCreate", "insufficientResources")
    done = env.run_copy(
        env.copy_request(snapshot_object(snapshot, env.pool_uuid), new_volume_object(env.pool_uuid))
    )
    assert code_of(done) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "insufficientResources" in done.error.message
    assert env.storpool_names() == before
    assert env.domain.locks.held() == {}


def test_a_clone_onto_a_pool_in_maintenance_fails_the_job(env: Env):
    snapshot = _snapshot_with_data(env)
    env.domain.pools.change_state(env.pool_uuid, lifecycle_pb2.POOL_STATE_MAINTENANCE)
    done = env.run_copy(
        env.copy_request(snapshot_object(snapshot, env.pool_uuid), new_volume_object(env.pool_uuid))
    )
    assert code_of(done) == grpc.StatusCode.FAILED_PRECONDITION
    assert "Maintenance" in done.error.message
    assert len(env.sp.volumes()) == 1


# ---- template → volume, template → primary ------------------------------------------------------


def test_a_volume_from_a_cached_template_by_path_is_a_clone(env: Env):
    uuid, cache = _cached_template(env)
    source = data_object(
        "template", env.primary(), uuid=uuid, path=f"/dev/storpool-byid/{cache.global_id}"
    )
    destination = new_volume_object(env.pool_uuid, 32 * MIB)
    result = env.copied(env.copy_request(source, destination))
    assert result.kind == "template-to-volume"
    clone = env.volume(_result_volume(result).path)
    assert (clone.parent, clone.size) == (cache.name, 32 * MIB)
    assert env.sp.volumes_space()[clone.name] == (32 * MIB, 2 * MIB)


def test_a_volume_from_a_cached_template_by_uuid_is_a_clone(env: Env):
    uuid, cache = _cached_template(env)
    source = data_object("template", env.primary(), uuid=uuid)
    clone = env.volume(
        _result_volume(env.copied(env.copy_request(source, new_volume_object(env.pool_uuid)))).path
    )
    assert clone.parent == cache.name
    assert env.domain.locks.held() == {}  # the cache's hold taken in the job is released


def test_a_volume_from_a_template_not_cached_and_not_on_secondary_fails(env: Env):
    source = data_object("template", env.primary(), uuid=new_id("tmpl"))
    before = env.storpool_names()
    done = env.run_copy(env.copy_request(source, new_volume_object(env.pool_uuid)))
    assert code_of(done) == grpc.StatusCode.NOT_FOUND
    assert "not cached" in done.error.message
    assert env.storpool_names() == before


def test_a_volume_from_a_missing_cached_template_path_fails_the_call(env: Env):
    source = data_object("template", env.primary(), path="/dev/storpool-byid/emu.a.zz")
    with pytest.raises(errors.NotFound, match="cached template"):
        env.domain.copies.start(env.copy_request(source, new_volume_object(env.pool_uuid)))
    assert env.domain.registry.list("", 0, "")[0] == []


def test_a_template_already_cached_goes_to_primary_without_a_download(env: Env):
    uuid, cache = _cached_template(env)
    source = data_object("template", secondary(), uuid=uuid, path="template/tmpl/2/201")
    destination = data_object("template", env.primary())
    env.sp.calls.clear()
    result = env.copied(env.copy_request(source, destination))
    template = result.result.template
    assert (result.kind, template.uuid, template.global_id, template.size_bytes) == (
        "template-to-primary",
        uuid,
        cache.global_id,
        16 * MIB,
    )
    assert template.path == f"/dev/storpool-byid/{cache.global_id}"
    assert "VolumeCreate" not in env.sp.calls  # no download volume


# ---- volume → another pool, snapshots kept on primary -------------------------------------------


def test_a_stopped_vms_volume_copied_to_another_pool(env: Env):
    other = env.add_pool(OTHER_TEMPLATE)
    volume = env.create_volume(8 * MIB, max_iops=100)
    env.sp.write(env.volume(volume.path).name, MIB)
    destination = data_object("volume", env.primary(other.uuid), uuid=volume.uuid)
    result = env.copied(env.copy_request(volume_object(volume, env.pool_uuid), destination))
    moved = _result_volume(result)
    copy = env.volume(moved.path)
    assert result.kind == "volume-to-pool"
    assert (copy.name, copy.template, copy.iops) == (
        f"cs-vol-{volume.uuid}-on-{other.uuid}",
        OTHER_TEMPLATE,
        100,
    )
    assert env.sp.volumes_space()[copy.name] == (8 * MIB, MIB)
    assert moved.store.primary.pool_uuid == other.uuid
    assert env.volume(volume.path).template == TEMPLATE


def test_a_running_vms_volume_moved_to_another_pool_in_place(env: Env):
    other = env.add_pool(OTHER_TEMPLATE)
    volume = env.create_volume()
    destination = data_object("volume", env.primary(other.uuid), uuid=volume.uuid)
    request = env.copy_request(volume_object(volume, env.pool_uuid), destination, vm_running=True)
    moved = _result_volume(env.copied(request))
    assert moved.path == volume.path
    assert [v.template for v in env.sp.volumes()] == [OTHER_TEMPLATE]


def test_a_volume_to_a_pool_on_another_endpoint_fails_the_job(env: Env):
    far = env.add_pool(SPARE_TEMPLATE, host="sp2.test")
    volume = env.create_volume()
    destination = data_object("volume", env.primary(far.uuid), uuid=volume.uuid)
    done = env.run_copy(env.copy_request(volume_object(volume, env.pool_uuid), destination))
    assert code_of(done) == grpc.StatusCode.FAILED_PRECONDITION
    assert len(env.sp.volumes()) == 1


def test_a_backup_on_a_pool_that_keeps_snapshots_on_primary_is_the_snapshot(bare: Env):
    bare.pool = bare.domain.pools.initialize(
        bare.initialize_request(TEMPLATE, details={"sp.bypass.secondary.storage": "true"})
    )
    bare.domain.pools.attach_zone(bare.pool_uuid, "zone-1", "KVM")
    snapshot = _snapshot_with_data(bare)
    destination = data_object("snapshot", secondary())  # no path: no file is written
    result = bare.copied(bare.copy_request(snapshot_object(snapshot, bare.pool_uuid), destination))
    kept = result.result.snapshot
    assert (result.kind, kept.path, kept.uuid) == (
        "snapshot-to-secondary",
        snapshot.path,
        snapshot.uuid,
    )
    assert not bare.snapshot(snapshot.path).deleted


# ---- CanCopy ------------------------------------------------------------------------------------


def _can_copy(env: Env, source, destination) -> driver_pb2.CanCopyResponse:
    return env.domain.copies.can_copy(
        driver_pb2.CanCopyRequest(source=source, destination=destination)
    )


@pytest.mark.parametrize(
    ("key", "kind"),
    [pytest.param(k, r.kind, id="-".join(k)) for k, r in COPIES.items()],
)
def test_can_copy_answers_true_for_each_handled_combination(env: Env, key, kind: str):
    other: PoolRecord = env.add_pool(OTHER_TEMPLATE)
    env.sp.calls.clear()
    s_kind, s_store, d_kind, d_store = key
    pools = iter((env.pool_uuid, other.uuid))
    url = types_pb2.DirectDownloadSource(url="https://images.example.com/t.qcow2")
    stores = {
        "secondary": secondary,
        "direct_download": lambda: types_pb2.DataStore(direct_download=url),
    }

    def store(where: str) -> types_pb2.DataStore:
        return stores[where]() if where in stores else env.primary(next(pools))

    answer = _can_copy(
        env, data_object(s_kind, store(s_store)), data_object(d_kind, store(d_store))
    )
    assert (answer.can_copy, answer.reason) == (True, kind)
    assert env.sp.calls == {}  # decided without asking StorPool


def test_can_copy_answers_false_for_the_rest(env: Env):
    volume = data_object("volume", env.primary())
    on_secondary = data_object("volume", secondary())
    template = data_object("template", secondary())
    same_pool = _can_copy(env, volume, volume)
    assert not same_pool.can_copy
    unsupported = _can_copy(env, on_secondary, template)
    assert not unsupported.can_copy and "not handled" in unsupported.reason
    unknown = _can_copy(env, template, data_object("volume", env.primary("pool-none")))
    assert not unknown.can_copy and "pool-none" in unknown.reason
    refused = env.copy_request(on_secondary, template)
    with pytest.raises(errors.InvalidArgument, match="CanCopy answers false"):
        env.domain.copies.start(refused)
