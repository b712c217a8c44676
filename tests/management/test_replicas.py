"""Several `spcs management` replicas on one MariaDB, as processes with the emulator and two nodes:
operations belong to the region (the same id sent to two replicas runs once; Get, Wait and
Cancel work from any replica), conflicting calls on two replicas get ABORTED naming the holder,
and a replica killed mid-copy is taken over: its operation reads interrupted on the others, its
temporaries go (nothing of a live replica does) and the same id retried elsewhere succeeds; one
restarted under load fails only the calls in flight to it, which succeed when sent again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import code_pb2

from spcs.management.sql_state import SqlState
from spcs.storpool import names
from spcs.v1 import driver_pb2, driver_pb2_grpc, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error, running_stack
from tests.management.test_client_failover import balanced_channel
from tests.management.test_copies import node_download_bytes, volume_object
from tests.stacks import MariaDB
from tests.support import pattern, qemu_img

LEASE_SECONDS = 15.0


def shared_database(mariadb: MariaDB, tmp_path: Path) -> tuple[list[str], str]:
    """The management arguments of a new database on the test server, and its URL."""
    url = mariadb.new_database()
    password = tmp_path / "database.password"
    password.write_text(mariadb.password)
    password.chmod(0o600)
    return ["--database-url", url, "--database-password-file", str(password)], url


@pytest.fixture
def region(mariadb: MariaDB, tmp_path: Path) -> Iterator[tuple[Mgmt, str]]:
    """Two replicas; the stack's channel goes to the first. Yields it and the database URL."""
    args, url = shared_database(mariadb, tmp_path)
    with running_stack(tmp_path / "stack", management_args=args, replicas=2) as mgmt:
        yield mgmt, url


def replica(mgmt: Mgmt, n: int) -> grpc.Channel:
    return grpc.insecure_channel(mgmt.stack.managements[n - 1].address)


def metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    assert op.metadata.Unpack(meta)
    return meta


def export_request(mgmt: Mgmt, volume: types_pb2.Volume, op_id: str) -> driver_pb2.CopyDataRequest:
    volume.store.CopyFrom(mgmt.primary())
    return driver_pb2.CopyDataRequest(
        operation_id=op_id,
        source=types_pb2.DataObject(volume=volume),
        destination=types_pb2.DataObject(
            volume=types_pb2.Volume(path=f"volumes/2/{op_id}", store=mgmt.secondary())
        ),
    )


def filled_volume(mgmt: Mgmt, seed: int) -> tuple[types_pb2.Volume, bytes]:
    volume = mgmt.create_volume(16 * MIB)
    mgmt.write(volume.path, {0: pattern(seed, MIB), 9 * MIB: pattern(seed + 1, MIB)})
    return volume, mgmt.read(volume.path)


def node_jobs(mgmt: Mgmt, op_id: str, *, running: bool = False) -> list[str]:
    """The jobs of operation `op_id` on every node (running ones only with `running`)."""
    found = []
    for n in range(1, len(mgmt.stack.nodes) + 1):
        with mgmt.node_channel(n) as channel:
            listed = operations_pb2_grpc.OperationsStub(channel).ListOperations(
                operations_pb2.ListOperationsRequest(filter="done=false" if running else "")
            )
        found += [op.name for op in listed.operations if op.name.startswith(f"operations/{op_id}.")]
    return found


def cancel_requested(mgmt: Mgmt, n: int, op_id: str) -> bool:
    """Whether node `n` was asked to cancel a job of operation `op_id`."""
    with mgmt.node_channel(n) as channel:
        listed = operations_pb2_grpc.OperationsStub(channel).ListOperations(
            operations_pb2.ListOperationsRequest()
        )
    return any(
        metadata(op).cancel_requested
        for op in listed.operations
        if op.name.startswith(f"operations/{op_id}.")
    )


def exported_bytes(mgmt: Mgmt, done: operations_pb2.Operation, tmp: Path) -> bytes:
    assert not done.HasField("error"), done.error
    result = driver_pb2.CopyDataResult()
    assert done.response.Unpack(result)
    image = mgmt.stack.secondary / result.result.volume.path
    raw = tmp / "exported.raw"
    qemu_img("convert", "-O", "raw", str(image), str(raw))
    return raw.read_bytes()


def wait_on(channel: grpc.Channel, name: str, timeout: float = 60) -> operations_pb2.Operation:
    stub = operations_pb2_grpc.OperationsStub(channel)
    deadline = time.monotonic() + timeout
    while True:
        op = stub.WaitOperation(operations_pb2.WaitOperationRequest(name=name))
        if op.done or time.monotonic() > deadline:
            return op


def test_the_same_copy_sent_to_two_replicas_at_once_runs_once(region, tmp_path: Path):
    mgmt, _ = region
    volume, data = filled_volume(mgmt, 61)
    op_id = new_id("op")
    request = export_request(mgmt, volume, op_id)
    channels = [replica(mgmt, 1), replica(mgmt, 2)]
    barrier = threading.Barrier(2)
    names_seen: list[str] = []

    def send(channel: grpc.Channel) -> None:
        barrier.wait()
        names_seen.append(
            driver_pb2_grpc.PrimaryDataStoreDriverStub(channel).CopyData(request).name
        )

    threads = [threading.Thread(target=send, args=(ch,)) for ch in channels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert names_seen == [f"operations/{op_id}"] * 2
    answers = [wait_on(ch, f"operations/{op_id}") for ch in channels]
    assert answers[0] == answers[1] and answers[0].done
    assert exported_bytes(mgmt, answers[0], tmp_path) == data
    assert len(node_jobs(mgmt, op_id)) == 1  # one job on one node did the copy
    for channel in channels:
        channel.close()


def test_a_cancel_on_one_replica_reaches_the_job_on_the_other(region):
    mgmt, _ = region
    volume, _ = filled_volume(mgmt, 71)
    op_id = new_id("op")
    # the node's attach of the point-in-time snapshot takes a while: the job is mid-copy
    mgmt.stack.emulator.set_faults({"delays": {"VolumesReassignWait": 3.0}})
    try:
        with replica(mgmt, 1) as a, replica(mgmt, 2) as b:
            name = (
                driver_pb2_grpc.PrimaryDataStoreDriverStub(a)
                .CopyData(export_request(mgmt, volume, op_id))
                .name
            )
            ops_b = operations_pb2_grpc.OperationsStub(b)
            deadline = time.monotonic() + 20
            while not node_jobs(mgmt, op_id, running=True):
                assert time.monotonic() < deadline, "the node job did not start"
                time.sleep(0.05)
            asked = time.monotonic()
            ops_b.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
            # replica 1 sees the cancel at its next beat and cancels the node's job
            while not any(cancel_requested(mgmt, n, op_id) for n in (1, 2)):
                assert time.monotonic() - asked < 2.5, "the cancel did not reach the job"
                time.sleep(0.05)
            # and every replica shows it once replica 1 has written it, at the beat after
            while True:
                seen = ops_b.GetOperation(operations_pb2.GetOperationRequest(name=name))
                if metadata(seen).cancel_requested or seen.done:
                    break
                assert time.monotonic() - asked < 3.5, metadata(seen)
                time.sleep(0.05)
            done = wait_on(b, name)
            assert done.error.code == code_pb2.CANCELLED, done.error
            assert metadata(done).state == types_pb2.JOB_STATE_CANCELLED
    finally:
        mgmt.stack.emulator.set_faults({})
    assert not any(n.startswith("cs-tmpsnap-") for n in mgmt.storpool_names())


def test_conflicting_calls_on_two_replicas_one_proceeds_one_is_aborted(region):
    mgmt, _ = region
    volume = mgmt.create_volume(64 * MIB)
    resize = driver_pb2.ResizeVolumeRequest(
        pool=mgmt.pool_ref(), volume=types_pb2.Volume(path=volume.path), new_size_bytes=128 * MIB
    )
    delete = driver_pb2.DeleteDataRequest(
        pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=volume)
    )
    mgmt.stack.emulator.set_faults({"delays": {"VolumeUpdate": 2.0}})
    results: dict[str, object] = {}
    with replica(mgmt, 1) as a, replica(mgmt, 2) as b:
        first = threading.Thread(
            target=lambda: results.setdefault(
                "resize", driver_pb2_grpc.PrimaryDataStoreDriverStub(a).ResizeVolume(resize)
            )
        )
        try:
            first.start()
            time.sleep(0.7)  # the resize holds the volume on replica 1
            error = rpc_error(driver_pb2_grpc.PrimaryDataStoreDriverStub(b).DeleteData, delete)
            first.join()
        finally:
            mgmt.stack.emulator.set_faults({})
    assert error.code() == grpc.StatusCode.ABORTED, error.details()
    assert "ResizeVolume" in error.details() and "replica" in error.details()
    assert isinstance(results["resize"], types_pb2.Volume)
    assert mgmt.api.volume(f"~{volume.global_id}").size == 128 * MIB  # the delete did nothing


def test_a_replica_killed_mid_copy_is_taken_over(mariadb: MariaDB, tmp_path: Path):
    args, url = shared_database(mariadb, tmp_path)
    with running_stack(tmp_path / "stack", management_args=args, replicas=3) as mgmt:
        store = SqlState(url, mariadb.password, replica="test")
        try:
            _killed_mid_copy(mgmt, store, tmp_path)
        finally:
            store.close()


def _live_work(mgmt: Mgmt, store: SqlState) -> tuple[str, threading.Event]:
    """A running operation of a live replica (its heartbeat kept fresh) with a temporary
    snapshot in StorPool tagged with it: the sweep must leave both alone."""
    live = new_id("live")
    name = f"operations/{live}"
    op = operations_pb2.Operation(name=name)
    op.metadata.Pack(
        types_pb2.OperationMetadata(kind="spcs/Test", state=types_pb2.JOB_STATE_RUNNING)
    )
    claim = store.operations.claim(name, "f", op, "replica-live", lambda _row: False)
    assert claim.claimed
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0):
            store.operations.beat("replica-live", {name: (claim.row.attempt, op)})

    threading.Thread(target=beat, daemon=True).start()
    source = mgmt.create_volume(4 * MIB)
    mgmt.api.snapshot_create(
        f"~{source.global_id}",
        name=names.temporary_snapshot_name(live),
        tags={"cs": names.CS_TEMPORARY, names.OPERATION_TAG: live},
    )
    return live, stop


def _killed_mid_copy(mgmt: Mgmt, store: SqlState, tmp: Path) -> None:
    volume, data = filled_volume(mgmt, 81)
    live, stop_live = _live_work(mgmt, store)
    op_id = new_id("op")
    request = export_request(mgmt, volume, op_id)
    victim = mgmt.stack.others[1]  # replica 3
    temporary = names.temporary_snapshot_name(op_id)
    mgmt.stack.emulator.set_faults({"delays": {"VolumesReassignWait": 4.0}})
    try:
        with grpc.insecure_channel(victim.address) as channel:
            driver_pb2_grpc.PrimaryDataStoreDriverStub(channel).CopyData(request)
        deadline = time.monotonic() + 20
        while not node_jobs(mgmt, op_id, running=True):
            assert time.monotonic() < deadline, "the node job did not start"
            time.sleep(0.05)
        assert temporary in mgmt.storpool_names()
        victim.popen.kill()
        killed = time.monotonic()
        victim.popen.wait()
    finally:
        mgmt.stack.emulator.set_faults({})
    name = f"operations/{op_id}"
    row = store.operations.row(name)
    assert row is not None and not row.operation.done  # still running: it only just died
    for n in (1, 2):
        with replica(mgmt, n) as channel:
            stub = operations_pb2_grpc.OperationsStub(channel)
            while True:
                op = stub.GetOperation(operations_pb2.GetOperationRequest(name=name))
                if op.done:
                    break
                assert time.monotonic() - killed < LEASE_SECONDS + 6, metadata(op)
                time.sleep(0.2)
            assert metadata(op).state == types_pb2.JOB_STATE_FAILED
            assert op.error.code == code_pb2.ABORTED
            assert "stopped answering while it ran" in op.error.message
            assert op.error.message.endswith("retry with the same operation id")
    deadline = time.monotonic() + 20
    while temporary in mgmt.storpool_names():
        assert time.monotonic() < deadline, "the dead replica's temporary was not swept"
        time.sleep(0.2)
    while node_jobs(mgmt, op_id, running=True):  # stopped by the takeover, or finished
        assert time.monotonic() < deadline, node_jobs(mgmt, op_id, running=True)
        time.sleep(0.2)
    # nothing of the live replica was touched
    assert names.temporary_snapshot_name(live) in mgmt.storpool_names()
    live_row = store.operations.row(f"operations/{live}")
    assert live_row is not None and not live_row.operation.done
    stop_live.set()
    # the same id, retried on another replica, succeeds with the bytes of the volume
    assert mgmt.driver.CopyData(request).name == name
    done = mgmt.wait(name)
    assert exported_bytes(mgmt, done, tmp) == data
    assert temporary not in mgmt.storpool_names()
    mgmt.api.snapshot_delete(names.temporary_snapshot_name(live))


def test_node_commands_reach_the_node_from_any_replica(region):
    """A node registered once is called by whichever replica runs the job."""
    mgmt, _ = region
    for n in (1, 2):
        with replica(mgmt, n) as channel:
            driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
            volume = driver.CreateVolume(
                driver_pb2.CreateVolumeRequest(
                    pool=mgmt.pool_ref(),
                    volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB),
                )
            )
            volume.store.CopyFrom(mgmt.primary())
            done = wait_on(
                channel,
                driver.CopyData(export_request(mgmt, volume, new_id("op"))).name,
            )
            assert not done.HasField("error"), done.error
            assert metadata(done).host_id in ("host-1", "host-2")


def test_a_replica_restarted_under_load_fails_only_calls_in_flight_to_it(
    mariadb: MariaDB, tmp_path: Path
):
    args, _ = shared_database(mariadb, tmp_path)
    with running_stack(tmp_path / "stack", management_args=args, replicas=3) as mgmt:
        addresses = [m.address for m in mgmt.stack.managements]
        stop = threading.Event()
        outcomes: list[tuple[str, int]] = []  # (first error code or "OK", attempts)
        made_ids: list[str] = []
        lock = threading.Lock()

        def caller() -> None:
            try:
                calls()
            except grpc.RpcError as error:  # a call that failed for good fails the test
                with lock:
                    outcomes.append((f"{error.code().name}: {error.details()}", 0))

        def calls() -> None:
            with balanced_channel(addresses) as channel:
                driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
                while not stop.is_set():
                    volume = types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB)
                    create = driver_pb2.CreateVolumeRequest(pool=mgmt.pool_ref(), volume=volume)
                    made, first, attempts = retried(driver.CreateVolume, create)
                    made.store.CopyFrom(mgmt.primary())
                    delete = driver_pb2.DeleteDataRequest(
                        pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=made)
                    )
                    _, again, more = retried(driver.DeleteData, delete)
                    with lock:
                        outcomes.append((first or again or "OK", attempts + more))
                        made_ids.append(made.global_id)

        callers = [threading.Thread(target=caller) for _ in range(4)]
        for thread in callers:
            thread.start()
        try:
            time.sleep(3)
            victim = mgmt.stack.others[0]  # replica 2
            port = victim.port
            victim.popen.terminate()  # drains what it runs, then exits
            assert victim.popen.wait(30) == 0
            time.sleep(2)
            back = mgmt.stack.restart_replica(2, port)
            restarted = back.log_path.read_text().count("rpc=/spcs.v1.")
            deadline = time.monotonic() + 30
            while back.log_path.read_text().count("rpc=/spcs.v1.PrimaryDataStoreDriver") <= (
                restarted
            ):
                assert time.monotonic() < deadline, "the restarted replica got no calls again"
                time.sleep(0.2)
            time.sleep(1)
        finally:
            stop.set()
            for thread in callers:
                thread.join(60)
        failed = [o for o in outcomes if o[0] != "OK"]
        assert len(outcomes) > 40, outcomes
        # the only failures are calls in flight to the stopping replica, and each was retried
        assert {code for code, _ in failed} <= {"UNAVAILABLE"}, failed
        assert len(failed) <= 8, failed
        left = {v.global_id for v in mgmt.api.volumes()} & set(made_ids)
        assert not left, left  # every volume made was deleted


def retried(call, request, attempts: int = 5):
    """(the answer, the code of the first failure or "", how many attempts): calls that fail
    UNAVAILABLE are sent again as they were, as a caller of an idempotent call does."""
    first = ""
    for attempt in range(1, attempts + 1):
        try:
            return call(request, timeout=20), first, attempt
        except grpc.RpcError as error:
            first = first or error.code().name
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def test_first_deploys_of_a_template_on_two_replicas_download_it_once(region, mariadb: MariaDB):
    mgmt, url = region
    template, raw = mgmt.template_on_secondary(231)
    requests = [
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(template=template),
            destination=volume_object(mgmt, 32 * MIB, vm_uuid=f"vm-{n}"),
        )
        for n in range(6)
    ]
    channels = [replica(mgmt, 1), replica(mgmt, 2)]
    barrier = threading.Barrier(len(requests))
    names_sent: list[str] = []

    def deploy(n: int) -> None:
        driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channels[n % 2])
        barrier.wait()
        names_sent.append(driver.CopyData(requests[n]).name)

    threads = [threading.Thread(target=deploy, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    volumes = []
    for n, name in enumerate(sorted(names_sent)):
        done = wait_on(channels[n % 2], name, timeout=120)
        assert done.done and not done.HasField("error"), done.error
        result = driver_pb2.CopyDataResult()
        assert done.response.Unpack(result)
        volumes.append(result.result.volume)
    jobs, _ = node_download_bytes(mgmt)
    assert jobs == 1  # one replica downloaded it; the others waited and cloned its snapshot
    rows = mariadb.rows(url.rsplit("/", 1)[1], "SELECT name, owner FROM operations")
    assert len({owner for name, owner in rows if name in names_sent}) == 2  # both ran deploys
    for volume in volumes[:2]:
        assert mgmt.read(volume.path)[: len(raw)] == raw
    for channel in channels:
        channel.close()
