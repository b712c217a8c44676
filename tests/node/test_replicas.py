"""A node with several management replicas (real `spcs management` processes, each on its own
SQLite database until the shared one exists; a real `spcs node`): it registers with every
replica, keeps serving and keeps its registration fresh on the others while one is down, logs
the outage once, and registers again with the replica when it is back. A dns:/// entry: the
real node through the system resolver (`localhost`), and the expansion to several addresses
and its re-resolution through `Registrar` with a resolver of the test's, against two real
replicas on one port at 127.0.0.1 and 127.0.0.2; over mutual TLS, a replica found through a
name is checked against the name."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from spcs.common.tls import TlsFiles
from spcs.node.registration import Registrar, request_for
from spcs.node.targets import Target
from spcs.v1 import hosts_pb2, hosts_pb2_grpc, identity_pb2, identity_pb2_grpc
from tests.stacks import NodeStack, Service, start_management, start_service
from tests.support import REPO

# the management service asks nodes to announce themselves every 30 s (refresh_seconds)
REFRESH_WAIT = 45.0


def wait_for(what: str, condition: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.2)


def nodes_of(address: str) -> dict[str, hosts_pb2.Node]:
    """The nodes a replica lists, by host id (each listed once)."""
    with grpc.insecure_channel(address) as channel:
        stub = hosts_pb2_grpc.NodeRegistryStub(channel)
        nodes = stub.ListNodes(hosts_pb2.ListNodesRequest(), timeout=5).nodes
    found = {node.host_id: node for node in nodes}
    assert len(found) == len(nodes), f"{address} lists a host twice: {nodes}"
    return found


def last_seen(address: str, host_id: str = "host-1") -> float | None:
    node = nodes_of(address).get(host_id)
    return None if node is None else node.last_seen.ToNanoseconds() / 1e9


def node_serves(node: Service) -> str:
    with node.channel() as channel:
        info = identity_pb2_grpc.IdentityStub(channel).GetInfo(
            identity_pb2.GetInfoRequest(), timeout=5
        )
    return info.host_id


def test_a_node_registers_with_every_replica_and_rides_out_one_going_down(
    stack: NodeStack, tmp_path: Path, services: list[Service]
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_management(tmp_path / "a", services)
    b = start_management(tmp_path / "b", services)
    node = stack.start_node("--management", f"{a.address},{b.address}")
    services.append(node)
    for replica in (a, b):
        wait_for(f"host-1 in {replica.address}", lambda r=replica: last_seen(r.address))
        assert nodes_of(replica.address)["host-1"].healthy
        assert nodes_of(replica.address)["host-1"].address == node.address
    first_seen_on_a = last_seen(a.address)

    assert b.terminate() == 0
    # the node finds b gone at its next announcement, then retries (1 s, 2 s, ... apart)
    gone = f"cannot register with management at {b.address}"
    wait_for("the node notices b is down", lambda: gone in node.log(), timeout=REFRESH_WAIT)
    time.sleep(4)
    assert node_serves(node) == "host-1"
    down = node.log()
    assert down.count(gone) == 1, down  # once per outage, not per attempt
    assert "the node keeps serving" in down
    # a had its announcement meanwhile
    assert (last_seen(a.address) or 0) > (first_seen_on_a or 0)
    assert nodes_of(a.address)["host-1"].healthy

    b_again = start_management(tmp_path / "b", services, listen=b.address)  # same database
    restarted = time.time()
    wait_for(
        "host-1 registered again with b",
        lambda: (last_seen(b_again.address) or 0) > restarted,
        timeout=REFRESH_WAIT,
    )
    assert nodes_of(b_again.address)["host-1"].healthy
    assert node_serves(node) == "host-1"
    log = node.log_with(f"registered again with management at {b.address}")
    assert log.count(f"registered again with management at {b.address} as host host-1") == 1
    assert log.count(gone) == 1
    assert f"cannot register with management at {a.address}" not in log
    assert log.count(f"registered with management at {a.address} as host host-1") == 1


def test_a_node_with_the_flag_repeated_and_a_dns_name(
    stack: NodeStack, tmp_path: Path, services: list[Service]
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_management(tmp_path / "a", services)
    b = start_management(tmp_path / "b", services)
    node = stack.start_node("--management", f"dns:///localhost:{a.port}", "--management", b.address)
    services.append(node)
    for replica in (a, b):
        wait_for(f"host-1 in {replica.address}", lambda r=replica: last_seen(r.address))
    # localhost resolves to 127.0.0.1 here (and may to ::1 too, where nothing listens); the
    # line is written just after the registration the wait above saw: wait for it
    line = f"registered with management at {a.address} (dns:///localhost:{a.port})"
    assert line in node.log_with(line)


# ------------------------------------------------ a name with several addresses, re-resolved


def port_free_on_both() -> int:
    for _ in range(20):
        with socket.socket() as one, socket.socket() as two:
            one.bind(("127.0.0.1", 0))
            port = one.getsockname()[1]
            try:
                two.bind(("127.0.0.2", port))
            except OSError:
                continue
            return port
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


def test_a_dns_name_is_every_address_it_resolves_to_again_each_round(
    tmp_path: Path, services: list[Service], caplog: pytest.LogCaptureFixture
):
    port = port_free_on_both()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_management(tmp_path / "a", services, listen=f"127.0.0.1:{port}")
    b = start_management(tmp_path / "b", services, listen=f"127.0.0.2:{port}")
    a_address, b_address = f"127.0.0.1:{port}", f"127.0.0.2:{port}"
    answers: list[str] | OSError = ["127.0.0.2"]
    asked: list[tuple[str, int]] = []

    def resolve(host: str, asked_port: int) -> list[str]:
        asked.append((host, asked_port))
        if isinstance(answers, OSError):
            raise answers
        return list(answers)

    target = Target("spcs-mgmt.test", port, expand=True)
    request = request_for("host-r", "127.0.0.1:1", 5, "emu.a", 2)
    registrar = Registrar([target], request, resolve=resolve)
    caplog.set_level(logging.INFO, logger="spcs.node.registration")
    registrar.start()
    try:
        wait_for("host-r on b", lambda: "host-r" in nodes_of(b_address))
        assert "host-r" not in nodes_of(a_address)
        assert asked == [("spcs-mgmt.test", port)]

        answers = ["127.0.0.2", "127.0.0.1"]  # a replica added to the name
        registrar.refresh()
        wait_for("host-r on a", lambda: "host-r" in nodes_of(a_address))
        assert sorted(registrar.replicas) == [a_address, b_address]

        answers = OSError("Temporary failure in name resolution")
        registrar.refresh()
        registrar.refresh()
        assert sorted(registrar.replicas) == [a_address, b_address]  # keeps what it had
        failures = [r for r in caplog.records if "cannot resolve" in r.getMessage()]
        assert len(failures) == 1, failures

        answers = ["127.0.0.1"]  # b left the name
        registrar.refresh()
        assert list(registrar.replicas) == [a_address]
        messages = [r.getMessage() for r in caplog.records]
        assert any("resolves again" in m for m in messages)
        assert any(f"{b_address} is no longer among the addresses" in m for m in messages)
    finally:
        registrar.stop()
    assert a.popen.poll() is None and b.popen.poll() is None


# ------------------------------------------------ mutual TLS: the certificate names the name


def make_certs(directory: Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    script = REPO / "deploy" / "tls" / "make-certs.sh"
    subprocess.run(["sh", str(script), str(directory), *args], check=True, capture_output=True)


def test_over_mutual_tls_a_dns_replica_is_checked_against_the_name(
    tmp_path: Path, services: list[Service]
):
    pki = tmp_path / "pki"
    make_certs(pki, "ca")
    make_certs(pki, "management", "spcs-mgmt.test")  # the name only, no IP address
    make_certs(pki, "node", "kvm-t.test", "host-t")
    serve_tls = ["--tls-cert", str(pki / "spcs-mgmt.test.pem"), "--tls-client-auth"]
    serve_tls += ["--tls-key", str(pki / "spcs-mgmt.test.key"), "--tls-ca", str(pki / "ca.pem")]
    management = start_service(
        ["management", "--db", str(tmp_path / "m.db"), *serve_tls], tmp_path, "mgmt"
    )
    services.append(management)
    tls = TlsFiles(pki / "kvm-t.test.pem", pki / "kvm-t.test.key", pki / "ca.pem", True)
    request = request_for("host-t", "127.0.0.1:1", 5, "emu.a", 2)

    def loopback(host: str, port: int) -> list[str]:
        assert host == "spcs-mgmt.test"
        return ["127.0.0.1"]

    by_name = Registrar(
        [Target("spcs-mgmt.test", management.port, expand=True)], request, tls, resolve=loopback
    )
    by_address = Registrar([Target("127.0.0.1", management.port)], request, tls)
    by_name.start()
    by_address.start()
    try:
        assert by_name.registered.wait(15), "no registration through the dns:/// name"
        # the same address dialled without the name: the certificate does not name it
        assert not by_address.registered.wait(2)
    finally:
        by_name.stop()
        by_address.stop()
