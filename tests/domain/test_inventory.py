"""What a pool holds (spcs.management.inventory) in-process: thousands of objects paged
without a repeat or a gap while objects come and go between pages, the pool's template only,
kinds, sizes, limits, creation times and attachments by host, and the refusals."""

from __future__ import annotations

import pytest

from spcs.common import errors
from spcs.v1 import lifecycle_pb2
from tests.domain.conftest import MIB, OTHER_TEMPLATE, Env, new_id

pytestmark = pytest.mark.fast

VOLUME = lifecycle_pb2.POOL_OBJECT_KIND_VOLUME
SNAPSHOT = lifecycle_pb2.POOL_OBJECT_KIND_SNAPSHOT
BOTH = lifecycle_pb2.POOL_OBJECT_KIND_UNSPECIFIED


def listed(env: Env, kind=BOTH, size: int = 0, between=None) -> list[lifecycle_pb2.PoolObject]:
    inventory = env.lifecycle._inventory
    found: list[lifecycle_pb2.PoolObject] = []
    token = ""
    while True:
        page = inventory.page(env.pool_uuid, kind, size, token)
        found += page.objects
        token = page.next_token
        if not token:
            return found
        if between is not None:
            between(page)


def test_thousands_of_objects_page_without_repeats_or_gaps(env: Env):
    for n in range(2500):
        env.sp.volume_create(name=f"vol-{n:05d}", size=MIB, template=env.pool.template)
    for n in range(300):
        env.sp.snapshot_create(f"vol-{n:05d}", name=f"snap-{n:05d}", tags={"cs": "snapshot"})
    env.sp.volume_create(name="not-this-pool", size=MIB, template=OTHER_TEMPLATE)
    env.sp.calls.clear()

    everything = listed(env, size=0)
    assert [o.name for o in everything] == [f"vol-{n:05d}" for n in range(2500)] + [
        f"snap-{n:05d}" for n in range(300)
    ]
    # one page of 1000 costs the four list calls, not one call per object
    assert sum(env.sp.calls.values()) <= 3 * 4
    assert all(o.kind == VOLUME for o in everything[:2500])
    assert all(o.kind == SNAPSHOT and o.cloudstack_kind == "snapshot" for o in everything[2500:])

    # objects that come and go between pages: the ones that stay are each seen exactly once
    gone = iter(f"vol-{n:05d}" for n in range(10, 2500, 211))

    def churn(page) -> None:
        env.sp.volume_create(name=f"vol-{page.objects[0].name[4:]}-new", size=MIB,
                             template=env.pool.template)  # fmt: skip
        name = next(gone, None)
        if name is not None and env.sp.volume_or_none(name) is not None:
            env.sp.volume_delete(name)

    names = [o.name for o in listed(env, VOLUME, size=97, between=churn)]
    assert len(names) == len(set(names))
    stayed = {v.name for v in env.sp.volumes() if v.template == env.pool.template}
    assert stayed - {n for n in stayed if n.endswith("-new")} <= set(names)


def test_what_an_object_shows(env: Env):
    volume = env.create_volume(8 * MIB, vm_uuid="vm-7", max_iops=500)
    env.sp.attach(f"~{volume.global_id}", 1, read_only=False, snapshot=False, timeout=10)
    env.domain.nodes.register("host-1", "127.0.0.1:1", 1, "emu.a", "test")
    snapshot = env.take_snapshot(volume)
    env.sp.attach(f"~{snapshot.global_id}", 2, read_only=True, snapshot=True, timeout=10)

    shown = env.lifecycle._inventory.get(env.pool_uuid, volume.uuid)
    assert (shown.kind, shown.path, shown.uuid, shown.vm_uuid) == (
        VOLUME,
        volume.path,
        volume.uuid,
        "vm-7",
    )
    assert shown.size_bytes == 8 * MIB and shown.HasField("used_bytes")
    assert shown.max_iops == 500 and shown.create_time.seconds > 0
    assert [(a.client_id, a.host_id, a.read_only) for a in shown.attachments] == [
        (1, "host-1", False)
    ]
    snap = env.lifecycle._inventory.get(env.pool_uuid, snapshot.path)
    assert snap.kind == SNAPSHOT and not snap.HasField("used_bytes")
    assert snap.on_volume == f"cs-vol-{volume.uuid}" and snap.tags["uuid"] == snapshot.uuid
    # a client no node of the region has is shown by its id alone
    assert [(a.client_id, a.host_id, a.read_only) for a in snap.attachments] == [(2, "", True)]


def test_refusals_name_what_to_do(env: Env):
    volume = env.create_volume(4 * MIB)
    env.sp.snapshot_create(f"~{volume.global_id}", name="same-uuid", tags={"uuid": volume.uuid})
    with pytest.raises(errors.FailedPrecondition, match="ask for one of them by its path"):
        env.lifecycle._inventory.get(env.pool_uuid, volume.uuid)
    other = env.add_pool(OTHER_TEMPLATE)
    with pytest.raises(errors.NotFound, match="spcs ctl volumes"):
        env.lifecycle._inventory.get(other.uuid, volume.path)
    for kind, size, token, field in (
        (9, 0, "", "kind"),
        (BOTH, -1, "", "page_size"),
        (BOTH, 10001, "", "page_size"),
        (VOLUME, 0, "snapshot/x", "page_token"),
        (BOTH, 0, "volume/a?b", "page_token"),
        (BOTH, 0, new_id("junk"), "page_token"),
    ):
        with pytest.raises(errors.InvalidArgument, match=field):
            env.lifecycle._inventory.page(env.pool_uuid, kind, size, token)
    with pytest.raises(errors.NotFound):
        env.lifecycle._inventory.page("pool-nope", BOTH, 0, "")
