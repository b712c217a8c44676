"""CanCopy/CopyData: every copy the driver handles, checked on StorPool objects and bytes."""

from __future__ import annotations

import threading
import time

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs.node import template_properties
from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, OTHER_TEMPLATE, Mgmt, new_id, rpc_error
from tests.support import pattern, qemu_img


def node_download_bytes(mgmt: Mgmt) -> tuple[int, int]:
    """(DownloadTemplate jobs, bytes they wrote) over both nodes: the nodes' own counters."""
    jobs = written = 0
    for n in (1, 2):
        with mgmt.node_channel(n) as channel:
            ops = (
                operations_pb2_grpc.OperationsStub(channel)
                .ListOperations(operations_pb2.ListOperationsRequest(page_size=1000))
                .operations
            )
        for op in ops:
            meta = types_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            if meta.kind.endswith("/DownloadTemplate"):
                jobs += 1
                written += meta.bytes_written
    return jobs, written


def volume_object(mgmt: Mgmt, size: int = 0, pool: str | None = None, **fields):
    return types_pb2.DataObject(
        volume=types_pb2.Volume(
            uuid=fields.pop("uuid", new_id("vol")),
            size_bytes=size,
            store=mgmt.primary(pool),
            **fields,
        )
    )


def test_template_download_once_then_instant_clones(mgmt: Mgmt):
    template, raw = mgmt.template_on_secondary(201)
    jobs_before, bytes_before = node_download_bytes(mgmt)
    timings = []
    volumes = []
    for n in range(20):
        started = time.monotonic()
        result = mgmt.copy(
            types_pb2.DataObject(template=template),
            volume_object(mgmt, 32 * MIB, vm_uuid=f"vm-{n}"),
        )
        timings.append(time.monotonic() - started)
        volumes.append(result)
    first = volumes[0]
    assert first.kind == "template-to-volume" and first.bytes_written >= 5 * MIB
    assert all(v.bytes_written == 0 for v in volumes[1:])
    jobs_after, bytes_after = node_download_bytes(mgmt)
    assert jobs_after - jobs_before == 1  # one download job on the nodes for 20 volumes
    assert bytes_after - bytes_before == first.bytes_written
    # the 20th clone costs what the 2nd did (no growth with the number of clones)
    assert timings[19] <= max(3 * timings[1], timings[1] + 0.5), timings
    cache = mgmt.api.snapshot(f"cs-tmpl-{template.uuid}-{mgmt.pool_uuid}")
    assert cache.tags == {"uuid": template.uuid, "cs": "template", "vc-policy": "no"}
    for result in (volumes[0], volumes[19]):
        volume = result.result.volume
        obj = mgmt.api.volume(f"~{volume.global_id}")
        assert obj.parent == cache.name and obj.size == 96 * MIB  # max(offering, template)
        assert mgmt.read(volume.path) == raw
    assert not any(name.startswith("cs-tmpldl-") for name in mgmt.storpool_names())


def test_template_to_primary_and_concurrent_first_uses_download_once(mgmt: Mgmt):
    template, raw = mgmt.template_on_secondary(202, size=48 * MIB)
    jobs_before, _ = node_download_bytes(mgmt)
    results: list[driver_pb2.CopyDataResult] = []
    errors: list[BaseException] = []

    def deploy() -> None:
        try:
            results.append(
                mgmt.copy(types_pb2.DataObject(template=template), volume_object(mgmt, 8 * MIB))
            )
        except BaseException as error:  # collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=deploy) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert node_download_bytes(mgmt)[0] - jobs_before == 1
    assert sorted(r.bytes_written > 0 for r in results) == [False, False, False, True]
    assert mgmt.read(results[2].result.volume.path) == raw
    # T→T: the cached copy is reported as the template on primary
    cached = mgmt.copy(
        types_pb2.DataObject(template=template),
        types_pb2.DataObject(template=types_pb2.Template(uuid=template.uuid, store=mgmt.primary())),
    )
    assert cached.kind == "template-to-primary" and cached.bytes_written == 0
    assert cached.result.template.path == f"/dev/storpool-byid/{cached.result.template.global_id}"
    # a volume from the template on primary (its path) needs no secondary copy at all
    direct = mgmt.copy(
        types_pb2.DataObject(template=cached.result.template), volume_object(mgmt, 8 * MIB)
    )
    assert direct.bytes_written == 0 and mgmt.read(direct.result.volume.path) == raw
    # template garbage collection: the cache snapshot goes (clones keep their data)
    assert mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            pool=mgmt.pool_ref(), object=types_pb2.DataObject(template=cached.result.template)
        )
    ).deleted
    assert mgmt.read(direct.result.volume.path) == raw


def test_snapshot_backup_and_volume_from_the_backup(mgmt: Mgmt):
    volume = mgmt.create_volume(24 * MIB)
    mgmt.write(volume.path, {MIB: pattern(21, 2 * MIB)})
    snapshot = mgmt.take_snapshot(volume.path)
    snapshot.store.CopyFrom(mgmt.primary())
    backup = mgmt.copy(
        types_pb2.DataObject(snapshot=snapshot),
        types_pb2.DataObject(
            snapshot=types_pb2.Snapshot(path="snapshots/2/7", store=mgmt.secondary())
        ),
    )
    backed = backup.result.snapshot
    assert (
        backup.kind == "snapshot-to-secondary" and backed.path == f"snapshots/2/7/{snapshot.uuid}"
    )
    assert backed.format == types_pb2.IMAGE_FORMAT_QCOW2 and backed.size_bytes == 24 * MIB
    file = mgmt.stack.secondary / backed.path
    assert "No errors" in qemu_img("check", str(file))
    # a volume from a snapshot that exists only on secondary: the bytes come back
    restored = mgmt.copy(types_pb2.DataObject(snapshot=backed), volume_object(mgmt))
    assert restored.kind == "secondary-snapshot-to-volume" and restored.bytes_written > 0
    assert mgmt.read(restored.result.volume.path)[MIB : 3 * MIB] == pattern(21, 2 * MIB)
    # from the snapshot on primary: an instant clone
    clone = mgmt.copy(types_pb2.DataObject(snapshot=snapshot), volume_object(mgmt, 32 * MIB))
    assert clone.kind == "snapshot-to-volume" and clone.bytes_written == 0
    clone_obj = mgmt.api.volume(f"~{clone.result.volume.global_id}")
    assert clone_obj.parent == f"cs-snap-{snapshot.uuid}" and clone_obj.size == 32 * MIB


def test_failed_backup_keeps_the_snapshot_and_a_retry_succeeds(mgmt: Mgmt):
    volume = mgmt.create_volume(4 * MIB)
    mgmt.write(volume.path, {0: pattern(5, MIB)})
    snapshot = mgmt.take_snapshot(volume.path)
    snapshot.store.CopyFrom(mgmt.primary())
    # a typo in the destination path: a file stands where the directory should be
    (mgmt.stack.secondary / "snapshots").mkdir(exist_ok=True)
    (mgmt.stack.secondary / "snapshots" / "typo").write_bytes(b"not a directory")
    op = mgmt.driver.CopyData(
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(snapshot=snapshot),
            destination=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path="snapshots/typo", store=mgmt.secondary())
            ),
        )
    )
    failed = mgmt.wait(op.name)
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "snapshots/typo" in failed.error.message
    # the snapshot is the caller's: still there, and the retry the message asks for works
    assert mgmt.api.snapshot_or_none(f"~{snapshot.global_id}") is not None
    backup = mgmt.copy(
        types_pb2.DataObject(snapshot=snapshot),
        types_pb2.DataObject(
            snapshot=types_pb2.Snapshot(path="snapshots/x", store=mgmt.secondary())
        ),
    )
    file = mgmt.stack.secondary / backup.result.snapshot.path
    assert "No errors" in qemu_img("check", str(file))


def test_bypass_keeps_snapshots_on_primary(mgmt: Mgmt):
    mgmt.lifecycle.UpdatePool(
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=mgmt.pool_uuid, details={"snapshot.backup.to.secondary": "false"}
        )
    )
    try:
        volume = mgmt.create_volume(4 * MIB)
        snapshot = mgmt.take_snapshot(volume.path)
        snapshot.store.CopyFrom(mgmt.primary())
        kept = mgmt.copy(
            types_pb2.DataObject(snapshot=snapshot),
            types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path="snapshots/9", store=mgmt.secondary())
            ),
        )
        assert kept.result.snapshot.path == snapshot.path and kept.bytes_written == 0
        assert not (mgmt.stack.secondary / "snapshots/9").exists()
    finally:
        mgmt.lifecycle.UpdatePool(
            lifecycle_pb2.UpdatePoolRequest(
                pool_uuid=mgmt.pool_uuid, details={"snapshot.backup.to.secondary": ""}
            )
        )


def test_template_from_volume_and_from_snapshot(mgmt: Mgmt):
    volume = mgmt.create_volume(40 * MIB)
    mgmt.write(volume.path, {2 * MIB: pattern(31, 4 * MIB)})
    volume.store.CopyFrom(mgmt.primary())
    template = types_pb2.Template(
        uuid=new_id("tmpl"),
        name="from-volume",
        id=501,
        path="template/tmpl/2/501",
        store=mgmt.secondary(),
    )
    made = mgmt.copy(types_pb2.DataObject(volume=volume), types_pb2.DataObject(template=template))
    result = made.result.template
    directory = mgmt.stack.secondary / "template/tmpl/2/501"
    props = template_properties.parse((directory / "template.properties").read_text())
    assert (props["uniquename"], props["id"], props["filename"], props["virtualsize"]) == (
        "from-volume",
        "501",
        f"{template.uuid}.qcow2",
        str(40 * MIB),
    )
    assert result.checksum == props["checksum"] and result.size_bytes == 40 * MIB
    # the template stays cached on this pool: deploying it downloads nothing
    deployed = mgmt.copy(types_pb2.DataObject(template=template), volume_object(mgmt))
    assert deployed.bytes_written == 0
    assert mgmt.read(deployed.result.volume.path)[2 * MIB : 6 * MIB] == pattern(31, 4 * MIB)
    # and from a snapshot
    snapshot = mgmt.take_snapshot(volume.path)
    snapshot.store.CopyFrom(mgmt.primary())
    second = types_pb2.Template(
        uuid=new_id("tmpl"),
        name="from-snapshot",
        id=502,
        path="template/tmpl/2/502",
        store=mgmt.secondary(),
    )
    from_snap = mgmt.copy(
        types_pb2.DataObject(snapshot=snapshot), types_pb2.DataObject(template=second)
    )
    assert from_snap.kind == "snapshot-to-template"
    image = mgmt.stack.secondary / "template/tmpl/2/502" / f"{second.uuid}.qcow2"
    assert image.is_file()
    assert not any(n.startswith("cs-tmpldl-") for n in mgmt.storpool_names())


def test_volume_to_secondary_and_back(mgmt: Mgmt):
    volume = mgmt.create_volume(20 * MIB)
    mgmt.write(volume.path, {0: pattern(41, MIB)})
    volume.store.CopyFrom(mgmt.primary())
    exported = mgmt.copy(
        types_pb2.DataObject(volume=volume),
        types_pb2.DataObject(volume=types_pb2.Volume(path="volumes/2/88", store=mgmt.secondary())),
    )
    assert exported.kind == "volume-to-secondary"
    assert exported.result.volume.path == f"volumes/2/88/{volume.uuid}.qcow2"
    assert not any(n.startswith("cs-tmpsnap-") for n in mgmt.storpool_names())
    back = mgmt.copy(types_pb2.DataObject(volume=exported.result.volume), volume_object(mgmt))
    assert back.kind == "volume-from-secondary"
    assert mgmt.read(back.result.volume.path)[:MIB] == pattern(41, MIB)


def test_volume_to_other_pool_by_copy(mgmt: Mgmt):
    other = mgmt.add_pool(OTHER_TEMPLATE)
    volume = mgmt.create_volume(4 * MIB)
    volume.store.CopyFrom(mgmt.primary())
    moved = mgmt.copy(
        types_pb2.DataObject(volume=volume), volume_object(mgmt, uuid=volume.uuid, pool=other)
    )
    assert moved.kind == "volume-to-pool"
    assert mgmt.api.volume(f"~{moved.result.volume.global_id}").template == OTHER_TEMPLATE
    for path in (moved.result.volume.path,):
        mgmt.driver.DeleteData(
            driver_pb2.DeleteDataRequest(
                pool=mgmt.pool_ref(other),
                object=types_pb2.DataObject(volume=types_pb2.Volume(path=path)),
            )
        )
    mgmt.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=other))


def test_can_copy_answers_exactly_the_handled_combinations(mgmt: Mgmt):
    template = types_pb2.DataObject(
        template=types_pb2.Template(uuid="t", path="p", store=mgmt.secondary())
    )
    volume = volume_object(mgmt, MIB)
    secondary_volume = types_pb2.DataObject(
        volume=types_pb2.Volume(uuid="v", path="d", store=mgmt.secondary())
    )
    assert mgmt.driver.CanCopy(
        driver_pb2.CanCopyRequest(source=template, destination=volume)
    ).can_copy
    no = mgmt.driver.CanCopy(
        driver_pb2.CanCopyRequest(source=secondary_volume, destination=template)
    )
    assert not no.can_copy and "not handled" in no.reason
    same_pool = mgmt.driver.CanCopy(driver_pb2.CanCopyRequest(source=volume, destination=volume))
    assert not same_pool.can_copy
    unknown = volume_object(mgmt, MIB, pool="no-such-pool")
    assert not mgmt.driver.CanCopy(
        driver_pb2.CanCopyRequest(source=template, destination=unknown)
    ).can_copy
    refused = rpc_error(
        mgmt.driver.CopyData,
        driver_pb2.CopyDataRequest(
            operation_id="op-x", source=secondary_volume, destination=template
        ),
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = rpc_error(
        mgmt.driver.CopyData,
        driver_pb2.CopyDataRequest(
            operation_id="op-y",
            source=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(
                    path="/dev/storpool-byid/emu.a.zzzz", store=mgmt.primary()
                )
            ),
            destination=volume,
        ),
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_a_template_download(mgmt: Mgmt):
    template, _ = mgmt.template_on_secondary(203, size=1536 * MIB)
    # the template's zero regions are skipped; make it slow with real data on a slow path
    mgmt.stack.emulator.set_faults({"delays": {"VolumesReassignWait": 2.0}})
    try:
        op = mgmt.driver.CopyData(
            driver_pb2.CopyDataRequest(
                operation_id=new_id("op"),
                source=types_pb2.DataObject(template=template),
                destination=volume_object(mgmt, MIB),
            )
        )
        time.sleep(1.0)
        mgmt.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
        done = mgmt.wait(op.name)
    finally:
        mgmt.stack.emulator.set_faults({})
    assert done.error.code == grpc.StatusCode.CANCELLED.value[0]
    deadline = time.monotonic() + 20
    while any(n.startswith("cs-tmpldl-") for n in mgmt.storpool_names()):
        assert time.monotonic() < deadline, "the download volume was left behind"
        time.sleep(0.2)
    assert mgmt.api.snapshot_or_none(f"cs-tmpl-{template.uuid}-{mgmt.pool_uuid}") is None
