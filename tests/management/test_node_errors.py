"""A node's error reaches management's caller as the same error: status code and the
`ErrorInfo.reason` survive the node → management hop, for a plain call and for a node job
followed by a management job. The node here is a real gRPC server in this process whose
handlers fail the way a node's do when StorPool refuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.common import errors
from spcs.common.operations import JobContext, OperationRegistry, OperationsServicer
from spcs.common.server import bind, bind_operations
from spcs.management.nodecalls import NodeCalls
from spcs.management.nodes import NodeDirectory
from spcs.management.pool_url import Connection
from spcs.management.sql_state import SqlState
from spcs.management.state import PoolRecord
from spcs.storpool import errors as sp_errors
from spcs.v1 import lifecycle_pb2, node_pb2, node_pb2_grpc
from tests.stacks import serving

pytestmark = pytest.mark.fast

GONE = sp_errors.StorPoolNotFound(
    "StorPool: volume ~a.b.c: no such volume (objectDoesNotExist)",
    sp_name="objectDoesNotExist",
    sp_desc="no such volume",
)


class FailingAdaptor(node_pb2_grpc.StorageAdaptorServicer):
    def ConnectPhysicalDisk(
        self, request: node_pb2.ConnectPhysicalDiskRequest, context: grpc.ServicerContext
    ) -> node_pb2.PhysicalDisk:
        raise GONE


class FailingCommands(node_pb2_grpc.AgentCommandsServicer):
    def __init__(self, registry: OperationRegistry) -> None:
        self.registry = registry

    def BackupSnapshot(
        self, request: node_pb2.NodeBackupSnapshotRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        def run(ctx: JobContext) -> node_pb2.BackupResult:
            raise sp_errors.StorPoolBusy(
                "StorPool: snapshot ~a.b.d: it is being moved (busy)",
                sp_name="busy",
                sp_desc="it is being moved",
            )

        return self.registry.start(
            request.operation_id, kind="k", fingerprint="f", target="t", runner=run
        )


@pytest.fixture
def calls(tmp_path: Path) -> Iterator[NodeCalls]:
    registry = OperationRegistry(host_id="host-1")
    bindings = [
        bind(node_pb2, node_pb2_grpc, "StorageAdaptor", FailingAdaptor()),
        bind(node_pb2, node_pb2_grpc, "AgentCommands", FailingCommands(registry)),
        bind_operations(OperationsServicer(registry)),
    ]
    store = SqlState(tmp_path / "m.db")
    nodes = NodeDirectory(store)
    with serving("fake-node", bindings) as address:
        nodes.register("host-1", address, 1, "emu.a", "test")
        yield NodeCalls(nodes, retry_seconds=2)
    nodes.close()
    store.close()


def test_a_call_keeps_the_node_s_status_and_reason(calls: NodeCalls):
    with pytest.raises(errors.NotFound) as failed:
        calls.adaptor(
            "host-1",
            "attach",
            lambda s: s.ConnectPhysicalDisk,
            node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path="/dev/x")),
        )
    assert failed.value.reason == "STORPOOL_OBJECT_DOES_NOT_EXIST"
    assert "host-1" in failed.value.message and "no such volume" in failed.value.message


def test_a_node_job_s_failure_keeps_its_reason_in_management_s_operation(calls: NodeCalls):
    pool = PoolRecord(
        uuid="p1",
        name="p1",
        zone_id="z",
        scope=lifecycle_pb2.POOL_SCOPE_ZONE,
        state=lifecycle_pb2.POOL_STATE_UP,
        conn=Connection("h", 1, "t", "tpl", "storpool-url"),
        capacity_bytes=1,
        capacity_iops=0,
        used_bytes=0,
        tags=[],
        details={},
        hypervisor="KVM",
        cluster_id="",
        pod_id="",
        fingerprint="",
    )
    management = OperationRegistry()

    def follow(ctx: JobContext) -> node_pb2.BackupResult:
        result, _host = calls.run_job(
            ctx,
            pool,
            "host-1",
            lambda s: s.BackupSnapshot,
            node_pb2.NodeBackupSnapshotRequest(operation_id="node-op"),
            node_pb2.BackupResult(),
            "backing up",
        )
        return result

    management.start("mgmt-op", kind="k", fingerprint="f", target="t", runner=follow)
    deadline = time.monotonic() + 10
    while not (op := management.get("operations/mgmt-op")).done:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert errors.reason_of(op.error) == "STORPOOL_BUSY"
    assert "being moved" in op.error.message and "host-1" in op.error.message
