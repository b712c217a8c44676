"""Pool lifecycle (spcs.management.pools, .lifecycle) in-process: initialize and its replays,
states gating placement, UpdatePool, DeletePool; checked against the state store and the
MemoryStorPool."""

from __future__ import annotations

import pytest

from spcs.common import errors
from spcs.demo.stack import TEMPLATE
from spcs.storpool.memory import MemoryStorPool
from spcs.v1 import lifecycle_pb2, types_pb2
from tests.domain.conftest import (
    HOST,
    MISSING_TEMPLATE,
    OTHER_TEMPLATE,
    PORT,
    TOKEN,
    ZONE,
    Env,
    new_id,
    pool_url,
    ref_of,
)

pytestmark = pytest.mark.fast

INITIALIZED = lifecycle_pb2.POOL_STATE_INITIALIZED
UP = lifecycle_pb2.POOL_STATE_UP
MAINTENANCE = lifecycle_pb2.POOL_STATE_MAINTENANCE
DISABLED = lifecycle_pb2.POOL_STATE_DISABLED


# ---- initialize -------------------------------------------------------------------------------


def test_initialize_reads_the_template_and_keeps_the_pool(bare: Env):
    request = bare.initialize_request(TEMPLATE, capacity_iops=5000)
    pool = bare.domain.pools.initialize(request)
    assert (pool.state, pool.template, pool.conn.endpoint, pool.conn.form) == (
        INITIALIZED,
        TEMPLATE,
        f"{HOST}:{PORT}",
        "storpool-url",
    )
    assert (pool.tags, pool.capacity_iops, pool.hypervisor) == ([request.name], 5000, "KVM")
    assert bare.store.pool(request.pool_uuid) == pool
    assert bare.sp.calls == {"VolumeTemplateDescribe": 1}  # the template, read through its API
    assert bare.made == {(HOST, PORT, TOKEN): 1}


def test_initialize_replayed(bare: Env):
    request = bare.initialize_request(TEMPLATE)
    first = bare.domain.pools.initialize(request)
    assert bare.domain.pools.initialize(request) == first
    changed = lifecycle_pb2.InitializePoolRequest()
    changed.CopyFrom(request)
    changed.capacity_bytes *= 2
    with pytest.raises(errors.AlreadyExists, match=request.pool_uuid) as raised:
        bare.domain.pools.initialize(changed)
    assert TOKEN not in raised.value.message
    assert [p.uuid for p in bare.store.pools()] == [request.pool_uuid]


def test_one_template_on_one_endpoint_serves_one_pool(env: Env):
    with pytest.raises(errors.AlreadyExists, match=env.pool_uuid):
        env.add_pool(TEMPLATE)
    elsewhere = env.add_pool(TEMPLATE, host="sp2.test")  # the same name on another endpoint
    assert {p.uuid for p in env.store.pools()} == {env.pool_uuid, elsewhere.uuid}


def test_initialize_with_a_template_storpool_lacks_is_not_found(bare: Env):
    with pytest.raises(errors.NotFound, match=MISSING_TEMPLATE):
        bare.add_pool(MISSING_TEMPLATE, up=False)
    assert bare.store.pools() == []


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"scope": lifecycle_pb2.POOL_SCOPE_CLUSTER}, "zone-wide"),
        ({"hypervisor": "VMware"}, "KVM"),
        ({"url": "http://sp.test/x"}, "template name"),
        ({"url": "SP_API_HTTP=sp.test;SP_AUTH_TOKEN=t;SP_TEMPLATE=x"}, "host:port"),
        ({"url": f"storpool://{HOST}:{PORT}/{TEMPLATE}"}, "token"),
        ({"url": f"SP_API_HTTP={HOST}:{PORT};SP_TEMPLATE={TEMPLATE}"}, "SP_AUTH_TOKEN"),
        ({"url": TEMPLATE}, "SP_AUTH_TOKEN"),  # a bare template, and no local storpool.conf
        ({"url": pool_url("bad template!")}, "template"),
    ],
)
def test_initialize_refuses_bad_requests_before_asking_storpool(bare: Env, fields, words):
    with pytest.raises(errors.InvalidArgument, match=words) as raised:
        bare.domain.pools.initialize(bare.initialize_request(TEMPLATE, **fields))
    assert TOKEN not in raised.value.message
    assert bare.store.pools() == [] and bare.sp.calls == {}


def test_a_refused_token_is_permission_denied_without_the_token(bare: Env):
    bare.sp.fail_next("VolumeTemplateDescribe", "authFailed")
    with pytest.raises(errors.PermissionDenied, match="SP_AUTH_TOKEN") as raised:
        bare.add_pool(TEMPLATE, up=False)
    assert TOKEN not in raised.value.message
    assert bare.store.pools() == []


def test_the_token_never_leaves_in_a_reply(env: Env):
    message = env.domain.pools.get(env.pool_uuid).message()
    assert TOKEN not in str(message) and TOKEN not in repr(env.domain.pools.get(env.pool_uuid))
    assert message.api_endpoint == f"{HOST}:{PORT}"


# ---- states -------------------------------------------------------------------------------------


def test_attach_zone_brings_the_pool_up_once(bare: Env):
    pool = bare.add_pool(TEMPLATE, up=False)
    with pytest.raises(errors.InvalidArgument, match="zone_id"):
        bare.domain.pools.attach_zone(pool.uuid, "zone-9", "KVM")
    assert bare.domain.pools.attach_zone(pool.uuid, ZONE, "KVM").state == UP
    bare.domain.pools.change_state(pool.uuid, MAINTENANCE)
    assert bare.domain.pools.attach_zone(pool.uuid, ZONE, "").state == MAINTENANCE  # kept


def test_a_pool_not_attached_to_its_zone_takes_no_volumes(bare: Env):
    bare.pool = bare.add_pool(TEMPLATE, up=False)
    with pytest.raises(errors.FailedPrecondition, match="AttachZone"):
        bare.create_volume()
    with pytest.raises(errors.FailedPrecondition, match="AttachZone"):
        bare.domain.pools.change_state(bare.pool_uuid, MAINTENANCE)
    with pytest.raises(errors.FailedPrecondition, match="zone-wide"):
        bare.domain.pools.attach_cluster(bare.pool_uuid)
    assert bare.sp.volumes() == []


@pytest.mark.parametrize(("state", "name"), [(MAINTENANCE, "Maintenance"), (DISABLED, "Disabled")])
def test_maintenance_and_disabled_refuse_placement_but_keep_volumes_working(
    env: Env, state, name: str
):
    volume = env.create_volume()
    env.domain.pools.change_state(env.pool_uuid, state)
    with pytest.raises(errors.FailedPrecondition, match=name):
        env.create_volume()
    assert len(env.sp.volumes()) == 1
    # what exists keeps working: snapshots, resizes, stats, deletes
    env.take_snapshot(volume)
    assert env.domain.volumes.stats(env.pool_uuid, volume.path)[0] == volume.size_bytes
    assert env.domain.pools.change_state(env.pool_uuid, UP).state == UP
    assert env.create_volume().path


# ---- update -------------------------------------------------------------------------------------


def test_update_merges_details_and_sets_tags_and_capacity(bare: Env):
    request = bare.initialize_request(TEMPLATE, details={"a": "1", "b": "2"}, tags=["fast"])
    pool = bare.domain.pools.initialize(request)
    updated = bare.domain.pools.update(
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=pool.uuid, capacity_bytes=7 << 40, details={"a": "", "c": "3"}
        )
    )
    assert (updated.details, updated.tags, updated.capacity_bytes) == (
        {"b": "2", "c": "3"},
        ["fast"],
        7 << 40,
    )
    retagged = bare.domain.pools.update(
        lifecycle_pb2.UpdatePoolRequest(pool_uuid=pool.uuid, tags=["slow"], update_tags=True)
    )
    assert (retagged.tags, retagged.capacity_bytes) == (["slow"], 7 << 40)
    assert bare.store.pool(pool.uuid) == retagged


def test_update_with_a_new_token_uses_it_from_then_on(env: Env):
    env.domain.pools.update(
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=env.pool_uuid, url=pool_url(TEMPLATE, token="tok-new")
        )
    )
    assert env.store.pool(env.pool_uuid).conn.token == "tok-new"
    env.create_volume()
    assert env.made[HOST, PORT, "tok-new"] == 1


@pytest.mark.parametrize(
    ("url", "error", "words"),
    [
        (pool_url(OTHER_TEMPLATE), errors.InvalidArgument, "cannot change template"),
        (pool_url(TEMPLATE, host="sp3.test"), errors.NotFound, TEMPLATE),
    ],
    ids=["other-template", "template-missing-there"],
)
def test_update_to_a_url_that_does_not_serve_the_pool_changes_nothing(
    env: Env, url: str, error: type[errors.SpcsError], words: str
):
    env.clusters["sp3.test"] = MemoryStorPool(templates={OTHER_TEMPLATE: None})
    before = env.store.pool(env.pool_uuid)
    with pytest.raises(error, match=words):
        env.domain.pools.update(lifecycle_pb2.UpdatePoolRequest(pool_uuid=env.pool_uuid, url=url))
    assert env.store.pool(env.pool_uuid) == before


def test_update_with_a_refused_token_changes_nothing(env: Env):
    before = env.store.pool(env.pool_uuid)
    env.sp.fail_next("VolumeTemplateDescribe", "authFailed")
    with pytest.raises(errors.PermissionDenied):
        env.domain.pools.update(
            lifecycle_pb2.UpdatePoolRequest(
                pool_uuid=env.pool_uuid, url=pool_url(TEMPLATE, token="tok-bad")
            )
        )
    assert env.store.pool(env.pool_uuid) == before


# ---- delete -------------------------------------------------------------------------------------


def test_delete_removes_the_pool_and_its_template_caches(env: Env):
    volume = env.create_volume()
    pool = env.domain.pools.get(env.pool_uuid)
    for _ in range(2):
        env.domain.templates.cache_from_volume(pool, env.volume(volume.path), new_id("tmpl"))
    env.domain.volumes.delete(pool, volume)
    assert env.domain.lifecycle.delete(env.pool_uuid) == (True, 2)
    assert env.store.pool(env.pool_uuid) is None
    assert env.store.cache_entries(env.pool_uuid) == []
    assert env.storpool_names() == set()
    assert env.domain.lifecycle.delete(env.pool_uuid) == (False, 0)


def test_delete_is_refused_while_the_template_holds_data(env: Env):
    volume = env.create_volume()
    env.take_snapshot(volume)
    env.sp.volume_create(name="java-made", size=1 << 20, template=TEMPLATE)
    with pytest.raises(errors.FailedPrecondition, match=r"2 volume\(s\) and 1 snapshot\(s\)") as e:
        env.domain.lifecycle.delete(env.pool_uuid)
    assert f"cs-vol-{volume.uuid}" in e.value.message and "java-made" in e.value.message
    assert env.store.pool(env.pool_uuid) is not None


def test_delete_counts_neither_own_temporaries_nor_other_templates(env: Env):
    env.create_volume(sp_template=OTHER_TEMPLATE)
    env.sp.volume_create(
        name=f"cs-tmpldl-{new_id('t')}-{env.pool_uuid}", size=1 << 20, template=TEMPLATE
    )
    assert env.domain.lifecycle.delete(env.pool_uuid) == (True, 0)
    assert env.store.pool(env.pool_uuid) is None


def test_delete_removes_a_java_plugin_template_cache_it_used(env: Env):
    volume = env.create_volume()
    tmpl = new_id("tmpl")
    gid = env.sp.snapshot_create(
        ref_of(volume.path),
        name=None,  # type: ignore[arg-type]  # the Java plugin's caches are anonymous
        tags={"uuid": tmpl, "cs": "template"},
    )
    pool = env.domain.pools.get(env.pool_uuid)
    assert env.domain.templates.cached(pool, tmpl) is not None  # in use: recorded in the store
    env.domain.volumes.delete(pool, types_pb2.Volume(path=volume.path))
    assert env.domain.lifecycle.delete(env.pool_uuid) == (True, 1)
    assert env.sp.snapshot_or_none(f"~{gid}") is None
