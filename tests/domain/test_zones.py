"""CopySnapshot in-process: a snapshot copied to a pool of another StorPool location (two
in-memory StorPools on one location registry; the transfer itself is the emulator's, tested in
tests/management/test_zone_copy.py)."""

from __future__ import annotations

import grpc
import pytest

from spcs.management import recovery
from spcs.management.state import PoolRecord
from spcs.storpool import names
from spcs.storpool.memory import MemoryStorPool
from spcs.v1 import strategies_pb2, types_pb2
from tests.domain.conftest import CLIENTS, MIB, TEMPLATE, TEMPLATES, Env, code_of, new_id

ZONE2_HOST = "sp2.test"


@pytest.fixture
def sp2(env: Env) -> MemoryStorPool:
    """StorPool of the second zone: cluster zone2.a, in location "zone2"."""
    cluster = MemoryStorPool(
        templates=TEMPLATES,
        clients=CLIENTS,
        cluster_id="zone2.a",
        locations=env.sp.location_registry,
    )
    env.clusters[ZONE2_HOST] = cluster
    return cluster


@pytest.fixture
def pool2(env: Env, sp2: MemoryStorPool) -> PoolRecord:
    return env.add_pool(TEMPLATE, host=ZONE2_HOST)


def snapshot_with_data(env: Env, nbytes: int = 3 * MIB) -> types_pb2.Snapshot:
    volume = env.create_volume(16 * MIB)
    env.sp.write(names.api_ref(volume.path), nbytes)
    return env.take_snapshot(volume)


def copy_request(
    env: Env, snap: types_pb2.Snapshot, pool_uuid: str, operation_id: str = ""
) -> strategies_pb2.CopySnapshotRequest:
    return strategies_pb2.CopySnapshotRequest(
        operation_id=operation_id or new_id("op"),
        snapshot=types_pb2.Snapshot(uuid=snap.uuid, path=snap.path),
        pool=env.ref(),
        destination_pool=env.ref(pool_uuid),
    )


def copy(
    env: Env, request: strategies_pb2.CopySnapshotRequest
) -> strategies_pb2.CopySnapshotResult:
    done = env.wait(env.domain.zones.start(request).name)
    assert not done.HasField("error"), done.error
    result = strategies_pb2.CopySnapshotResult()
    assert done.response.Unpack(result)
    return result


def test_a_snapshot_becomes_a_snapshot_of_the_other_zones_pool(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    result = copy(env, copy_request(env, snap, pool2.uuid))
    assert result.source_location == "emu" and result.destination_location == "zone2"
    assert result.snapshot.path == snap.path  # StorPool keeps the global id
    assert result.snapshot.store.primary.pool_uuid == pool2.uuid
    assert result.snapshot.uuid == snap.uuid and result.snapshot.size_bytes == 16 * MIB
    there = sp2.snapshot(names.api_ref(snap.path))
    assert there.tags == {"uuid": snap.uuid, "cs": names.CS_SNAPSHOT}  # no filling tag left
    assert there.template == TEMPLATE and result.bytes_stored == 3 * MIB
    # the export is gone: the source is deleted without unexporting it first
    assert env.sp.snapshot_delete(names.api_ref(snap.path))
    # the destination had no volume to tell its cluster: a probe volume did, and went
    assert sp2.volumes() == [] and sp2.calls["VolumeCreate"] == 1


def test_the_same_operation_id_runs_once_and_a_new_one_adopts_the_finished_copy(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    request = copy_request(env, snap, pool2.uuid, "op-zone-once")
    first = copy(env, request)
    assert env.domain.zones.start(request).name == "operations/op-zone-once"
    assert sp2.calls["SnapshotFromRemote"] == 1
    again = copy(env, copy_request(env, snap, pool2.uuid))
    assert again.snapshot == first.snapshot
    assert sp2.calls["SnapshotFromRemote"] == 1  # the copy there was followed, not made again


def test_a_failed_copy_removes_the_copy_it_made_and_the_export(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    sp2.fail_next("SnapshotReconcile", "invalidParam", desc="the link is down")
    done = env.wait(env.domain.zones.start(copy_request(env, snap, pool2.uuid)).name)
    assert code_of(done) == grpc.StatusCode.INVALID_ARGUMENT
    assert "the link is down" in done.error.message
    assert sp2.snapshot_or_none(names.api_ref(snap.path)) is None
    assert env.sp.snapshot_delete(names.api_ref(snap.path))  # unexported: deletable
    # and a retry after the failure succeeds
    snap = snapshot_with_data(env)
    assert copy(env, copy_request(env, snap, pool2.uuid)).snapshot.path == snap.path


def test_a_copy_that_is_not_ours_is_never_removed(env: Env, sp2: MemoryStorPool, pool2: PoolRecord):
    snap = snapshot_with_data(env)
    copy(env, copy_request(env, snap, pool2.uuid))
    sp2.fail_next("SnapshotReconcile", "invalidParam", desc="refused")
    done = env.wait(env.domain.zones.start(copy_request(env, snap, pool2.uuid)).name)
    assert code_of(done) == grpc.StatusCode.INVALID_ARGUMENT
    assert sp2.snapshot(names.api_ref(snap.path)).tags["uuid"] == snap.uuid


def test_a_destination_holding_that_snapshot_for_another_uuid_is_refused(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    copy(env, copy_request(env, snap, pool2.uuid))
    sp2.snapshot_update(names.api_ref(snap.path), tags={"uuid": "someone-else"})
    done = env.wait(env.domain.zones.start(copy_request(env, snap, pool2.uuid)).name)
    assert code_of(done) == grpc.StatusCode.FAILED_PRECONDITION
    assert "someone-else" in done.error.message
    assert sp2.snapshot(names.api_ref(snap.path)).tags["uuid"] == "someone-else"


def test_pools_in_one_location_need_no_copy(env: Env):
    other = env.add_pool(TEMPLATE, host="sp3.test")  # another endpoint, the same cluster
    snap = snapshot_with_data(env)
    done = env.wait(env.domain.zones.start(copy_request(env, snap, other.uuid)).name)
    assert code_of(done) == grpc.StatusCode.FAILED_PRECONDITION
    assert "both in StorPool location emu" in done.error.message


def test_the_pool_detail_names_the_location(env: Env, sp2: MemoryStorPool):
    pools = env.domain.pools
    request = env.initialize_request(TEMPLATE, host=ZONE2_HOST)
    request.details["sp.cluster.location"] = "nowhere"
    pool2 = pools.attach_zone(pools.initialize(request).uuid, request.zone_id, "KVM")
    snap = snapshot_with_data(env)
    done = env.wait(env.domain.zones.start(copy_request(env, snap, pool2.uuid)).name)
    assert code_of(done) == grpc.StatusCode.FAILED_PRECONDITION
    assert "sp.cluster.location=nowhere" in done.error.message and "zone2" in done.error.message
    assert sp2.calls["VolumeCreate"] == 0  # no probe: the detail decides


def test_bad_requests_fail_the_call(env: Env, pool2: PoolRecord):
    snap = snapshot_with_data(env)
    with pytest.raises(Exception, match="own pool"):
        env.domain.zones.start(copy_request(env, snap, env.pool_uuid))
    missing = types_pb2.Snapshot(uuid="s-1", path="/dev/storpool-byid/emu.a.zzz")
    with pytest.raises(Exception, match="does not exist"):
        env.domain.zones.start(copy_request(env, missing, pool2.uuid))


def test_delete_needs_the_pool_once_zones_hold_copies(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    copy(env, copy_request(env, snap, pool2.uuid))
    ref = types_pb2.Snapshot(uuid=snap.uuid, path=snap.path)
    with pytest.raises(Exception, match="name the pool"):
        env.domain.snapshots.delete(ref)
    assert env.domain.snapshots.delete(ref, pool2.uuid)
    assert sp2.snapshot_or_none(names.api_ref(snap.path)) is None
    assert env.sp.snapshot_or_none(names.api_ref(snap.path)) is not None


def test_delete_unexports_a_snapshot_exported_to_another_location(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    env.sp.snapshot_export(names.api_ref(snap.path), "zone2")  # e.g. a copy that died
    assert env.domain.snapshots.delete(types_pb2.Snapshot(path=snap.path), env.pool_uuid)
    assert env.sp.snapshot_or_none(names.api_ref(snap.path)) is None


def test_copy_is_claimed_for_snapshots_storpool_has(env: Env):
    snap = snapshot_with_data(env)
    answer = env.domain.snapshots.can_handle(
        strategies_pb2.CanHandleSnapshotRequest(
            snapshot=types_pb2.Snapshot(path=snap.path),
            operation=strategies_pb2.SNAPSHOT_OPERATION_COPY,
        )
    )
    assert answer.priority == strategies_pb2.STRATEGY_PRIORITY_HIGHEST


def test_the_sweep_removes_a_copy_whose_operation_died(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    ref = names.api_ref(snap.path)
    env.sp.snapshot_export(ref, "zone2")
    sp2.snapshot_from_remote(
        "emu",
        ref.removeprefix("~"),
        template=TEMPLATE,
        tags={"uuid": snap.uuid, "cs": "snapshot", names.FILLING_TAG: "op-dead"},
    )
    assert recovery.sweep(env.domain.pools, lambda op: op != "op-dead") == 1
    assert sp2.snapshot_or_none(ref) is None
    assert env.sp.snapshot_or_none(ref) is not None  # the source is the caller's


def test_a_copy_request_that_fails_takes_the_export_back(
    env: Env, sp2: MemoryStorPool, pool2: PoolRecord
):
    snap = snapshot_with_data(env)
    sp2.fail_next("SnapshotFromRemote", "insufficientResources", desc="zone 2 is full")
    done = env.wait(env.domain.zones.start(copy_request(env, snap, pool2.uuid)).name)
    assert code_of(done) == grpc.StatusCode.RESOURCE_EXHAUSTED and "full" in done.error.message
    assert sp2.snapshot_or_none(names.api_ref(snap.path)) is None
    assert env.sp.snapshot_delete(names.api_ref(snap.path))  # not exported any more
