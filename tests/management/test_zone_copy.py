"""SnapshotStrategy/CopySnapshot end to end: a snapshot of a pool in zone 1 (the stack's emulator,
StorPool location "emu") copied to a pool in zone 2 (a second emulator, location "zone2", on the
same bridge), through the running management service, with the emulator's real transfer of the
bytes and its faults: a location that goes down mid-copy, a transfer that drops halfway, one that
never sends anything, a cancel."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.common import errors
from spcs.emulator import Emulator
from spcs.storpool import names
from spcs.storpool.api import StorPoolApi
from spcs.v1 import driver_pb2, lifecycle_pb2, strategies_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error, running_stack
from tests.stacks import TEMPLATE

pytestmark = pytest.mark.timeout(300)

STALL_SECONDS = 12
SIZE = 64 * MIB


@dataclass
class Zones:
    mgmt: Mgmt
    zone2: Emulator
    pool2: str

    @property
    def zone1(self) -> Emulator:
        assert self.mgmt.stack.emulator is not None
        return self.mgmt.stack.emulator

    @property
    def api2(self) -> StorPoolApi:
        return StorPoolApi(self.zone2.host, self.zone2.port, self.zone2.token)

    def copy_bytes(self, path: str) -> bytes:
        """What zone 2's StorPool holds for the copy (its data, as the emulator stores it)."""
        assert self.zone2.cluster is not None
        return Path(self.zone2.cluster.data_path(path.rsplit("/", 1)[1])).read_bytes()

    def start(self, snap: types_pb2.Snapshot, operation_id: str = "") -> operations_pb2.Operation:
        return self.mgmt.snapshots.CopySnapshot(
            strategies_pb2.CopySnapshotRequest(
                operation_id=operation_id or new_id("op"),
                snapshot=types_pb2.Snapshot(uuid=snap.uuid, path=snap.path),
                pool=self.mgmt.pool_ref(),
                destination_pool=types_pb2.PrimaryStore(pool_uuid=self.pool2),
            )
        )

    def finished(self, op: operations_pb2.Operation) -> strategies_pb2.CopySnapshotResult:
        done = self.mgmt.wait(op.name)
        assert not done.HasField("error"), done.error
        result = strategies_pb2.CopySnapshotResult()
        assert done.response.Unpack(result)
        return result

    def exports(self) -> list[dict[str, object]]:
        return list(self.mgmt.api.raw("GET", "ExportsList", what="exports").get("exports", []))


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    tmp = tmp_path_factory.mktemp("zones")
    args = ["--zone-copy-stall-seconds", str(STALL_SECONDS)]
    with running_stack(tmp / "zone1", management_args=args) as mgmt:
        assert mgmt.stack.emulator is not None
        zone2 = Emulator(
            tmp / "zone2",
            cluster_id="zone2.a",
            templates={TEMPLATE: 64 << 30},
            bridge=mgmt.stack.emulator.bridge,
        ).start()
        try:
            pool2 = new_id("pool")
            url = f"SP_API_HTTP={zone2.host}:{zone2.port};SP_AUTH_TOKEN={zone2.token};"
            mgmt.lifecycle.InitializePool(
                lifecycle_pb2.InitializePoolRequest(
                    pool_uuid=pool2,
                    name="zone-2-pool",
                    url=f"{url}SP_TEMPLATE={TEMPLATE}",
                    zone_id="zone-2",
                    capacity_bytes=1 << 40,
                )
            )
            mgmt.lifecycle.AttachZone(
                lifecycle_pb2.AttachZoneRequest(pool_uuid=pool2, zone_id="zone-2")
            )
            yield Zones(mgmt, zone2, pool2)
        finally:
            zone2.stop(release_devices=True)


@pytest.fixture
def z(zones: Zones) -> Iterator[Zones]:
    zones.zone2.set_faults({})
    zones.zone2.set_remote_bandwidth(None)
    yield zones
    zones.zone2.set_faults({})


def snapshot_with_data(z: Zones) -> tuple[types_pb2.Snapshot, bytes]:
    """A 64 MiB volume with 24 MiB of random data among zeros, snapshotted; its bytes."""
    rng = random.Random(os.urandom(8))
    volume = z.mgmt.create_volume(SIZE)
    writes = {
        off: rng.randbytes(length)
        for off, length in ((0, 6 * MIB), (13 * MIB + 4096, 10 * MIB), (50 * MIB, 8 * MIB))
    }
    z.mgmt.write(volume.path, writes)
    snap = z.mgmt.take_snapshot(volume.path)
    return snap, z.mgmt.read(snap.path, snapshot=True)


def metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    assert op.metadata.Unpack(meta)
    return meta


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def test_the_copy_in_the_other_zone_holds_the_snapshots_bytes(z: Zones):
    snap, data = snapshot_with_data(z)
    z.zone2.set_remote_bandwidth(12 * MIB)  # slow enough to watch it arrive
    op = z.start(snap)
    seen = []

    def arriving() -> bool:
        now = z.mgmt.operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        meta = metadata(now)
        copy = z.api2.snapshot_or_none(names.api_ref(snap.path))
        if copy is not None and copy.recovering and 0 < meta.bytes_done < meta.bytes_total:
            seen.append((meta.stage, meta.bytes_done, meta.bytes_total))
        return bool(seen) or now.done

    wait_for("a copy in progress", arriving)
    assert seen, "the transfer was never seen in progress"
    assert seen[0][0].startswith("receiving from location emu")
    result = z.finished(op)
    assert (result.source_location, result.destination_location) == ("emu", "zone2")
    assert result.snapshot.path == snap.path
    assert result.snapshot.store.primary.pool_uuid == z.pool2
    assert z.copy_bytes(snap.path) == data
    copy = z.api2.snapshot(names.api_ref(snap.path))
    assert copy.tags == {"uuid": snap.uuid, "cs": "snapshot"} and not copy.recovering
    assert copy.template == TEMPLATE
    assert result.bytes_stored >= 24 * MIB
    assert z.exports() == []  # spcs unexported the source itself
    assert z.zone1.transfers_running() == [] and z.zone2.transfers_running() == []

    # the copy is a snapshot like any other of zone 2: a volume clones from it
    clone = z.mgmt.copy(
        types_pb2.DataObject(
            snapshot=types_pb2.Snapshot(
                uuid=snap.uuid,
                path=result.snapshot.path,
                store=types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=z.pool2)),
            )
        ),
        types_pb2.DataObject(
            volume=types_pb2.Volume(
                uuid=new_id("vol"),
                store=types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=z.pool2)),
            )
        ),
    ).result.volume
    assert z.copy_bytes(clone.path) == data

    # one path in two zones: a delete must name its pool, and deletes only that copy
    ref = types_pb2.Snapshot(uuid=snap.uuid, path=snap.path)
    error = rpc_error(
        z.mgmt.snapshots.DeleteSnapshot, strategies_pb2.DeleteSnapshotRequest(snapshot=ref)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "name the pool" in error.details()
    z.mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            pool=types_pb2.PrimaryStore(pool_uuid=z.pool2),
            object=types_pb2.DataObject(volume=clone),
        )
    )
    z.mgmt.snapshots.DeleteSnapshot(
        strategies_pb2.DeleteSnapshotRequest(
            snapshot=ref, pool=types_pb2.PrimaryStore(pool_uuid=z.pool2)
        )
    )
    assert z.api2.snapshot_or_none(names.api_ref(snap.path)) is None
    assert z.mgmt.api.snapshot_or_none(names.api_ref(snap.path)) is not None


def test_the_same_operation_id_on_a_finished_copy_answers_it_again(z: Zones):
    snap, _ = snapshot_with_data(z)
    first = z.finished(z.start(snap, "op-zone-again"))
    replay = z.start(snap, "op-zone-again")
    assert replay.done and z.finished(replay) == first


def test_a_copy_resumes_when_the_source_location_comes_back(z: Zones):
    snap, data = snapshot_with_data(z)
    z.zone2.set_remote_bandwidth(8 * MIB)
    op = z.start(snap)
    api2 = z.api2

    def some_arrived() -> bool:
        space = {row.global_id: row.used for row in api2.snapshots_space()}
        return space.get(snap.path.rsplit("/", 1)[1], 0) > 0

    wait_for("the first data in zone 2", some_arrived)
    port = z.zone1.port
    z.zone1.stop()  # the source location is down: its data can not be fetched
    try:
        time.sleep(2)
        copy = api2.snapshot(names.api_ref(snap.path))
        assert copy.recovering  # stuck, not lost
        now = z.mgmt.operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        assert not now.done
    finally:
        z.zone1.start(port=port)
    z.zone2.set_remote_bandwidth(None)
    result = z.finished(op)  # spcs asked StorPool to resume
    assert z.copy_bytes(result.snapshot.path) == data
    assert z.exports() == []


def test_a_transfer_that_drops_halfway_is_resumed(z: Zones):
    snap, data = snapshot_with_data(z)
    z.zone2.set_faults({"failAfter": {"RemoteTransfer": 3}})
    result = z.finished(z.start(snap))
    assert z.copy_bytes(result.snapshot.path) == data
    assert z.exports() == []


def test_a_copy_that_receives_nothing_fails_and_leaves_nothing(z: Zones):
    snap, _ = snapshot_with_data(z)
    z.zone2.set_faults({"failNext": {"RemoteTransfer": 1000}})
    done = z.mgmt.wait(z.start(snap).name)
    assert done.HasField("error")
    assert errors_code(done) == grpc.StatusCode.UNAVAILABLE
    assert "sent no data" in done.error.message and "retry with the same operation id" in (
        done.error.message
    )
    assert z.api2.snapshot_or_none(names.api_ref(snap.path)) is None
    assert z.exports() == []
    assert z.mgmt.api.snapshot_or_none(names.api_ref(snap.path)) is not None
    # the link is back: a retry succeeds
    z.zone2.set_faults({})
    assert z.finished(z.start(snap)).snapshot.path == snap.path


def test_cancel_removes_the_copy_and_the_export(z: Zones):
    snap, _ = snapshot_with_data(z)
    z.zone2.set_remote_bandwidth(2 * MIB)
    op = z.start(snap)
    wait_for("the transfer", lambda: bool(z.zone2.transfers_running()))
    z.mgmt.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    done = z.mgmt.wait(op.name)
    assert errors_code(done) == grpc.StatusCode.CANCELLED
    assert z.api2.snapshot_or_none(names.api_ref(snap.path)) is None
    assert z.exports() == []
    wait_for("the transfer to stop", lambda: not z.zone2.transfers_running(), 10)


def test_a_delete_of_the_source_waits_for_the_copy(z: Zones):
    snap, _ = snapshot_with_data(z)
    z.zone2.set_remote_bandwidth(4 * MIB)
    op = z.start(snap)
    wait_for("the transfer", lambda: bool(z.zone2.transfers_running()))
    error = rpc_error(
        z.mgmt.snapshots.DeleteSnapshot,
        strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(path=snap.path), pool=z.mgmt.pool_ref()
        ),
    )
    assert error.code() == grpc.StatusCode.ABORTED
    z.zone2.set_remote_bandwidth(None)
    z.finished(op)
    z.mgmt.snapshots.DeleteSnapshot(
        strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(path=snap.path), pool=z.mgmt.pool_ref()
        )
    )
    assert z.mgmt.api.snapshot_or_none(names.api_ref(snap.path)) is None
    assert z.api2.snapshot_or_none(names.api_ref(snap.path)) is not None  # zone 2's own now


def errors_code(op: operations_pb2.Operation) -> grpc.StatusCode:
    assert op.done and op.HasField("error"), op
    return errors.code_of(op.error.code)


def test_steps_whose_answer_is_lost_are_retried_safely(z: Zones):
    """An export (and a copy request) that took effect but whose answer was lost: the
    bindings retry, and the second export or copy request changes nothing."""
    snap, data = snapshot_with_data(z)
    z.zone1.set_faults({"failAfter": {"SnapshotExport": 1}})
    z.zone2.set_faults({"failAfter": {"SnapshotFromRemote": 1}})
    try:
        result = z.finished(z.start(snap))
    finally:
        z.zone1.set_faults({})
    assert z.copy_bytes(result.snapshot.path) == data
    assert z.exports() == []
    assert z.zone1.request_counts().get("SnapshotExport", 0) >= 2
