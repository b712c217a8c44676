"""The abandoned-object report over gRPC with thousands of objects: CloudStack streams what it
knows (uuids and paths, in many messages), spcs answers the pool's CloudStack-tagged objects
nobody knows (spcs's own and the Java plugin's anonymous ones alike, never untagged or other
pools' objects), deletes nothing, and a separate call deletes a chosen set, keeping what is
attached or not CloudStack's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from spcs.emulator import volumes
from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, OTHER_TEMPLATE, TEMPLATE, Mgmt, new_id, running_stack

LEGACY = 2000  # Java-plugin style anonymous volumes; every other one CloudStack still knows


def anonymous_volume(mgmt: Mgmt, uuid: str, template: str = TEMPLATE) -> str:
    data = mgmt.api.raw(
        "POST",
        "VolumeCreate",
        {"template": template, "size": MIB, "tags": {"uuid": uuid, "cs": "volume"}},
        what="anonymous volume",
    )
    return f"/dev/storpool-byid/{data['globalId']}"


def anonymous_volumes(mgmt: Mgmt, count: int) -> list[str]:
    """`count` anonymous volumes as the Java plugin leaves them, made by the emulator's own
    VolumeCreate in one of its changes (one state write, not `count`: the report is what is
    tested, not thousands of HTTP calls to the emulator)."""
    emu = mgmt.stack.emulator
    assert emu is not None and emu.cluster is not None
    with emu.cluster.change() as txn:
        made = [
            volumes.create(
                emu.cluster,
                txn,
                {
                    "template": TEMPLATE,
                    "size": MIB,
                    "tags": {"uuid": new_id("legacy"), "cs": "volume"},
                },
            )
            for _ in range(count)
        ]
    return [f"/dev/storpool-byid/{data['globalId']}" for data in made]


def stream(
    pool: str, uuids: list[str], paths: list[str], chunk: int = 300
) -> Iterator[lifecycle_pb2.ReportAbandonedObjectsRequest]:
    yield lifecycle_pb2.ReportAbandonedObjectsRequest(pool_uuid=pool)
    for start in range(0, max(len(uuids), len(paths)), chunk):
        yield lifecycle_pb2.ReportAbandonedObjectsRequest(
            known_uuids=uuids[start : start + chunk], known_paths=paths[start : start + chunk]
        )


def test_report_then_delete_a_chosen_set(tmp_path: Path):
    with running_stack(tmp_path) as mgmt:
        known_uuids: list[str] = []
        known_paths: list[str] = []
        lost: set[str] = set()

        kept_volume = mgmt.create_volume(MIB)
        known_uuids.append(kept_volume.uuid)
        forgotten = mgmt.create_volume(MIB)  # CloudStack lost its row
        lost.add(forgotten.path)
        snapshot = mgmt.take_snapshot(kept_volume.path)
        known_paths.append(snapshot.path)  # snapshot_details hold its path
        attached = mgmt.create_volume(MIB)
        mgmt.driver.GrantAccess(
            driver_pb2.GrantAccessRequest(
                object=types_pb2.DataObject(
                    volume=types_pb2.Volume(path=attached.path, store=mgmt.primary())
                ),
                host_id="host-1",
            )
        )
        lost.add(attached.path)
        for n, path in enumerate(anonymous_volumes(mgmt, LEGACY)):
            if n % 2:
                known_paths.append(path)
            else:
                lost.add(path)
        mgmt.api.volume_create(name="by-hand", size=MIB, template=TEMPLATE)  # no cs tag
        elsewhere = mgmt.add_pool(OTHER_TEMPLATE)
        anonymous_volume(mgmt, new_id("other"), OTHER_TEMPLATE)  # another pool's
        known_paths.append("/mnt/nfs-primary/some-qcow2")  # another adaptor's: ignored
        before = {v.global_id for v in mgmt.api.volumes()}

        report = mgmt.lifecycle.ReportAbandonedObjects(
            stream(mgmt.pool_uuid, known_uuids, known_paths), timeout=120
        )
        reported = {o.object.path for o in report.objects}
        assert reported == lost
        assert report.examined == 3 + 1 + LEGACY  # volumes and the snapshot with a cs tag
        assert report.known == len(known_uuids) + len(known_paths) - 1
        assert all(o.object.cloudstack_kind == "volume" for o in report.objects)
        assert all(o.age_seconds < 600 and o.object.size_bytes == MIB for o in report.objects)
        (shown,) = [o for o in report.objects if o.object.path == attached.path]
        assert [a.host_id for a in shown.object.attachments] == ["host-1"]
        assert {v.global_id for v in mgmt.api.volumes()} == before  # the report deletes nothing
        # the other pool's report does not see this pool's objects
        other = mgmt.lifecycle.ReportAbandonedObjects(stream(elsewhere, [], []), timeout=60)
        assert len(other.objects) == 1 and other.examined == 1

        legacy_lost = sorted(p for p in lost if p not in (forgotten.path, attached.path))[:3]
        chosen = [
            forgotten.path,
            attached.path,
            "by-hand",
            kept_volume.path.replace("emu.a.", "emu.a.999"),  # gone (never there)
            *legacy_lost,
        ]
        results = mgmt.lifecycle.DeleteAbandonedObjects(
            lifecycle_pb2.DeleteAbandonedObjectsRequest(pool_uuid=mgmt.pool_uuid, paths=chosen)
        ).results
        assert [r.path for r in results] == chosen
        outcome = {r.path: (r.deleted, r.kept_because) for r in results}
        assert outcome[forgotten.path] == (True, "")
        assert not outcome[attached.path][0] and "host-1" in outcome[attached.path][1]
        assert "detach it first" in outcome[attached.path][1]
        assert not outcome["by-hand"][0] and "no cs tag" in outcome["by-hand"][1]
        assert outcome[chosen[3]] == (False, "")
        assert all(outcome[p] == (True, "") for p in legacy_lost)
        remaining = {f"/dev/storpool-byid/{v.global_id}" for v in mgmt.api.volumes()}
        assert forgotten.path not in remaining and attached.path in remaining
        assert not set(legacy_lost) & remaining
        assert kept_volume.path in remaining and mgmt.api.volume_or_none("by-hand") is not None
        again = mgmt.lifecycle.ReportAbandonedObjects(
            stream(mgmt.pool_uuid, known_uuids, known_paths), timeout=120
        )
        assert {o.object.path for o in again.objects} == lost - {forgotten.path, *legacy_lost}


def test_bad_reports_are_refused(tmp_path: Path):
    with running_stack(tmp_path) as mgmt:
        report = mgmt.lifecycle.ReportAbandonedObjects
        cases = [
            (iter([]), "first message names the pool"),
            (iter([lifecycle_pb2.ReportAbandonedObjectsRequest(known_uuids=["a"])]), "pool_uuid"),
            (
                iter(
                    [
                        lifecycle_pb2.ReportAbandonedObjectsRequest(pool_uuid=mgmt.pool_uuid),
                        lifecycle_pb2.ReportAbandonedObjectsRequest(pool_uuid="other-pool"),
                    ]
                ),
                "one report is about one pool",
            ),
            (
                iter(
                    [
                        lifecycle_pb2.ReportAbandonedObjectsRequest(
                            pool_uuid=mgmt.pool_uuid, known_paths=["x" * 300]
                        )
                    ]
                ),
                "longer than 255",
            ),
        ]
        for requests, words in cases:
            with pytest.raises(grpc.RpcError) as refused:
                report(requests, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (refused.value.details() or ""), refused.value.details()
        with pytest.raises(grpc.RpcError) as missing:
            report(iter([lifecycle_pb2.ReportAbandonedObjectsRequest(pool_uuid="no-pool")]))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as too_many:
            mgmt.lifecycle.DeleteAbandonedObjects(
                lifecycle_pb2.DeleteAbandonedObjectsRequest(
                    pool_uuid=mgmt.pool_uuid, paths=["~emu.a.1"] * 1001
                )
            )
        assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as not_storpool:
            mgmt.lifecycle.DeleteAbandonedObjects(
                lifecycle_pb2.DeleteAbandonedObjectsRequest(
                    pool_uuid=mgmt.pool_uuid, paths=["/etc/passwd"]
                )
            )
        assert not_storpool.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "paths" in (not_storpool.value.details() or "")
