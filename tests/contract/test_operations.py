"""google.longrunning.Operations as spcs uses it (CopyData and BackupSnapshot on management, the
agent commands on a node), and the Identity service of both servers."""

from __future__ import annotations

import os

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.v1 import driver_pb2, identity_pb2, identity_pb2_grpc, strategies_pb2, types_pb2
from tests.contract.conftest import Objects, Template
from tests.contract.harness import MIB, Contract, Resources, expect_error, new_id

ATTEMPTS = 5
SLOW_BYTES = 96 * MIB


def metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    assert op.metadata.Unpack(meta), op.metadata.type_url
    return meta


def clone_request(pool: str, snapshot: types_pb2.Snapshot) -> driver_pb2.CopyDataRequest:
    store = types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool))
    return driver_pb2.CopyDataRequest(
        operation_id=new_id("op"),
        source=types_pb2.DataObject(snapshot=types_pb2.Snapshot(path=snapshot.path, store=store)),
        destination=types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("vol"), store=store)),
    )


def test_operation_lifecycle(contract: Contract, res: Resources, objects: Objects):
    """Named after the caller's id, metadata while it runs and after, listed by done-ness, a
    cancel of a finished operation changes nothing, deleted once finished."""
    c = contract
    request = clone_request(objects.pool, objects.snapshot)
    res.volume(objects.pool, request.destination.volume)
    started = c.driver.CopyData(request)
    name = res.operation(started.name)
    assert name == f"operations/{request.operation_id}"
    meta = metadata(started)
    assert meta.kind == "spcs.v1.PrimaryDataStoreDriver/CopyData"
    assert meta.state in (
        types_pb2.JOB_STATE_PENDING,
        types_pb2.JOB_STATE_RUNNING,
        types_pb2.JOB_STATE_SUCCEEDED,
    )
    assert meta.create_time.seconds > 0
    done = c.wait(name)
    result = driver_pb2.CopyDataResult()
    assert done.done and done.response.Unpack(result) and not done.HasField("error")
    assert result.kind == "snapshot-to-volume"
    assert result.result.volume.uuid == request.destination.volume.uuid
    meta = metadata(done)
    assert (meta.state, meta.stage) == (types_pb2.JOB_STATE_SUCCEEDED, "done")
    assert meta.end_time.ToNanoseconds() >= meta.create_time.ToNanoseconds()
    assert c.operations.GetOperation(operations_pb2.GetOperationRequest(name=name)) == done

    def listed(filter_text: str) -> set[str]:
        ops = c.operations.ListOperations(
            operations_pb2.ListOperationsRequest(filter=filter_text, page_size=1000)
        ).operations
        return {op.name for op in ops}

    assert name in listed("") and name in listed("done=true") and name not in listed("done=false")
    page = c.operations.ListOperations(operations_pb2.ListOperationsRequest(page_size=1))
    assert len(page.operations) == 1
    if len(listed("")) > 1:
        assert page.next_page_token
        following = c.operations.ListOperations(
            operations_pb2.ListOperationsRequest(page_size=1, page_token=page.next_page_token)
        )
        assert following.operations[0].name != page.operations[0].name
    c.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
    assert c.operations.GetOperation(operations_pb2.GetOperationRequest(name=name)) == done
    c.operations.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name))
    for call, message in (
        (c.operations.GetOperation, operations_pb2.GetOperationRequest(name=name)),
        (c.operations.DeleteOperation, operations_pb2.DeleteOperationRequest(name=name)),
    ):
        expect_error(call, message, grpc.StatusCode.NOT_FOUND, name)


def test_failed_operation_carries_its_code_and_the_same_id_retries(
    contract: Contract, res: Resources, objects: Objects
):
    """A job that fails ends with its status code in `error`; nothing it created is left; the
    same id with the same arguments starts a new attempt."""
    c = contract
    before = c.inventory()
    store = types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=objects.pool))
    template_uuid = new_id("tmpl")
    request = driver_pb2.CopyDataRequest(
        operation_id=new_id("op"),
        source=types_pb2.DataObject(
            template=types_pb2.Template(
                uuid=template_uuid, path="template/tmpl/2/no-such-dir", store=c.secondary()
            )
        ),
        destination=types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("vol"), store=store)),
    )
    res.volume(objects.pool, request.destination.volume)
    res.template(objects.pool, template_uuid)
    name = res.operation(c.driver.CopyData(request).name)
    for _attempt in range(2):
        failed = c.wait(name)
        assert failed.error.code == grpc.StatusCode.NOT_FOUND.value[0], failed
        assert "no-such-dir" in failed.error.message
        assert metadata(failed).state == types_pb2.JOB_STATE_FAILED
        assert c.inventory() == before
        again = c.driver.CopyData(request)  # a new attempt under the same name
        assert again.name == name


def slow_snapshot(c: Contract, res: Resources, pool: str) -> types_pb2.Snapshot:
    """A snapshot of 96 MiB of random data: its zlib-compressed backup takes a while, longer
    than a cancel sent to another replica takes to reach the job (its owner's next beat, 1 s)."""
    primary = types_pb2.PrimaryStore(pool_uuid=pool)
    volume = types_pb2.Volume(uuid=new_id("vol"), size_bytes=SLOW_BYTES)
    res.volume(pool, volume)
    volume = c.driver.CreateVolume(driver_pb2.CreateVolumeRequest(pool=primary, volume=volume))
    c.driver.GrantAccess(
        driver_pb2.GrantAccessRequest(
            object=types_pb2.DataObject(
                volume=types_pb2.Volume(
                    path=volume.path, store=types_pb2.DataStore(primary=primary)
                )
            ),
            host_id="host-1",
        )
    )
    c.write(1, volume.path, 0, os.urandom(SLOW_BYTES))
    snapshot = types_pb2.Snapshot(uuid=new_id("snap"), volume_path=volume.path)
    res.snapshot(pool, snapshot)
    return c.driver.TakeSnapshot(driver_pb2.TakeSnapshotRequest(pool=primary, snapshot=snapshot))


def start_backup(
    c: Contract, res: Resources, pool: str, snapshot: types_pb2.Snapshot, relative: str
) -> str:
    res.file(c.stack.secondary / relative)
    started = c.snapshots.BackupSnapshot(
        strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot=snapshot,
            pool=types_pb2.PrimaryStore(pool_uuid=pool),
            destination=types_pb2.SecondaryStore(url=c.secondary_url),
            destination_path=relative,
            compression=types_pb2.COMPRESSION_ZLIB,
        )
    )
    return res.operation(started.name)


def test_cancel_a_running_backup(contract: Contract, res: Resources, objects: Objects):
    """A cancelled copy ends CANCELLED and leaves no file on secondary storage."""
    c = contract
    snapshot = slow_snapshot(c, res, objects.pool)
    outcomes = []
    for attempt in range(ATTEMPTS):
        relative = f"snapshots/1/4/{snapshot.uuid}-{attempt}"
        name = start_backup(c, res, objects.pool, snapshot, relative)
        c.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
        done = c.wait(name)
        state = metadata(done).state
        outcomes.append(types_pb2.JobState.Name(state))
        file = c.stack.secondary / relative
        if state == types_pb2.JOB_STATE_SUCCEEDED:  # it ended before the cancel arrived
            assert file.exists()
            continue
        assert state == types_pb2.JOB_STATE_CANCELLED, done
        assert done.error.code == grpc.StatusCode.CANCELLED.value[0], done
        assert not file.exists()
        # no partial file either (a cancel that arrives first leaves not even the directory)
        partials = file.parent.iterdir() if file.parent.exists() else iter(())
        assert not any(p.name.startswith(f".{file.name}") for p in partials)
        break
    else:
        pytest.fail(f"no backup was cancelled in {ATTEMPTS} tries: {outcomes}")


def test_wait_returns_by_the_callers_deadline(contract: Contract, res: Resources, objects: Objects):
    """WaitOperation answers before the caller's deadline, with the operation not done yet,
    even when that deadline is closer than the server's 0.5 s margin."""
    c = contract
    snapshot = slow_snapshot(c, res, objects.pool)
    for attempt in range(ATTEMPTS):
        name = start_backup(c, res, objects.pool, snapshot, f"snapshots/1/5/{attempt}")
        try:
            op = c.operations.WaitOperation(
                operations_pb2.WaitOperationRequest(name=name), timeout=0.45
            )
        except grpc.RpcError as error:
            pytest.fail(f"expected the operation back before the deadline: {error.code().name}")
        c.wait(name)
        if not op.done:  # it was still running: the reply came by the deadline
            break
    else:
        pytest.fail(f"the backup always ended within 0.45 s ({ATTEMPTS} tries)")


@pytest.mark.parametrize("where", ["management", "node"])
def test_identity(contract: Contract, where: str):
    channel = contract.nodes[0] if where == "node" else contract.management
    identity = identity_pb2_grpc.IdentityStub(channel)
    info = identity.GetInfo(identity_pb2.GetInfoRequest())
    assert (info.name, info.api) == (f"spcs-{where}", "spcs.v1") and info.version
    assert info.storpool_cluster_id == "emu.a"
    if where == "node":
        assert (info.host_id, info.storpool_client_id) == ("host-1", 1)
        assert info.datamover_version
    else:
        assert (info.host_id, info.storpool_client_id) == ("", 0)
    probe = identity.Probe(identity_pb2.ProbeRequest())
    assert probe.ready, probe.message


def test_template_copy_is_reported_per_node(
    contract: Contract, res: Resources, objects: Objects, template: Template
):
    """A copy that moves bytes names the node that ran it, in the result and in the metadata;
    the node's own operation is finished and listed there."""
    c = contract
    store = types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=objects.pool))
    template_uuid = new_id("tmpl")
    request = driver_pb2.CopyDataRequest(
        operation_id=new_id("op"),
        source=types_pb2.DataObject(
            template=types_pb2.Template(
                uuid=template_uuid, path=template.install_path, store=c.secondary()
            )
        ),
        destination=types_pb2.DataObject(
            template=types_pb2.Template(uuid=template_uuid, store=store)
        ),
        options=driver_pb2.CopyOptions(host_id="host-2"),
    )
    res.template(objects.pool, template_uuid)
    name = res.operation(c.driver.CopyData(request).name)
    result = c.succeeded(name, driver_pb2.CopyDataResult())
    assert (result.kind, result.host_id) == ("template-to-primary", "host-2")
    assert result.bytes_written > 0
    assert result.result.template.size_bytes == template.virtual_size
    node_ops = (
        c.node_operations(2)
        .ListOperations(operations_pb2.ListOperationsRequest(filter="done=true", page_size=1000))
        .operations
    )
    mine = [op for op in node_ops if op.name.startswith(f"operations/{request.operation_id}.")]
    assert len(mine) == 1 and metadata(mine[0]).kind == "spcs.v1.AgentCommands/DownloadTemplate"
    assert metadata(mine[0]).host_id == "host-2"
