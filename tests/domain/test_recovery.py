"""The sweep of what interrupted jobs left: it removes a temporary (or a half-filled volume)
only when the operation it names is not running, so a live job's work — here or, with shared
operations, on another replica — is never touched."""

from __future__ import annotations

import pytest

from spcs.management import recovery
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
    env.domain.templates.cache_from_snapshot(
        pool, env.snapshot(snapshot.path), "tmpl-1", operation_id="op-7"
    )
    (clone,) = created
    assert str(clone["name"]).startswith("cs-tmpldl-")
    assert clone["tags"][names.OPERATION_TAG] == "op-7"  # type: ignore[index]
    assert not [v for v in env.sp.volumes() if v.name.startswith("cs-tmpldl-")]  # scratch: gone
