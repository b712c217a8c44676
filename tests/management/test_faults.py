"""The management service under faults: nodes gone, StorPool hiccups, killed mid-job."""

from __future__ import annotations

import signal
import time

import grpc

from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error


def test_storpool_hiccups_are_ridden_out_and_outages_reported(mgmt: Mgmt):
    emu = mgmt.stack.emulator
    emu.set_faults({"transientRate": 0.3, "seed": 3})
    try:
        volume = mgmt.create_volume(4 * MIB)
        snapshot = mgmt.take_snapshot(volume.path)
    finally:
        emu.set_faults({})
    assert mgmt.api.snapshot(f"~{snapshot.global_id}").on_volume == f"cs-vol-{volume.uuid}"
    before = mgmt.storpool_names()
    emu.set_faults({"transientRate": 1.0})
    try:
        down = rpc_error(mgmt.create_volume, 4 * MIB)
    finally:
        emu.set_faults({})
    assert down.code() == grpc.StatusCode.UNAVAILABLE and "transient" in down.details()
    assert mgmt.storpool_names() == before


def test_wrong_token_on_update_is_refused(mgmt: Mgmt):
    refused = rpc_error(
        mgmt.lifecycle.UpdatePool,
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=mgmt.pool_uuid, url=mgmt.pool_url(token="not-the-token")
        ),
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not-the-token" not in refused.details()
    assert mgmt.create_volume(MIB).path  # the pool still works with its old token


def test_nodes_unreachable(fresh: Mgmt):
    template, _ = fresh.template_on_secondary(211, size=8 * MIB)
    for node in fresh.stack.nodes:
        node.popen.send_signal(signal.SIGTERM)
        node.popen.wait(20)
    before = fresh.storpool_names()
    op = fresh.driver.CopyData(
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(template=template),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB, store=fresh.primary())
            ),
        )
    )
    failed = fresh.wait(op.name)
    assert failed.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "unreachable" in failed.error.message and "host-" in failed.error.message
    assert fresh.storpool_names() == before  # the download volume was removed
    volume = fresh.create_volume(MIB)
    grant = rpc_error(
        fresh.driver.GrantAccess,
        driver_pb2.GrantAccessRequest(object=types_pb2.DataObject(volume=volume), host_id="host-1"),
    )
    assert grant.code() == grpc.StatusCode.UNAVAILABLE and "host-1" in grant.details()


def test_management_killed_mid_job_then_restarted(fresh: Mgmt):
    template, raw = fresh.template_on_secondary(212, size=16 * MIB)
    # hold the job between the download and the snapshot, then kill the service there
    fresh.stack.emulator.set_faults({"delays": {"VolumeSnapshot": 30}})
    request = driver_pb2.CopyDataRequest(
        operation_id=new_id("op"),
        source=types_pb2.DataObject(template=template),
        destination=types_pb2.DataObject(
            volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB, store=fresh.primary())
        ),
    )
    op = fresh.driver.CopyData(request)
    deadline = time.monotonic() + 60
    while not any(n.startswith("cs-tmpldl-") for n in fresh.storpool_names()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    assert fresh.stack.management is not None
    fresh.stack.management.popen.send_signal(signal.SIGKILL)
    fresh.stack.management.popen.wait(10)
    fresh.stack.emulator.set_faults({})
    fresh.stack.restart_management()
    fresh.channel.close()
    fresh.channel = grpc.insecure_channel(fresh.stack.management.address)
    interrupted = fresh.wait(op.name, timeout=10)
    assert interrupted.done and "interrupted" in interrupted.error.message
    deadline = time.monotonic() + 30  # the restart sweep removes what the job left
    while any(n.startswith(("cs-tmpldl-", "cs-tmpsnap-")) for n in fresh.storpool_names()):
        assert time.monotonic() < deadline, fresh.storpool_names()
        time.sleep(0.2)
    # the same operation id again: a new attempt that finishes
    retry = fresh.driver.CopyData(request)
    done = fresh.wait(retry.name)
    assert not done.HasField("error"), done.error
    result = driver_pb2.CopyDataResult()
    done.response.Unpack(result)
    assert fresh.read(result.result.volume.path) == raw


def test_probe_checks_the_pools_storpool(mgmt: Mgmt):
    from spcs.v1 import identity_pb2, identity_pb2_grpc

    identity = identity_pb2_grpc.IdentityStub(mgmt.channel)
    reply = identity.Probe(identity_pb2.ProbeRequest())
    assert reply.ready and mgmt.pool_uuid in reply.message
    emu = mgmt.stack.emulator
    port = emu.port
    emu.stop()
    try:
        started = time.monotonic()
        down = rpc_error(identity.Probe, identity_pb2.ProbeRequest(), timeout=60)
        assert down.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert mgmt.pool_uuid in down.details() and "unreachable" in down.details()
        assert time.monotonic() - started < 10  # a probe answers quickly
    finally:
        emu.start(port=port)
