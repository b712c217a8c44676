"""Two management replicas on one MariaDB: what one replica changes or holds, the other sees.

A hold is a lease in the shared database (`management/leases.py`), so a conflicting call on
either replica is ABORTED naming the holder and its replica; a dead replica's lease expires and
frees the object; a pool put in maintenance through one replica takes no volumes through the
other (no per-process pool records)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from spcs.common import holds
from spcs.common.holds import EXCLUSIVE, Hold
from spcs.management.sql_state import SqlState
from spcs.v1 import driver_pb2, driver_pb2_grpc, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error, running_stack
from tests.stacks import MariaDB, Service, start_service


@dataclass
class Replicas:
    a: Mgmt  # the stack's management service
    b: driver_pb2_grpc.PrimaryDataStoreDriverStub  # a second replica on the same database
    b_channel: grpc.Channel
    store: SqlState  # the shared database, as a third party sees it


@pytest.fixture
def replicas(mariadb: MariaDB, tmp_path: Path) -> Iterator[Replicas]:
    url = mariadb.new_database()
    password = tmp_path / "database.password"
    password.write_text(mariadb.password)
    password.chmod(0o600)
    shared = ["--database-url", url, "--database-password-file", str(password)]
    with running_stack(tmp_path / "stack", management_args=shared) as a:
        workdir = a.stack.workdir
        b: Service = start_service(
            ["management", "--storpool-conf", str(workdir / "storpool.conf"), *shared],
            workdir,
            "mgmt-b",
        )
        channel = grpc.insecure_channel(b.address)
        store = SqlState(url, mariadb.password, replica="test")
        try:
            yield Replicas(a, driver_pb2_grpc.PrimaryDataStoreDriverStub(channel), channel, store)
        finally:
            store.close()
            channel.close()
            assert b.terminate() == 0


def _resize(r: Replicas, volume: types_pb2.Volume, size: int) -> driver_pb2.ResizeVolumeRequest:
    return driver_pb2.ResizeVolumeRequest(
        pool=r.a.pool_ref(), volume=types_pb2.Volume(path=volume.path), new_size_bytes=size
    )


def test_a_hold_on_one_replica_conflicts_on_every_replica(replicas: Replicas):
    r = replicas
    volume = r.a.create_volume(64 * MIB)
    key = holds.storpool_object(volume.global_id)
    lease = r.store.take_leases(
        [Hold(key, EXCLUSIVE)], owner="replica-x", label="DeleteVolume", ttl=60
    )
    for driver in (r.a.driver, r.b):
        error = rpc_error(driver.ResizeVolume, _resize(r, volume, 128 * MIB))
        assert error.code() == grpc.StatusCode.ABORTED, error.details()
        assert "DeleteVolume" in error.details() and "replica-x" in error.details()
    assert [v.size for v in r.a.api.volumes() if v.global_id == volume.global_id] == [64 * MIB]
    r.store.release_lease(lease)
    resized = r.b.ResizeVolume(_resize(r, volume, 128 * MIB))
    assert resized.size_bytes == 128 * MIB
    assert r.store.leases() == []  # the replica's own hold is released after the call


def test_a_dead_replica_s_hold_expires(replicas: Replicas):
    r = replicas
    volume = r.a.create_volume(64 * MIB)
    key = holds.storpool_object(volume.global_id)
    # a replica that took the hold and died: nobody renews it
    r.store.take_leases([Hold(key, EXCLUSIVE)], owner="dead", label="ResizeVolume", ttl=2)
    error = rpc_error(r.b.ResizeVolume, _resize(r, volume, 96 * MIB))
    assert error.code() == grpc.StatusCode.ABORTED
    deadline = time.monotonic() + 10
    while True:
        try:
            resized = r.b.ResizeVolume(_resize(r, volume, 96 * MIB))
            break
        except grpc.RpcError as failed:
            assert failed.code() == grpc.StatusCode.ABORTED
            assert time.monotonic() < deadline, "the lease did not expire"
            time.sleep(0.2)
    assert resized.size_bytes == 96 * MIB


def _create(r: Replicas) -> driver_pb2.CreateVolumeRequest:
    return driver_pb2.CreateVolumeRequest(
        pool=r.a.pool_ref(), volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB)
    )


def test_pool_state_changed_on_one_replica_is_seen_by_the_other(replicas: Replicas):
    """B keeps the pool's record from its last call and uses it unconfirmed until its lease
    confirms the version (`spcs.common.unconfirmed`): the next call after A's change must still
    see the change, in both directions, and create nothing in a pool in maintenance."""
    r = replicas
    assert r.b.CreateVolume(_create(r)).size_bytes == MIB  # B has the pool's record now
    r.a.lifecycle.MaintainPool(lifecycle_pb2.PoolRef(pool_uuid=r.a.pool_uuid))
    refused = _create(r)
    error = rpc_error(r.b.CreateVolume, refused)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Maintenance" in error.details()
    assert not [v for v in r.a.api.volumes() if refused.volume.uuid in v.name]
    # B's record says maintenance now; its refusal is checked before it is the answer
    r.a.lifecycle.CancelMaintainPool(lifecycle_pb2.PoolRef(pool_uuid=r.a.pool_uuid))
    assert r.b.CreateVolume(refused).size_bytes == MIB
    assert [v.size for v in r.a.api.volumes() if refused.volume.uuid in v.name] == [MIB]
    # and a third party's change (the store itself) likewise
    r.store.set_pool_state(r.a.pool_uuid, lifecycle_pb2.POOL_STATE_MAINTENANCE)
    assert rpc_error(r.b.CreateVolume, _create(r)).code() == grpc.StatusCode.FAILED_PRECONDITION
