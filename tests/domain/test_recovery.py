"""The sweep of what interrupted jobs left: it removes a temporary (or a half-filled volume)
only when the operation it names is not running, so a live job's work — here or, with shared
operations, on another replica — is never touched."""

from __future__ import annotations

import pytest

from spcs.management import objects, recovery
from spcs.storpool import names

from .conftest import MIB, TEMPLATE, Env

pytestmark = pytest.mark.fast


def _temporaries(env: Env) -> None:
    sp = env.sp
    sp.volume_create(
        name="cs-tmpldl-t1-p", size=MIB, template=TEMPLATE, tags={names.OPERATION_TAG: "live"}
    )
    sp.volume_create(
        name="cs-tmpldl-t2-p", size=MIB, template=TEMPLATE, tags={names.OPERATION_TAG: "dead"}
    )
    sp.volume_create(name="cs-tmpldl-t3-p", size=MIB, template=TEMPLATE)  # an older spcs's
    sp.volume_create(
        name="cs-vol-filling-live", size=MIB, template=TEMPLATE, tags={names.FILLING_TAG: "live"}
    )
    sp.volume_create(
        name="cs-vol-filling-dead", size=MIB, template=TEMPLATE, tags={names.FILLING_TAG: "dead"}
    )
    sp.volume_create(name="cs-vol-user", size=MIB, template=TEMPLATE)
    for volume, op in (("cs-vol-user", "live"), ("cs-vol-user", "dead")):
        sp.snapshot_create(
            volume, name=names.temporary_snapshot_name(op), tags={names.OPERATION_TAG: op}
        )


def test_only_the_work_of_operations_that_no_longer_run_is_removed(env: Env):
    _temporaries(env)
    removed = recovery.sweep(env.domain.pools, lambda operation: operation == "live")
    assert removed == 4
    assert {v.name for v in env.sp.volumes()} == {
        "cs-tmpldl-t1-p",
        "cs-vol-filling-live",
        "cs-vol-user",
    }
    # (the volume's newest snapshot stays, marked deleted, while the volume is its child)
    kept = [s.name for s in env.sp.snapshots() if not s.deleted]
    assert kept == [names.temporary_snapshot_name("live")]


def test_a_copy_tags_its_temporaries_with_its_operation(env: Env, monkeypatch):
    """The scratch clone of a snapshot→template copy names its job, so a sweep elsewhere
    leaves it while the job runs."""
    volume = env.create_volume()
    snapshot = env.take_snapshot(volume)
    pool = env.domain.pools.get(env.pool_uuid)
    created: list[dict[str, object]] = []
    create = env.sp.volume_create

    def recording(**fields: object) -> str:
        created.append(fields)
        return create(**fields)  # type: ignore[arg-type]

    monkeypatch.setattr(env.sp, "volume_create", recording)
    source = env.snapshot(snapshot.path)
    env.in_job(
        lambda ctx: env.domain.templates.cache_from_snapshot(ctx, pool, source, "tmpl-1"), "op-7"
    )
    (clone,) = created
    assert str(clone["name"]).startswith("cs-tmpldl-")
    assert clone["tags"][names.OPERATION_TAG] == "op-7"  # type: ignore[index]
    assert not [v for v in env.sp.volumes() if v.name.startswith("cs-tmpldl-")]  # scratch: gone


def test_a_swept_temporary_snapshot_frees_its_name(env: Env):
    """StorPool keeps a deleted snapshot that has children (the volume it was taken of) under
    its name: the sweep renames it first, so a retry of its operation can take it again."""
    _temporaries(env)
    recovery.sweep(env.domain.pools, lambda operation: operation == "live")
    dead = names.temporary_snapshot_name("dead")
    assert dead not in {s.name for s in env.sp.snapshots()}
    env.sp.snapshot_create("cs-vol-user", name=dead, tags={names.OPERATION_TAG: "dead"})


def test_a_retry_takes_its_point_in_time_snapshot_anew(env: Env):
    """The temporary an earlier attempt left holds older data: it goes, a new one is taken,
    also when the earlier one was deleted but kept under its name."""
    sp = env.sp
    sp.volume_create(name="cs-vol-data", size=MIB, template=TEMPLATE)
    name = names.temporary_snapshot_name("op-1")
    tags = {names.OPERATION_TAG: "op-1"}
    old = sp.snapshot_create("cs-vol-data", name=name, tags=tags)
    fresh = objects.temporary_snapshot(sp, "cs-vol-data", name, tags)
    assert fresh != old and sp.snapshot(name).global_id == fresh
    assert sp.snapshot_or_none(f"~{old}") is None or sp.snapshot(f"~{old}").deleted
    sp.snapshot_delete(name)  # deleted, but kept under its name: the volume is its child
    assert sp.snapshot(f"~{fresh}").deleted and sp.snapshot(f"~{fresh}").name == name
    again = objects.temporary_snapshot(sp, "cs-vol-data", name, tags)
    assert again not in (old, fresh) and not sp.snapshot(name).deleted
    assert sp.snapshot(f"~{fresh}").name == names.dropped_temporary_name(fresh)
