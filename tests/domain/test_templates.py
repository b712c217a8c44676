"""The template cache (spcs.management.templates) in-process: cache snapshots made from a volume
and from a snapshot, finding the Java plugin's, dropping one and all of a pool's; checked
against the MemoryStorPool and the state store's cache entries."""

from __future__ import annotations

import pytest

from spcs.common import errors, holds
from spcs.demo.stack import TEMPLATE
from spcs.management.state import CacheEntry, PoolRecord
from spcs.storpool.records import StorPoolSnapshot
from spcs.v1 import types_pb2
from tests.domain.conftest import MIB, OTHER_TEMPLATE, Env, new_id, ref_of

pytestmark = pytest.mark.fast


def _pool(env: Env) -> PoolRecord:
    return env.domain.pools.get(env.pool_uuid)


def _cache_volume(env: Env, template_uuid: str, size: int = 8 * MIB, data: int = 0):
    volume = env.create_volume(size)
    if data:
        env.sp.write(env.volume(volume.path).name, data)
    return env.domain.templates.cache_from_volume(
        _pool(env), env.volume(volume.path), template_uuid
    )


def _clone_used(env: Env, snap: StorPoolSnapshot) -> int:
    """The allocated bytes of a fresh clone of `snap` (what data the snapshot carries)."""
    name = new_id("probe")
    env.sp.volume_create(name=name, parent=snap.ref)
    used = env.sp.volumes_space()[name][1]
    env.sp.volume_delete(name)
    return used


def test_cache_from_a_volume_is_a_named_tagged_snapshot_and_a_store_entry(env: Env):
    tmpl = new_id("tmpl")
    snap, created = _cache_volume(env, tmpl, data=MIB)
    assert created
    assert snap.name == f"cs-tmpl-{tmpl}-{env.pool_uuid}"
    assert (snap.template, snap.size) == (TEMPLATE, 8 * MIB)
    assert snap.tags == {"uuid": tmpl, "cs": "template", "vc-policy": "no"}
    assert env.store.cache_entries(env.pool_uuid) == [
        CacheEntry(tmpl, snap.name, snap.global_id, 8 * MIB)
    ]
    assert _clone_used(env, snap) == MIB


def test_cache_from_a_volume_again_is_the_same_snapshot(env: Env):
    tmpl = new_id("tmpl")
    volume = env.create_volume()
    obj = env.volume(volume.path)
    first, _ = env.domain.templates.cache_from_volume(_pool(env), obj, tmpl)
    again, created = env.domain.templates.cache_from_volume(_pool(env), obj, tmpl)
    assert (again.global_id, created) == (first.global_id, False)
    assert len(env.sp.snapshots()) == 1


def test_cache_from_a_snapshot_goes_through_a_clone_it_removes(env: Env):
    volume = env.create_volume(8 * MIB)
    env.sp.write(env.volume(volume.path).name, 2 * MIB)
    source = env.snapshot(env.take_snapshot(volume).path)
    tmpl = new_id("tmpl")
    snap, created = env.in_job(
        lambda ctx: env.domain.templates.cache_from_snapshot(ctx, _pool(env), source, tmpl)
    )
    assert created and snap.name == f"cs-tmpl-{tmpl}-{env.pool_uuid}"
    assert [v.name for v in env.sp.volumes()] == [f"cs-vol-{volume.uuid}"]  # no cs-tmpldl-
    assert [e.global_id for e in env.store.cache_entries(env.pool_uuid)] == [snap.global_id]
    assert _clone_used(env, snap) == 2 * MIB


def test_cache_from_a_snapshot_of_a_cached_template_is_a_hit(env: Env):
    tmpl = new_id("tmpl")
    cached, _ = _cache_volume(env, tmpl)
    source = env.snapshot(env.take_snapshot(env.create_volume()).path)
    env.sp.calls.clear()
    snap, created = env.in_job(
        lambda ctx: env.domain.templates.cache_from_snapshot(ctx, _pool(env), source, tmpl)
    )
    assert (snap.global_id, created) == (cached.global_id, False)
    assert "VolumeCreate" not in env.sp.calls and "VolumeSnapshot" not in env.sp.calls


def test_a_failed_cache_from_a_snapshot_leaves_no_clone_and_no_entry(env: Env):
    volume = env.create_volume()
    source = env.snapshot(env.take_snapshot(volume).path)
    before = env.storpool_names()
    env.sp.fail_next("VolumeSnapshot", "insufficientResources")
    with pytest.raises(errors.ResourceExhausted):
        env.in_job(
            lambda ctx: env.domain.templates.cache_from_snapshot(
                ctx, _pool(env), source, new_id("tmpl")
            )
        )
    assert env.storpool_names() == before
    assert env.store.cache_entries(env.pool_uuid) == []


def test_a_java_plugin_cache_is_found_by_its_uuid_tag_in_the_pools_template(env: Env):
    tmpl, elsewhere = new_id("tmpl"), new_id("tmpl")
    mine = env.create_volume()
    other = env.create_volume(sp_template=OTHER_TEMPLATE)
    for volume, uuid in ((mine, tmpl), (other, elsewhere)):
        env.sp.snapshot_create(
            ref_of(volume.path),
            name=None,  # type: ignore[arg-type]  # the Java plugin's are anonymous
            tags={"uuid": uuid, "cs": "template"},
        )
    hit = env.domain.templates.cached(_pool(env), tmpl)
    assert hit is not None and hit.anonymous and hit.tags["uuid"] == tmpl
    assert env.store.cache_entries(env.pool_uuid) == [
        CacheEntry(tmpl, hit.name, hit.global_id, hit.size)
    ]
    assert env.domain.templates.cached(_pool(env), elsewhere) is None  # another template


def test_drop_by_uuid_deletes_the_snapshot_and_the_entry(env: Env):
    tmpl = new_id("tmpl")
    snap, _ = _cache_volume(env, tmpl)
    assert env.domain.templates.drop(_pool(env), types_pb2.Template(uuid=tmpl))
    assert env.sp.snapshot_or_none(snap.ref) is None
    assert env.store.cache_entries(env.pool_uuid) == []
    assert not env.domain.templates.drop(_pool(env), types_pb2.Template(uuid=tmpl))


def test_drop_by_path(env: Env):
    snap, _ = _cache_volume(env, new_id("tmpl"))
    path = f"/dev/storpool-byid/{snap.global_id}"
    assert env.domain.templates.drop(_pool(env), types_pb2.Template(path=path))
    assert env.sp.snapshot_or_none(snap.ref) is None


def test_drop_of_a_cache_with_clones_counts_once(env: Env):
    tmpl = new_id("tmpl")
    snap, _ = _cache_volume(env, tmpl)
    env.sp.volume_create(name=new_id("clone"), parent=snap.ref)
    assert env.domain.templates.drop(_pool(env), types_pb2.Template(uuid=tmpl))
    assert env.sp.snapshot(snap.ref).deleted  # kept by StorPool for its clone
    assert env.store.cache_entries(env.pool_uuid) == []
    assert not env.domain.templates.drop(_pool(env), types_pb2.Template(uuid=tmpl))


def test_drop_while_a_copy_reads_the_cache_is_aborted(env: Env):
    tmpl = new_id("tmpl")
    snap, _ = _cache_volume(env, tmpl)
    reader = holds.holds("template-to-volume", source=holds.storpool_object(snap.global_id))
    release = env.domain.locks.acquire(reader, "template-to-volume vol-x (operations/op-1)")
    try:
        with pytest.raises(errors.Conflict, match="template-to-volume vol-x"):
            env.domain.templates.drop(_pool(env), types_pb2.Template(uuid=tmpl))
    finally:
        release()
    assert env.sp.snapshot_or_none(snap.ref) is not None
    assert len(env.store.cache_entries(env.pool_uuid)) == 1


def test_drop_all_removes_only_this_pools_caches(env: Env):
    other = env.add_pool(OTHER_TEMPLATE)
    mine = [_cache_volume(env, new_id("tmpl"))[0] for _ in range(2)]
    theirs, _ = env.domain.templates.cache_from_volume(
        other, env.volume(env.create_volume(pool=other.uuid).path), new_id("tmpl")
    )
    assert env.domain.templates.drop_all(_pool(env)) == 2
    assert all(env.sp.snapshot_or_none(s.ref) is None for s in mine)
    assert env.sp.snapshot_or_none(theirs.ref) is not None
    assert env.store.cache_entries(env.pool_uuid) == []
    assert len(env.store.cache_entries(other.uuid)) == 1


def test_caching_a_template_again_after_a_drop_that_left_clones(env: Env):
    tmpl = new_id("tmpl")
    volume = env.create_volume()
    obj = env.volume(volume.path)
    first, _ = env.domain.templates.cache_from_volume(_pool(env), obj, tmpl)
    env.sp.volume_create(name=new_id("deployed"), parent=first.ref)  # a VM from the template
    assert env.domain.templates.drop(_pool(env), types_pb2.Template(uuid=tmpl))  # template GC
    again, _ = env.domain.templates.cache_from_volume(_pool(env), obj, tmpl)
    assert not again.deleted
    assert env.domain.templates.cached(_pool(env), tmpl) is not None
