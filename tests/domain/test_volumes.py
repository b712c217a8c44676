"""Volumes (spcs.management.volumes) in-process: create, replay, delete, resize, revert, offering,
VM info and tags, stats from the VolumesSpace cache, migration. Assertions read StorPool's state
back from the MemoryStorPool, not only the replies."""

from __future__ import annotations

import pytest

from spcs.common import errors
from spcs.demo.stack import TEMPLATE
from spcs.storpool.records import StorPoolVolume
from spcs.v1 import driver_pb2, types_pb2
from tests.domain.conftest import (
    CLIENTS,
    MIB,
    MISSING_TEMPLATE,
    OTHER_TEMPLATE,
    SPARE_TEMPLATE,
    TEMPLATES,
    Env,
    new_id,
    ref_of,
)

pytestmark = pytest.mark.fast


def _attach_everywhere(env: Env, path: str) -> None:
    for client in CLIENTS:
        env.sp.attach(ref_of(path), client, read_only=False, snapshot=False, timeout=10)


def _attached(env: Env, gid: str) -> list[int]:
    return sorted(a.client for a in env.sp.attachments() if a.global_id == gid)


def _java_volume(env: Env, uuid: str, size: int = 4 * MIB) -> StorPoolVolume:
    """A volume as the Java plugin makes it: anonymous (~gid), found by its uuid/cs tags."""
    gid = env.sp.volume_create(
        name=None,  # type: ignore[arg-type]  # StorPool: no name = anonymous
        size=size,
        template=TEMPLATE,
        tags={"uuid": uuid, "cs": "volume"},
    )
    return env.sp.volume(f"~{gid}")


# ---- create -----------------------------------------------------------------------------------


def test_create_names_tags_and_limits(env: Env):
    uuid = new_id("vol")
    volume = env.create_volume(
        64 * MIB,
        uuid=uuid,
        vm_uuid="vm-1",
        device_id=1,
        max_iops=500,
        max_bandwidth_bytes_per_second=10 * MIB,
        vc_policy="daily",
    )
    # the reply is what StorPool was told: one create, no read-back
    assert env.sp.calls == {"VolumeCreate": 1}
    gid = volume.global_id
    assert volume.path == f"/dev/storpool-byid/{gid}"
    assert (volume.sp_template, volume.store.primary.pool_uuid) == (TEMPLATE, env.pool_uuid)
    assert volume.format == types_pb2.IMAGE_FORMAT_RAW
    obj = env.sp.volume(f"~{gid}")
    assert (obj.name, obj.size, obj.template, obj.iops, obj.bw) == (
        f"cs-vol-{uuid}",
        64 * MIB,
        TEMPLATE,
        500,
        10240,  # KB/s, rounded up
    )
    assert obj.tags == {
        "uuid": uuid,
        "cs": "volume",
        "cvm": "vm-1",
        "disk": "1",
        "vc-policy": "daily",
    }


def test_placement_the_offerings_template_and_the_qos_class_that_wins_over_it(env: Env):
    on_other = env.create_volume(sp_template=OTHER_TEMPLATE)
    assert env.volume(on_other.path).template == on_other.sp_template == OTHER_TEMPLATE
    with_qos = env.create_volume(sp_template=OTHER_TEMPLATE, qos_class="gold")
    obj = env.volume(with_qos.path)
    assert (obj.template, obj.tags["qc"], with_qos.sp_template) == (TEMPLATE, "gold", TEMPLATE)


def test_create_in_a_template_storpool_lacks_is_not_found_and_makes_nothing(env: Env):
    before = env.storpool_names()
    with pytest.raises(errors.NotFound, match=MISSING_TEMPLATE):
        env.create_volume(sp_template=MISSING_TEMPLATE)
    assert env.storpool_names() == before


def test_a_tag_value_storpool_cannot_hold_is_refused_before_any_call(env: Env):
    with pytest.raises(errors.InvalidArgument, match="vm_uuid"):
        env.create_volume(vm_uuid="has space")
    assert env.sp.calls == {}
    assert env.sp.volumes() == []


def test_replayed_create_with_the_same_arguments_is_the_same_volume(env: Env):
    uuid = new_id("vol")
    fields = {"uuid": uuid, "max_iops": 300, "max_bandwidth_bytes_per_second": MIB}
    first = env.create_volume(16 * MIB, **fields)
    again = env.create_volume(16 * MIB, **fields)
    assert again == first
    assert [v.name for v in env.sp.volumes()] == [f"cs-vol-{uuid}"]


def test_a_replay_compares_no_tags_and_applies_none(env: Env):
    volume = env.create_volume(uuid=new_id("vol"), vm_uuid="vm-a")
    env.create_volume(uuid=volume.uuid, vm_uuid="vm-b")
    assert env.volume(volume.path).tags["cvm"] == "vm-a"


@pytest.mark.parametrize(
    "changed",
    [
        {"size": 32 * MIB},
        {"size": 8 * MIB},
        {"max_iops": 900},
        {"max_iops": 0},
        {"max_bandwidth_bytes_per_second": 2 * MIB},
        {"sp_template": OTHER_TEMPLATE},
    ],
    ids=["bigger", "smaller", "other-iops", "no-iops", "other-bw", "other-template"],
)
def test_replayed_create_with_other_arguments_is_already_exists(env: Env, changed: dict):
    original = {"max_iops": 300, "max_bandwidth_bytes_per_second": MIB}
    volume = env.create_volume(16 * MIB, uuid=new_id("vol"), **original)
    asked = {**original, **changed}
    size = asked.pop("size", 16 * MIB)
    with pytest.raises(errors.AlreadyExists, match=volume.uuid):
        env.create_volume(size, uuid=volume.uuid, **asked)
    obj = env.volume(volume.path)
    assert (obj.size, obj.template, obj.iops, obj.bw) == (16 * MIB, TEMPLATE, 300, 1024)
    assert len(env.sp.volumes()) == 1


# ---- delete -----------------------------------------------------------------------------------


def test_delete_by_path_then_replay(env: Env):
    volume = env.create_volume()
    assert env.domain.volumes.delete(env.domain.pools.get(env.pool_uuid), volume)[0]
    assert env.sp.volume_or_none(f"~{volume.global_id}") is None
    assert not env.domain.volumes.delete(env.domain.pools.get(env.pool_uuid), volume)[0]


def test_delete_by_uuid(env: Env):
    volume = env.create_volume()
    pool = env.domain.pools.get(env.pool_uuid)
    assert env.domain.volumes.delete(pool, types_pb2.Volume(uuid=volume.uuid))[0]
    assert env.sp.volumes() == []


def test_delete_a_java_plugin_volume_found_by_its_uuid_tag(env: Env):
    uuid = new_id("vol")
    other = _java_volume(env, new_id("vol"))
    java = _java_volume(env, uuid)
    assert java.anonymous
    pool = env.domain.pools.get(env.pool_uuid)
    assert env.domain.volumes.delete(pool, types_pb2.Volume(uuid=uuid))[0]
    assert [v.global_id for v in env.sp.volumes()] == [other.global_id]


def test_delete_detaches_the_volume_from_every_host(env: Env):
    volume = env.create_volume()
    _attach_everywhere(env, volume.path)
    env.sp.mark_open(1, ref_of(volume.path))
    assert env.domain.volumes.delete(env.domain.pools.get(env.pool_uuid), volume)[0]
    assert env.sp.attachments() == [] and env.sp.volumes() == []


def test_delete_of_what_is_not_there_is_false(env: Env):
    pool = env.domain.pools.get(env.pool_uuid)
    assert not env.domain.volumes.delete(pool, types_pb2.Volume(uuid=new_id("never")))[0]
    assert not env.domain.volumes.delete(
        pool, types_pb2.Volume(path="/dev/storpool-byid/emu.a.zz")
    )[0]


# ---- resize -----------------------------------------------------------------------------------


def _resize(env: Env, volume: types_pb2.Volume, size: int, **fields) -> types_pb2.Volume:
    request_fields = {k: fields.pop(k) for k in ("shrink_ok", "host_id", "vm_name") if k in fields}
    return env.domain.volumes.resize(
        driver_pb2.ResizeVolumeRequest(
            pool=env.ref(),
            volume=types_pb2.Volume(path=volume.path, **fields),
            new_size_bytes=size,
            **request_fields,
        )
    )


def test_resize_grows_and_sets_or_clears_the_iops_limit(env: Env):
    volume = env.create_volume(32 * MIB, max_iops=100)
    grown = _resize(env, volume, 64 * MIB, max_iops=200)
    obj = env.volume(volume.path)
    assert (obj.size, obj.iops) == (64 * MIB, 200)
    assert (grown.size_bytes, grown.max_iops, grown.path) == (64 * MIB, 200, volume.path)
    _resize(env, volume, 64 * MIB)  # no max_iops: the limit is cleared, as CloudStack means it
    assert env.volume(volume.path).iops is None


def test_shrink_without_shrink_ok_is_out_of_range_and_changes_nothing(env: Env):
    volume = env.create_volume(32 * MIB, max_iops=100)
    env.sp.calls.clear()
    with pytest.raises(errors.OutOfRange, match="shrink_ok"):
        _resize(env, volume, 16 * MIB, max_iops=100)
    assert env.volume(volume.path).size == 32 * MIB
    assert "VolumeUpdate" not in env.sp.calls


def test_shrink_with_shrink_ok_drops_the_data_past_the_end(env: Env):
    volume = env.create_volume(32 * MIB)
    name = env.volume(volume.path).name
    env.sp.write(name, 24 * MIB)
    shrunk = _resize(env, volume, 16 * MIB, shrink_ok=True)
    assert shrunk.size_bytes == 16 * MIB
    assert env.sp.volumes_space()[name] == (16 * MIB, 16 * MIB)


def test_resize_with_a_qos_class_re_templates_and_tags(env: Env):
    volume = env.create_volume(sp_template=OTHER_TEMPLATE)
    resized = _resize(env, volume, 16 * MIB, qos_class="silver")
    obj = env.volume(volume.path)
    assert (obj.template, obj.tags["qc"]) == (TEMPLATE, "silver")
    assert resized.qos_class == "silver"


def test_live_resize_is_rolled_back_when_the_host_has_no_node(env: Env):
    volume = env.create_volume(16 * MIB, max_iops=100)
    with pytest.raises(errors.NotFound, match="rolled back to 16777216 bytes"):
        _resize(env, volume, 48 * MIB, max_iops=300, host_id="host-9", vm_name="i-2-3-VM")
    obj = env.volume(volume.path)
    assert (obj.size, obj.iops) == (16 * MIB, 100)


def test_resize_with_a_host_needs_the_vm_name(env: Env):
    volume = env.create_volume(16 * MIB)
    with pytest.raises(errors.InvalidArgument, match="vm_name"):
        _resize(env, volume, 32 * MIB, host_id="host-1")
    assert env.volume(volume.path).size == 16 * MIB


# ---- revert -----------------------------------------------------------------------------------


def _revert(env: Env, snapshot: types_pb2.Snapshot, volume: types_pb2.Volume, **fields):
    return env.domain.volumes.revert(
        driver_pb2.RevertSnapshotRequest(
            pool=env.ref(),
            snapshot=types_pb2.Snapshot(path=snapshot.path),
            volume=types_pb2.Volume(path=volume.path, **fields),
        )
    )


def test_revert_detaches_restores_data_and_applies_the_requested_limit(env: Env):
    volume = env.create_volume(16 * MIB, max_iops=700)
    name = env.volume(volume.path).name
    env.sp.write(name, 4 * MIB)
    snapshot = env.take_snapshot(volume)
    env.sp.write(name, 12 * MIB)
    env.sp.volume_update(name, iops=50)
    _attach_everywhere(env, volume.path)
    reverted = _revert(env, snapshot, volume, max_iops=700)
    obj = env.volume(volume.path)
    assert obj.parent == env.snapshot(snapshot.path).name
    assert (obj.size, obj.iops, reverted.max_iops) == (16 * MIB, 700, 700)
    assert env.sp.volumes_space()[name] == (16 * MIB, 4 * MIB)
    assert _attached(env, volume.global_id) == []


def test_revert_without_limits_re_applies_the_volumes_own(env: Env):
    volume = env.create_volume(16 * MIB, max_iops=300, max_bandwidth_bytes_per_second=MIB)
    snapshot = env.take_snapshot(volume)
    env.sp.calls.clear()
    _revert(env, snapshot, volume)
    obj = env.volume(volume.path)
    assert (obj.iops, obj.bw) == (300, 1024)
    assert env.sp.calls["VolumeRevert"] == 1 and env.sp.calls["VolumeUpdate"] == 1


def test_revert_to_a_missing_snapshot_changes_nothing(env: Env):
    volume = env.create_volume()
    _attach_everywhere(env, volume.path)
    missing = types_pb2.Snapshot(path="/dev/storpool-byid/emu.a.zz")
    with pytest.raises(errors.NotFound, match=r"emu\.a\.zz"):
        _revert(env, missing, volume)
    assert _attached(env, volume.global_id) == list(CLIENTS)


# ---- offering, VM info and tags, detach -----------------------------------------------------


def test_change_offering_sets_qos_class_and_limits(env: Env):
    volume = env.create_volume(max_iops=100, max_bandwidth_bytes_per_second=MIB)
    changed = env.domain.volumes.change_offering(
        env.pool_uuid, types_pb2.Volume(path=volume.path, max_iops=900, qos_class="silver")
    )
    obj = env.volume(volume.path)
    assert (obj.template, obj.tags["qc"], obj.iops, obj.bw) == (TEMPLATE, "silver", 900, None)
    assert (changed.max_iops, changed.qos_class) == (900, "silver")


def test_change_offering_moves_to_the_offerings_template(env: Env):
    volume = env.create_volume()
    env.domain.volumes.change_offering(
        env.pool_uuid,
        types_pb2.Volume(
            path=volume.path, sp_template=OTHER_TEMPLATE, max_bandwidth_bytes_per_second=2 * MIB
        ),
    )
    obj = env.volume(volume.path)
    assert (obj.template, obj.bw, obj.iops) == (OTHER_TEMPLATE, 2048, None)


def test_change_offering_to_a_missing_template_is_not_found(env: Env):
    volume = env.create_volume(max_iops=100)
    with pytest.raises(errors.NotFound):
        env.domain.volumes.change_offering(
            env.pool_uuid, types_pb2.Volume(path=volume.path, sp_template=MISSING_TEMPLATE)
        )
    assert (env.volume(volume.path).template, env.volume(volume.path).iops) == (TEMPLATE, 100)


def test_provide_vm_info_tags_the_volume(env: Env):
    volume = env.create_volume()
    env.domain.volumes.provide_vm_info(
        env.pool_uuid,
        types_pb2.Volume(path=volume.path, vm_uuid="vm-9", device_id=0, vc_policy="weekly"),
    )
    tags = env.volume(volume.path).tags
    assert tags == {
        "uuid": volume.uuid,
        "cs": "volume",
        "cvm": "vm-9",
        "disk": "0",
        "vc-policy": "weekly",
    }
    with pytest.raises(errors.InvalidArgument, match="vm_uuid"):
        env.domain.volumes.provide_vm_info(
            env.pool_uuid, types_pb2.Volume(path=volume.path, vm_uuid="a b")
        )
    assert env.volume(volume.path).tags == tags


def test_provide_vm_tags_sets_and_removes_vc_policy_only(env: Env):
    volumes = [env.create_volume(), env.create_volume()]
    paths = [v.path for v in volumes]

    def tag(value: str) -> int:
        return env.domain.volumes.provide_vm_tags(
            driver_pb2.ProvideVmTagsRequest(
                pool=env.ref(), vm_uuid="vm-1", volume_paths=paths, key="vc-policy", value=value
            )
        )

    assert tag("monthly") == 2
    assert [env.volume(p).tags.get("vc-policy") for p in paths] == ["monthly", "monthly"]
    assert tag("") == 2
    assert [env.volume(p).tags.get("vc-policy") for p in paths] == [None, None]
    with pytest.raises(errors.InvalidArgument, match="owner"):
        env.domain.volumes.provide_vm_tags(
            driver_pb2.ProvideVmTagsRequest(
                pool=env.ref(), vm_uuid="vm-1", volume_paths=paths, key="owner", value="x"
            )
        )
    assert [set(env.volume(p).tags) for p in paths] == [{"uuid", "cs"}] * 2


def test_provide_vm_tags_stops_at_a_missing_volume_after_updating_those_before(env: Env):
    first, last = env.create_volume(), env.create_volume()
    paths = [first.path, "/dev/storpool-byid/emu.a.zz", last.path]
    with pytest.raises(errors.NotFound):
        env.domain.volumes.provide_vm_tags(
            driver_pb2.ProvideVmTagsRequest(
                pool=env.ref(), vm_uuid="vm-1", volume_paths=paths, key="vc-policy", value="x"
            )
        )
    assert env.volume(first.path).tags["vc-policy"] == "x"
    assert "vc-policy" not in env.volume(last.path).tags


def test_detach_from_all_hosts_answers_the_clients_once(env: Env):
    volume = env.create_volume()
    _attach_everywhere(env, volume.path)
    assert env.domain.volumes.detach_all(env.pool_uuid, volume.path) == list(CLIENTS)
    assert _attached(env, volume.global_id) == []
    assert env.domain.volumes.detach_all(env.pool_uuid, volume.path) == []


# ---- stats (one VolumesSpace for many volumes) ------------------------------------------------


def test_a_stats_cycle_over_many_volumes_costs_one_volumes_space(env: Env):
    volumes = [env.create_volume((n + 1) * MIB) for n in range(6)]
    env.sp.write(env.volume(volumes[2].path).name, 5000)  # two 4 KiB blocks
    env.sp.calls.clear()
    stats = [env.domain.volumes.stats(env.pool_uuid, v.path) for v in volumes]
    assert stats[2] == (3 * MIB, 8192)
    assert [size for size, _ in stats] == [(n + 1) * MIB for n in range(6)]
    assert env.sp.calls == {"VolumesSpace": 1}


def test_stats_of_a_volume_newer_than_the_cache_cost_one_small_call(env: Env):
    old = env.create_volume()
    env.domain.volumes.stats(env.pool_uuid, old.path)
    new = env.create_volume(4 * MIB)
    env.sp.write(env.volume(new.path).name, 4096)
    env.sp.calls.clear()
    assert env.domain.volumes.stats(env.pool_uuid, new.path) == (4 * MIB, 0)
    assert env.domain.volumes.stats(env.pool_uuid, new.path) == (4 * MIB, 0)
    assert env.sp.calls == {"Volume": 1}


def test_the_stats_cache_follows_resizes_and_deletes_made_here(env: Env):
    volume = env.create_volume(8 * MIB)
    env.domain.volumes.stats(env.pool_uuid, volume.path)
    _resize(env, volume, 24 * MIB)
    assert env.domain.volumes.stats(env.pool_uuid, volume.path) == (24 * MIB, 0)
    env.domain.volumes.delete(env.domain.pools.get(env.pool_uuid), volume)
    env.sp.calls.clear()
    with pytest.raises(errors.NotFound):
        env.domain.volumes.stats(env.pool_uuid, volume.path)
    assert "VolumesSpace" not in env.sp.calls


def test_volumes_stats_answers_each_path_in_order_from_one_query(env: Env):
    volumes = [env.create_volume((n + 1) * MIB) for n in range(3)]
    paths = [volumes[2].path, "/dev/storpool-byid/emu.a.zz", volumes[0].path]
    env.sp.calls.clear()
    stats = env.domain.volumes.stats_many(env.pool_uuid, paths)
    assert [(s.volume_path, s.found, s.size_bytes) for s in stats] == [
        (paths[0], True, 3 * MIB),
        (paths[1], False, 0),
        (paths[2], True, MIB),
    ]
    assert env.sp.calls == {"VolumesSpace": 1}


def test_volumes_stats_without_paths_lists_the_pools_template_only(env: Env):
    mine = [env.create_volume(), env.create_volume()]
    env.create_volume(sp_template=OTHER_TEMPLATE)
    stats = env.domain.volumes.stats_many(env.pool_uuid, [])
    assert sorted(s.volume_path for s in stats) == sorted(v.path for v in mine)
    assert all(s.found for s in stats)


def test_volumes_stats_names_the_bad_path(env: Env):
    volume = env.create_volume()
    with pytest.raises(errors.InvalidArgument, match=r"volume_paths\[1\]"):
        env.domain.volumes.stats_many(env.pool_uuid, [volume.path, "/etc/passwd"])


def test_storage_stats_come_from_the_template_and_are_kept_on_the_pool(env: Env):
    volume = env.create_volume(16 * MIB)
    env.sp.write(env.volume(volume.path).name, 3 * MIB)
    capacity, used = env.domain.lifecycle.storage_stats(env.pool_uuid)
    assert (capacity, used) == (TEMPLATES[TEMPLATE], 3 * MIB)
    assert env.store.pool(env.pool_uuid).used_bytes == 3 * MIB


# ---- migration between pools of one endpoint ---------------------------------------------------


def test_migrate_a_stopped_vms_volume_copies_it_to_the_other_pool(env: Env):
    other = env.add_pool(OTHER_TEMPLATE)
    volume = env.create_volume(8 * MIB, max_iops=100, vm_uuid="vm-1")
    source = env.volume(volume.path)
    env.sp.write(source.name, MIB)
    moved = env.domain.volumes.migrate(
        env.pool_uuid, types_pb2.Volume(path=volume.path), other.uuid, vm_running=False
    )
    copy = env.volume(moved.path)
    assert copy.name == f"cs-vol-{volume.uuid}-on-{other.uuid}"
    assert (copy.template, copy.size, copy.iops, copy.tags) == (
        OTHER_TEMPLATE,
        8 * MIB,
        100,
        source.tags,
    )
    assert env.sp.volumes_space()[copy.name] == (8 * MIB, MIB)  # the data came along
    assert (moved.uuid, moved.store.primary.pool_uuid) == (volume.uuid, other.uuid)
    assert env.volume(volume.path).template == TEMPLATE  # CloudStack deletes the source
    again = env.domain.volumes.migrate(
        env.pool_uuid, types_pb2.Volume(path=volume.path), other.uuid, vm_running=False
    )
    assert again.path == moved.path
    assert len(env.sp.volumes()) == 2


def test_migrate_a_running_vms_volume_re_templates_it_in_place(env: Env):
    other = env.add_pool(OTHER_TEMPLATE)
    volume = env.create_volume()
    live = env.domain.volumes.migrate(
        env.pool_uuid, types_pb2.Volume(path=volume.path), other.uuid, vm_running=True
    )
    assert live.path == volume.path and live.sp_template == OTHER_TEMPLATE
    assert env.volume(volume.path).template == OTHER_TEMPLATE
    assert len(env.sp.volumes()) == 1


def test_migrate_to_a_pool_in_maintenance_is_refused(env: Env):
    other = env.add_pool(OTHER_TEMPLATE)
    env.domain.pools.change_state(other.uuid, 3)  # POOL_STATE_MAINTENANCE
    volume = env.create_volume()
    with pytest.raises(errors.FailedPrecondition, match="Maintenance"):
        env.domain.volumes.migrate(env.pool_uuid, volume, other.uuid, vm_running=False)
    assert [v.template for v in env.sp.volumes()] == [TEMPLATE]


def test_migrate_between_api_endpoints_is_refused(env: Env):
    far = env.add_pool(SPARE_TEMPLATE, host="sp2.test")
    volume = env.create_volume()
    with pytest.raises(errors.FailedPrecondition, match="different StorPool API endpoints"):
        env.domain.volumes.migrate(env.pool_uuid, volume, far.uuid, vm_running=False)
    assert len(env.sp.volumes()) == 1
