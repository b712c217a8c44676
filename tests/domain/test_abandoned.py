"""The abandoned-object report in-process: what a running spcs operation made or fills is never
reported nor deleted (spcs sweeps its own once the operation is over), while a leftover of an
operation that no longer runs is reported like any other object nobody knows."""

from __future__ import annotations

import pytest

from spcs.management.abandoned import Abandoned
from spcs.management.inventory import Inventory
from spcs.storpool import names
from spcs.v1 import lifecycle_pb2
from tests.domain.conftest import MIB, Env

pytestmark = pytest.mark.fast


def test_objects_of_running_operations_are_left_alone(env: Env):
    template = env.pool.template if env.pool else ""
    for name, tags in (
        ("cs-tmpvol-op-running", {"cs": "temporary", names.OPERATION_TAG: "op-running"}),
        ("cs-vol-filling", {"cs": "volume", "uuid": "vol-f", names.FILLING_TAG: "op-running"}),
        ("cs-tmpvol-op-over", {"cs": "temporary", names.OPERATION_TAG: "op-over"}),
    ):
        env.sp.volume_create(name=name, size=MIB, template=template, tags=tags)
    d = env.domain
    abandoned = Abandoned(
        Inventory(d.pools, d.nodes), d.locks, lambda operation: operation == "op-running"
    )
    report = abandoned.report(
        iter([lifecycle_pb2.ReportAbandonedObjectsRequest(pool_uuid=env.pool_uuid)])
    )
    assert [o.object.name for o in report.objects] == ["cs-tmpvol-op-over"]
    assert report.examined == 3
    results = abandoned.delete(env.pool_uuid, ["cs-tmpvol-op-running", "cs-tmpvol-op-over"])
    assert [(r.deleted, r.kept_because) for r in results] == [
        (False, "the running operation operations/op-running uses it"),
        (True, ""),
    ]
    assert env.sp.volume_or_none("cs-tmpvol-op-running") is not None
    assert env.sp.volume_or_none("cs-tmpvol-op-over") is None
