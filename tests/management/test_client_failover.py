"""Clients find a live management replica: a Python channel with the service config that
docs/deploy.md documents ("Several management replicas: clients and nodes"; read from the page)
over two replicas. Real `spcs management` processes, each on its own database so that every
answer tells which replica gave it: calls spread over both; one stopped, calls still succeed
on the other; started again, calls spread again. And the health check itself: a replica that is
up but reports NOT_SERVING for the documented service name gets no calls (spcs's own `Server`,
in this process, where the test can set its health)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.server import Server, bind
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
)
from tests.stacks import Service, server_settings, start_management
from tests.support import REPO

SECTION = "## Several management replicas: clients and nodes"
FAILOVER_SECONDS = 5.0  # calls may fail this long after a replica stops
RECONNECT_SECONDS = 30.0  # gRPC's reconnect backoff to a replica that is back


def documented_service_config() -> str:
    """The JSON block of the section, as the page shows it."""
    page = (REPO / "docs" / "deploy.md").read_text()
    section = page.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None, f"no ```json block in {SECTION!r} of docs/deploy.md"
    config = json.loads(block[1])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    return json.dumps(config)


def balanced_channel(addresses: list[str]) -> grpc.Channel:
    target = "ipv4:" + ",".join(addresses)
    return grpc.insecure_channel(
        target, options=[("grpc.service_config", documented_service_config())]
    )


# ------------------------------------------------------------ two real management replicas


def register(address: str, host_id: str) -> None:
    """A node registration only this replica has: its ListNodes answer names the replica."""
    with grpc.insecure_channel(address) as channel:
        hosts_pb2_grpc.NodeRegistryStub(channel).RegisterNode(
            hosts_pb2.RegisterNodeRequest(
                host_id=host_id, address="127.0.0.1:1", storpool_client_id=1
            ),
            timeout=5,
        )


def answers(stub: hosts_pb2_grpc.NodeRegistryStub, calls: int) -> Counter[str]:
    """Which replica answered each of `calls` ListNodes calls (its one host id), or the
    status code of a failed call."""
    seen: Counter[str] = Counter()
    for _ in range(calls):
        try:
            reply = stub.ListNodes(hosts_pb2.ListNodesRequest(), timeout=5)
        except grpc.RpcError as error:
            seen[error.code().name] += 1
            continue
        hosts = [node.host_id for node in reply.nodes]
        assert len(hosts) == 1 and hosts[0].startswith("only-"), hosts
        seen[hosts[0]] += 1
    return seen


def spread(stub: hosts_pb2_grpc.NodeRegistryStub, timeout: float) -> Counter[str]:
    """20 calls, all answered, half by each replica (once both are connected)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = answers(stub, 20)
        if seen == Counter({"only-a": 10, "only-b": 10}):
            return seen
        assert time.monotonic() < deadline, f"calls do not spread over both replicas: {seen}"
        time.sleep(0.2)


def test_calls_spread_over_the_replicas_and_survive_one_stopping(
    tmp_path: Path, services: list[Service]
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_management(tmp_path / "a", services)
    b = start_management(tmp_path / "b", services)
    register(a.address, "only-a")
    register(b.address, "only-b")
    checked = json.loads(documented_service_config())["healthCheckConfig"]["serviceName"]
    with a.channel() as channel:  # the name the page checks is one management reports
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=checked), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    with balanced_channel([a.address, b.address]) as channel:
        stub = hosts_pb2_grpc.NodeRegistryStub(channel)
        spread(stub, timeout=10)

        assert b.terminate() == 0
        deadline = time.monotonic() + FAILOVER_SECONDS
        failed = answers(stub, 1)
        while "only-a" not in failed:
            assert time.monotonic() < deadline, f"no call reached a after b stopped: {failed}"
            failed += answers(stub, 1)
        assert answers(stub, 40) == Counter({"only-a": 40})  # every call answered, by a

        b_again = start_management(tmp_path / "b", services, listen=b.address)  # same db
        spread(stub, timeout=RECONNECT_SECONDS)
        assert b_again.popen.poll() is None


# ------------------------------------------------ a replica that is up but not serving


@pytest.fixture
def replicas() -> Iterator[dict[str, Server]]:
    """Two spcs `Server`s in this process, Identity naming each and the driver service (every
    method UNIMPLEMENTED) so that they report its health as the management service does."""
    running: dict[str, Server] = {}
    for name in ("replica-a", "replica-b"):
        server = Server(
            name,
            server_settings(),
            [
                bind(
                    identity_pb2,
                    identity_pb2_grpc,
                    "Identity",
                    IdentityServicer(IdentityInfo(name, ())),
                ),
                bind(
                    driver_pb2,
                    driver_pb2_grpc,
                    "PrimaryDataStoreDriver",
                    driver_pb2_grpc.PrimaryDataStoreDriverServicer(),
                ),
            ],
        )
        server.start()
        running[name] = server
    yield running
    for server in running.values():
        server.stop(0)


def names(stub: identity_pb2_grpc.IdentityStub, calls: int) -> Counter[str]:
    return Counter(
        stub.GetInfo(identity_pb2.GetInfoRequest(), timeout=5).name for _ in range(calls)
    )


def test_a_replica_not_serving_the_checked_service_gets_no_calls(replicas: dict[str, Server]):
    service = json.loads(documented_service_config())["healthCheckConfig"]["serviceName"]
    addresses = [f"127.0.0.1:{server.port}" for server in replicas.values()]
    with balanced_channel(addresses) as channel:
        stub = identity_pb2_grpc.IdentityStub(channel)

        def settles_on(expected: Counter[str]) -> None:
            deadline = time.monotonic() + FAILOVER_SECONDS
            while (seen := names(stub, 10)) != expected:
                assert time.monotonic() < deadline, f"calls went to {seen}, not {expected}"
                time.sleep(0.1)

        both = Counter({"replica-a": 5, "replica-b": 5})
        settles_on(both)
        replicas["replica-a"].health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        settles_on(Counter({"replica-b": 10}))
        assert names(stub, 30) == Counter({"replica-b": 30})  # and stays there
        replicas["replica-a"].health.set(service, health_pb2.HealthCheckResponse.SERVING)
        settles_on(both)
