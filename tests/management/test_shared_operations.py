"""Operations that belong to the region (`SharedOperations` on the `operations` table): two
registries on one database (SQLite file and MariaDB) act as two replicas, each serving the
google.longrunning.Operations API over gRPC; the assertions read what the other replica and the
table then say."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from spcs.common import errors
from spcs.common.holds import EXCLUSIVE, Hold
from spcs.common.locks import KeyedLocks
from spcs.common.operations import JobContext, OperationsServicer
from spcs.common.server import bind_operations
from spcs.management.shared_operations import SharedOperations
from spcs.management.sql_state import SqlState
from spcs.management.state import OperationRow
from spcs.v1 import node_pb2, types_pb2
from tests.stacks import MariaDB, serving

KIND = "test/Copy"


@dataclass
class Replica:
    store: SqlState
    ops: SharedOperations
    stub: operations_pb2_grpc.OperationsStub


@pytest.fixture(params=["sqlite", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}", None
    server: MariaDB = request.getfixturevalue("mariadb")
    return server.new_database(), server.password


@contextmanager
def _replica(database: tuple[str, str | None], owner: str, stale: float) -> Iterator[Replica]:
    """A registry as `owner` on the database, serving the Operations API over gRPC."""
    store = SqlState(*database, replica=owner)
    ops = SharedOperations(
        store.operations,
        owner=owner,
        service_name="spcs-management",
        locks=KeyedLocks(),
        stale_seconds=stale,
    )
    try:
        with (
            serving(owner, [bind_operations(OperationsServicer(ops))]) as address,
            grpc.insecure_channel(address) as channel,
        ):
            yield Replica(store, ops, operations_pb2_grpc.OperationsStub(channel))
    finally:
        ops.stop()
        store.close()


@pytest.fixture
def region(database: tuple[str, str | None]) -> Iterator[tuple[Replica, Replica]]:
    """Replicas a and b on one database; b considers an owner dead after 1 s without a beat."""
    with _replica(database, "replica-a", 15.0) as a, _replica(database, "replica-b", 1.0) as b:
        yield a, b


def meta(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    m = types_pb2.OperationMetadata()
    assert op.metadata.Unpack(m)
    return m


class Gate:
    """A job that counts its runs, reports progress and waits until it is let go (or
    cancelled); it fails when `fail` is set."""

    def __init__(self) -> None:
        self.runs = 0
        self.go = threading.Event()
        self.started = threading.Event()
        self.fail = False
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext) -> node_pb2.BackupResult:
        with self._lock:
            self.runs += 1
        ctx.stage("copying")
        ctx.progress(300, 1000)
        ctx.on_cancel(self.go.set)
        self.started.set()
        self.go.wait(20)
        ctx.check_cancelled()
        if self.fail:
            raise errors.Unavailable("the node went away")
        ctx.progress(1000)
        return node_pb2.BackupResult(path="snap/1", bytes_written=1000)


def start(replica: Replica, gate: Gate, op_id: str = "op-1", fingerprint: str = "f1", **kw):
    return replica.ops.start(
        op_id, kind=KIND, fingerprint=fingerprint, target="/dev/x", runner=gate, **kw
    )


def wait_done(stub: operations_pb2_grpc.OperationsStub, name: str) -> operations_pb2.Operation:
    deadline = time.monotonic() + 20
    while True:
        op = stub.WaitOperation(
            operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=5))
        )
        if op.done:
            return op
        assert time.monotonic() < deadline, op


def test_the_same_id_on_two_replicas_at_once_runs_once(region):
    a, b = region
    gate = Gate()
    barrier = threading.Barrier(2)
    answers: dict[str, operations_pb2.Operation] = {}

    def on(replica: Replica, who: str) -> None:
        barrier.wait()
        answers[who] = start(replica, gate)

    threads = [threading.Thread(target=on, args=(r, w)) for r, w in ((a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gate.started.wait(10)
    assert {op.name for op in answers.values()} == {"operations/op-1"}
    time.sleep(0.3)
    assert gate.runs == 1
    row = a.store.operations.row("operations/op-1")
    assert row is not None and row.owner in ("replica-a", "replica-b") and row.attempt == 1
    # a replay on either replica returns the running operation and starts nothing
    for replica in (a, b):
        assert not start(replica, gate).done
    gate.go.set()
    for replica in (a, b):
        done = wait_done(replica.stub, "operations/op-1")
        assert meta(done).state == types_pb2.JOB_STATE_SUCCEEDED
        result = node_pb2.BackupResult()
        assert done.response.Unpack(result) and result.bytes_written == 1000
    assert gate.runs == 1


def test_other_arguments_on_another_replica_are_already_exists(region):
    a, b = region
    gate = Gate()
    start(a, gate)
    with pytest.raises(errors.AlreadyExists, match=r"operations/op-1 already exists with diff"):
        start(b, gate, fingerprint="other")
    gate.go.set()
    wait_done(a.stub, "operations/op-1")
    with pytest.raises(errors.AlreadyExists):  # a finished one too
        start(b, gate, fingerprint="other")


def test_get_list_and_wait_answer_the_same_on_every_replica(region):
    a, b = region
    gate = Gate()
    a.ops.serve()  # beats: the other replica sees the progress
    start(a, gate)
    assert gate.started.wait(10)
    deadline = time.monotonic() + 5
    while (
        meta(
            b.stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/op-1"))
        ).bytes_done
        != 300
    ):
        assert time.monotonic() < deadline, "the progress did not reach the other replica"
        time.sleep(0.1)
    seen = meta(b.stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/op-1")))
    assert (seen.state, seen.stage, seen.bytes_total) == (
        types_pb2.JOB_STATE_RUNNING,
        "copying",
        1000,
    )
    listed = b.stub.ListOperations(operations_pb2.ListOperationsRequest(filter="done=false"))
    assert [op.name for op in listed.operations] == ["operations/op-1"]
    waited = b.stub.WaitOperation(
        operations_pb2.WaitOperationRequest(
            name="operations/op-1", timeout=duration_pb2.Duration(nanos=300_000_000)
        )
    )
    assert not waited.done  # the timeout passed while it ran
    threading.Timer(0.5, gate.go.set).start()
    started = time.monotonic()
    done = wait_done(b.stub, "operations/op-1")
    assert meta(done).state == types_pb2.JOB_STATE_SUCCEEDED and time.monotonic() - started < 3
    listed = b.stub.ListOperations(operations_pb2.ListOperationsRequest(filter="done=true"))
    assert [op.name for op in listed.operations] == ["operations/op-1"]
    with pytest.raises(grpc.RpcError) as missing:
        b.stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "operation 'operations/nope' is not known in this region" in missing.value.details()


def test_a_cancel_on_one_replica_stops_the_job_on_the_other(region):
    a, b = region
    gate = Gate()
    a.ops.serve()
    start(a, gate)
    assert gate.started.wait(10)
    asked = time.monotonic()
    b.stub.CancelOperation(operations_pb2.CancelOperationRequest(name="operations/op-1"))
    done = wait_done(b.stub, "operations/op-1")
    assert time.monotonic() - asked < 2.5
    assert meta(done).state == types_pb2.JOB_STATE_CANCELLED
    assert done.error.code == code_pb2.CANCELLED
    with pytest.raises(grpc.RpcError) as missing:
        b.stub.CancelOperation(operations_pb2.CancelOperationRequest(name="operations/nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_retry_after_a_failure_runs_once_whichever_replicas_it_reaches(region):
    a, b = region
    gate = Gate()
    gate.fail = True
    gate.go.set()
    start(a, gate)
    failed = wait_done(a.stub, "operations/op-1")
    assert meta(failed).state == types_pb2.JOB_STATE_FAILED
    retry = Gate()
    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(target=lambda r=r: (barrier.wait(), start(r, retry))) for r in (a, b)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert retry.started.wait(10)
    time.sleep(0.3)
    assert retry.runs == 1
    row = b.store.operations.row("operations/op-1")
    assert row is not None and row.attempt == 2 and not row.operation.done
    retry.go.set()
    assert meta(wait_done(b.stub, "operations/op-1")).state == types_pb2.JOB_STATE_SUCCEEDED


def test_a_hold_conflict_leaves_no_operation_behind(region):
    a, b = region
    key = Hold("storpool:gid-1", EXCLUSIVE)
    release = a.ops.locks.acquire([key], "DeleteVolume")
    with pytest.raises(errors.Conflict):
        start(a, Gate(), holds=[key])
    with pytest.raises(grpc.RpcError) as missing:
        b.stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/op-1"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # a retry of a failed one that conflicts keeps the failed attempt as it was
    failing = Gate()
    failing.fail = True
    failing.go.set()
    start(a, failing, "op-2")
    wait_done(a.stub, "operations/op-2")
    with pytest.raises(errors.Conflict):
        start(a, Gate(), "op-2", holds=[key])
    row = b.store.operations.row("operations/op-2")
    assert row is not None and row.attempt == 1
    assert meta(row.operation).state == types_pb2.JOB_STATE_FAILED
    release()
    assert start(a, Gate(), "op-3", holds=[key]).name == "operations/op-3"


def test_a_dead_replica_s_operations_are_taken_over(region):
    a, b = region
    gate = Gate()
    start(a, gate)  # a never beats: as if it had died once the job started
    assert gate.started.wait(10)
    taken: list[list[OperationRow]] = []
    b.ops.on_take_over(taken.append)
    assert b.ops.take_over() == []  # not stale yet
    time.sleep(1.3)
    (row,) = b.ops.take_over()
    assert row.name == "operations/op-1" and row.owner == "replica-a" and taken == [[row]]
    op = b.stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/op-1"))
    assert meta(op).state == types_pb2.JOB_STATE_FAILED and op.error.code == code_pb2.ABORTED
    assert op.error.message == (
        "operations/op-1 was interrupted: replica replica-a of spcs-management stopped "
        "answering while it ran (stage copying); retry with the same operation id"
    )
    # a, alive after all, learns at its next beat that the operation is no longer its own
    a.ops.beat()
    assert gate.go.is_set()  # its job was cancelled
    # the retry on b runs it anew
    retry = Gate()
    retry.go.set()
    start(b, retry)
    assert meta(wait_done(b.stub, "operations/op-1")).state == types_pb2.JOB_STATE_SUCCEEDED
    assert retry.runs == 1
    # the stopped job of a wrote nothing over b's attempt
    time.sleep(0.3)
    assert meta(b.ops.get("operations/op-1")).state == types_pb2.JOB_STATE_SUCCEEDED


def test_a_dead_replica_s_operation_being_cancelled_ends_cancelled(region):
    a, b = region
    gate = Gate()
    start(a, gate)
    assert gate.started.wait(10)
    b.stub.CancelOperation(operations_pb2.CancelOperationRequest(name="operations/op-1"))
    time.sleep(1.3)  # a does not beat, so it never saw the cancel
    (row,) = b.ops.take_over()
    assert row.cancel
    op = b.ops.get("operations/op-1")
    assert meta(op).state == types_pb2.JOB_STATE_CANCELLED and op.error.code == code_pb2.CANCELLED


def test_delete_works_from_any_replica_once_finished(region):
    a, b = region
    gate = Gate()
    start(a, gate)
    assert gate.started.wait(10)
    with pytest.raises(grpc.RpcError) as running:
        b.stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name="operations/op-1"))
    assert running.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    gate.go.set()
    wait_done(a.stub, "operations/op-1")
    b.stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name="operations/op-1"))
    assert a.store.operations.row("operations/op-1") is None


def test_on_sqlite_a_restart_ends_what_ran_before(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = SqlState(url, replica="first")
    first = SharedOperations(
        store.operations, owner="first", service_name="spcs-management", locks=KeyedLocks()
    )
    gate = Gate()
    first.start("op-1", kind=KIND, fingerprint="f", target="/dev/x", runner=gate)
    assert gate.started.wait(10)
    again = SqlState(url, replica="second")  # the process restarted: the file is all it has
    second = SharedOperations(
        again.operations,
        owner="second",
        service_name="spcs-management",
        locks=KeyedLocks(),
        alone=True,
    )
    op = second.get("operations/op-1")
    assert meta(op).state == types_pb2.JOB_STATE_FAILED
    assert "spcs-management restarted while it ran (stage copying)" in op.error.message
    gate.go.set()
    store.close()
    again.close()


def test_finished_operations_beyond_the_newest_are_pruned(region):
    a, _ = region
    for n in range(5):
        gate = Gate()
        gate.go.set()
        start(a, gate, f"op-{n}")
        wait_done(a.stub, f"operations/op-{n}")
        time.sleep(0.01)
    assert a.store.operations.prune(2) == 3
    names = [row.name for row in a.store.operations.page(None, 0, 10)]
    assert names == ["operations/op-3", "operations/op-4"]


def test_a_beat_never_makes_a_finished_operation_running_again(region):
    """The beat reads a job's state, the job ends and records it, then the beat writes what it
    read: the operation stays finished (else it would read running until taken over)."""
    a, b = region
    gate = Gate()
    start(a, gate)
    assert gate.started.wait(10)
    with a.ops._lock:
        attempt = a.ops._attempts["operations/op-1"]
        stale = a.ops._jobs["operations/op-1"].operation()
    gate.go.set()
    done = wait_done(a.stub, "operations/op-1")
    lost, _ = a.store.operations.beat("replica-a", {"operations/op-1": (attempt, stale)})
    assert lost == {"operations/op-1"}
    row = b.store.operations.row("operations/op-1")
    assert row is not None and row.operation == done
    assert meta(row.operation).state == types_pb2.JOB_STATE_SUCCEEDED
