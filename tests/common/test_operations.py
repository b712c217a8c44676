"""Long-running operations over the real google.longrunning.Operations service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from spcs.common import errors
from spcs.common.operations import JobContext, OperationRegistry, OperationsServicer
from spcs.common.server import bind_operations
from spcs.management.sql_state import SqlState
from spcs.v1 import node_pb2, types_pb2
from tests.stacks import serving

pytestmark = pytest.mark.fast


@pytest.fixture
def registry_and_stub() -> Iterator[tuple[OperationRegistry, operations_pb2_grpc.OperationsStub]]:
    registry = OperationRegistry(host_id="h1", max_running=2)
    with (
        serving("test", [bind_operations(OperationsServicer(registry))]) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield registry, operations_pb2_grpc.OperationsStub(channel)


def metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    assert op.metadata.Unpack(meta)
    return meta


def gated_runner(gate: threading.Event, total: int = 1000):
    def run(ctx: JobContext) -> node_pb2.BackupResult:
        ctx.stage("copying")
        ctx.progress(0, total)
        ctx.on_cancel(gate.set)
        ctx.progress(total // 2)
        gate.wait(10)
        ctx.check_cancelled()
        ctx.progress(total)
        return node_pb2.BackupResult(path="snap/1", bytes_written=total)

    return run


def test_job_progress_result_and_replay(registry_and_stub):
    registry, stub = registry_and_stub
    gate = threading.Event()
    op = registry.start(
        "op-1", kind="test/Copy", fingerprint="a", target="/dev/x", runner=gated_runner(gate)
    )
    assert op.name == "operations/op-1" and not op.done
    deadline = time.monotonic() + 5
    while (
        metadata(stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))).bytes_done
        != 500
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    running = stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    meta = metadata(running)
    assert (meta.state, meta.stage, meta.bytes_total, meta.host_id, meta.target) == (
        types_pb2.JOB_STATE_RUNNING,
        "copying",
        1000,
        "h1",
        "/dev/x",
    )
    # replay with the same arguments: the same job, not a second one
    assert (
        registry.start(
            "op-1", kind="test/Copy", fingerprint="a", target="/dev/x", runner=gated_runner(gate)
        ).name
        == op.name
    )
    with pytest.raises(errors.AlreadyExists):
        registry.start(
            "op-1", kind="test/Copy", fingerprint="b", target="/dev/x", runner=gated_runner(gate)
        )
    gate.set()
    done = stub.WaitOperation(
        operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=5))
    )
    assert done.done and metadata(done).state == types_pb2.JOB_STATE_SUCCEEDED
    result = node_pb2.BackupResult()
    assert done.response.Unpack(result) and result.path == "snap/1"
    listed = stub.ListOperations(operations_pb2.ListOperationsRequest(filter="done=true"))
    assert [o.name for o in listed.operations] == ["operations/op-1"]
    stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_then_retry_with_same_id(registry_and_stub):
    registry, stub = registry_and_stub
    gate = threading.Event()
    op = registry.start("op-c", kind="k", fingerprint="f", target="t", runner=gated_runner(gate))
    with pytest.raises(grpc.RpcError) as busy:
        stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    done = stub.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name))
    assert metadata(done).state == types_pb2.JOB_STATE_CANCELLED
    assert done.error.code == grpc.StatusCode.CANCELLED.value[0]
    # the same id after a cancellation starts a new attempt
    again = registry.start(
        "op-c", kind="k", fingerprint="f", target="t", runner=gated_runner(threading.Event())
    )
    assert not again.done
    stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    registry.wait(op.name, 5)


def test_failure_status_and_slot_limit(registry_and_stub):
    registry, _ = registry_and_stub

    def fail(ctx: JobContext):
        raise errors.ResourceExhausted("secondary store /mnt/x is full; free space and retry")

    def crash(ctx: JobContext):
        raise ZeroDivisionError("bug")

    registry.start("op-f", kind="k", fingerprint="f", target="t", runner=fail)
    registry.start("op-x", kind="k", fingerprint="f", target="t", runner=crash)
    failed = registry.wait("operations/op-f", 5)
    assert failed.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "is full" in failed.error.message
    crashed = registry.wait("operations/op-x", 5)
    assert crashed.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "ZeroDivision" not in crashed.error.message
    gates = [threading.Event(), threading.Event()]
    for n, gate in enumerate(gates):
        registry.start(
            f"slot-{n}", kind="k", fingerprint="f", target="t", runner=gated_runner(gate)
        )
    with pytest.raises(errors.ResourceExhausted) as full:
        registry.start(
            "slot-2", kind="k", fingerprint="f", target="t", runner=gated_runner(threading.Event())
        )
    assert "limit 2" in full.value.message
    for gate in gates:
        gate.set()
    with pytest.raises(errors.InvalidArgument):
        registry.start("bad id/with slash", kind="k", fingerprint="f", target="t", runner=fail)


def test_journal_survives_restart_and_marks_interrupted_jobs(tmp_path: Path):
    store = SqlState(tmp_path / "m.db")
    first = OperationRegistry(journal=store.journal)
    first.start(
        "finished",
        kind="k",
        fingerprint="f",
        target="t",
        runner=lambda ctx: node_pb2.BackupResult(path="done"),
    )
    first.wait("operations/finished", 5)
    hang = threading.Event()
    first.start("inflight", kind="k", fingerprint="f", target="t", runner=gated_runner(hang))
    time.sleep(0.2)
    # a new registry over the same database = the service restarted
    second = OperationRegistry(journal=store.journal, service_name="spcs-management")
    finished = second.get("operations/finished")
    result = node_pb2.BackupResult()
    assert finished.done and finished.response.Unpack(result) and result.path == "done"
    interrupted = second.get("operations/inflight")
    assert interrupted.done and "interrupted" in interrupted.error.message
    assert metadata(interrupted).state == types_pb2.JOB_STATE_FAILED
    hang.set()
    first.wait("operations/inflight", 5)
    store.close()
