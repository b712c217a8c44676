"""One stack for the whole contract suite (tests/stacks.py), the resource trackers and the shared
objects.

Teardown of the package-scoped `resources` is the suite's final leak check: after every
tracked object was deleted through gRPC, the emulator must hold exactly the volumes,
snapshots and attachments it held before the suite, and no operation may still be running
on management or on a node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from spcs.v1 import driver_pb2, hosts_pb2, lifecycle_pb2, types_pb2
from tests.contract.harness import (
    BASE_TEMPLATE,
    HOSTS,
    LIFECYCLE_TEMPLATE,
    MIB,
    OTHER_TEMPLATE,
    ZONE,
    Contract,
    Resources,
    new_id,
    qcow2_template,
)
from tests.stacks import MariaDB, stack, storpool_api
from tests.support import pattern


def _round_robin(addresses: list[str]) -> grpc.Channel:
    """One channel over every replica, each call to the next one (gRPC's round_robin)."""
    return grpc.insecure_channel(
        "ipv4:" + ",".join(addresses), options=[("grpc.lb_policy_name", "round_robin")]
    )


@pytest.fixture(scope="package", params=["one", "three-replicas"])
def contract(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Contract]:
    """The suite runs twice: against one management service on SQLite, and against three
    replicas on one MariaDB with each call going to the next replica."""
    workdir = tmp_path_factory.mktemp("contract")
    args: list[str] = []
    replicas = 1 if request.param == "one" else 3
    if replicas > 1:
        server: MariaDB = request.getfixturevalue("mariadb")
        password = workdir / "database.password"
        password.write_text(server.password)
        password.chmod(0o600)
        args = ["--database-url", server.new_database(), "--database-password-file", str(password)]
    with stack(
        workdir / "stack",
        extra_templates={LIFECYCLE_TEMPLATE: 64 << 30, OTHER_TEMPLATE: 64 << 30},
        management_args=args,
        replicas=replicas,
    ) as running:
        assert running.emulator is not None and running.management is not None
        contract = Contract(
            running,
            _round_robin([m.address for m in running.managements]),
            [grpc.insecure_channel(node.address) for node in running.nodes],
            storpool_api(running.emulator),
        )
        try:
            yield contract
        finally:
            for channel in (contract.management, *contract.nodes):
                channel.close()
        # every replica answered its share of the suite's calls
        served = {
            m.name: m.log_path.read_text().count("rpc=/spcs.v1.") for m in running.managements
        }
        assert len(served) == replicas and all(n > 50 for n in served.values()), served


@pytest.fixture(scope="package")
def resources(contract: Contract) -> Iterator[Resources]:
    """Objects shared by the whole suite; at teardown, the final leak check."""
    before = contract.inventory()
    tracker = Resources(contract)
    yield tracker
    failures = tracker.cleanup()
    assert not failures, "cleanup failed:\n" + "\n".join(failures)
    assert contract.inventory() == before, "the suite leaked StorPool objects"
    running = contract.running_operations()
    assert not any(running.values()), f"operations left running: {running}"


@pytest.fixture
def res(contract: Contract, resources: Resources) -> Iterator[Resources]:
    """One test's objects, deleted after it (and the deletes must work)."""
    tracker = Resources(contract)
    yield tracker
    failures = tracker.cleanup()
    assert not failures, "cleanup failed:\n" + "\n".join(failures)


def add_pool(c: Contract, tracker: Resources, pool: str, template: str) -> lifecycle_pb2.Pool:
    """InitializePool + AttachZone + HostConnect of both hosts."""
    c.lifecycle.InitializePool(c.initialize_request(pool, template))
    tracker.pool(pool)
    c.lifecycle.AttachZone(lifecycle_pb2.AttachZoneRequest(pool_uuid=pool, zone_id=ZONE))
    for host in HOSTS:
        reply = c.hosts.HostConnect(hosts_pb2.HostConnectRequest(host_id=host, pool_uuid=pool))
        assert reply.connected, reply.reason
    return c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=pool))


@pytest.fixture(scope="package")
def base_pool(contract: Contract, resources: Resources) -> str:
    """A pool in state Up with both hosts connected, shared by the error tests."""
    pool = new_id("pool")
    add_pool(contract, resources, pool, BASE_TEMPLATE)
    return pool


@dataclass(frozen=True)
class Template:
    """A QCOW2 template in a CloudStack template directory on secondary storage."""

    install_path: str  # relative to the store root
    virtual_size: int
    writes: dict[int, bytes]


@pytest.fixture(scope="package")
def template(contract: Contract, resources: Resources) -> Template:
    writes = {0: pattern(7, 4096), MIB: pattern(8, 8192)}
    install_path = "template/tmpl/2/901"
    image = qcow2_template(contract.stack.secondary / install_path, "901", 4 * MIB, writes)
    resources.file(image)
    return Template(install_path, 4 * MIB, writes)


@dataclass(frozen=True)
class Objects:
    """A real volume and a snapshot of it on the base pool."""

    pool: str
    volume: types_pb2.Volume
    snapshot: types_pb2.Snapshot


@pytest.fixture(scope="package")
def objects(contract: Contract, resources: Resources, base_pool: str) -> Objects:
    volume = contract.driver.CreateVolume(
        driver_pb2.CreateVolumeRequest(
            pool=types_pb2.PrimaryStore(pool_uuid=base_pool),
            volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=2 * MIB),
        )
    )
    resources.volume(base_pool, volume)
    snapshot = contract.driver.TakeSnapshot(
        driver_pb2.TakeSnapshotRequest(
            pool=types_pb2.PrimaryStore(pool_uuid=base_pool),
            snapshot=types_pb2.Snapshot(uuid=new_id("snap"), volume_path=volume.path),
        )
    )
    resources.snapshot(base_pool, snapshot)
    return Objects(base_pool, volume, snapshot)


def secondary_file(c: Contract, relative: str) -> Path:
    return c.stack.secondary / relative
