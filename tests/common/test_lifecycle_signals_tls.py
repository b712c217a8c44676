"""SIGTERM drains in-flight calls; TLS and mutual TLS with a CA from deploy/tls/make-certs.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.server import Server, bind
from spcs.v1 import identity_pb2, identity_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from tests.stacks import Service, server_settings, start_service
from tests.support import REPO

MAKE_CERTS = REPO / "deploy" / "tls" / "make-certs.sh"


def test_sigterm_drains_in_flight_call_then_returns_0():
    entered = threading.Event()

    def slow_probe() -> tuple[bool, str]:
        entered.set()
        time.sleep(1.5)
        return True, "slow but fine"

    info = IdentityInfo(name="test", services=["spcs.v1.Identity"], probe=slow_probe)
    server = Server(
        "test",
        server_settings(),
        [bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(info))],
    )
    results: dict[str, object] = {}

    def call_then_signal() -> None:
        while not server.port:
            time.sleep(0.01)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = identity_pb2_grpc.IdentityStub(channel)
        future = stub.Probe.future(identity_pb2.ProbeRequest(), timeout=10)
        entered.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            results["reply"] = future.result()
        except grpc.RpcError as error:
            results["error"] = error
        # after the drain, new calls are refused
        try:
            stub.GetInfo(identity_pb2.GetInfoRequest(), timeout=2)
            results["late"] = "served"
        except grpc.RpcError as error:
            results["late"] = error.code()
        channel.close()

    caller = threading.Thread(target=call_then_signal)
    caller.start()
    started = time.monotonic()
    assert server.serve_forever() == 0
    caller.join(10)
    assert "error" not in results, results
    assert results["reply"].message == "slow but fine"
    assert results["late"] == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 8
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(directory: Path, *args: str) -> None:
    subprocess.run(["sh", str(MAKE_CERTS), str(directory), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throw-away CA (deploy/tls/make-certs.sh) with the management service's certificate for
    localhost (server.pem) and an operator's (client.pem), and a CA the server does not trust."""
    d = tmp_path_factory.mktemp("pki")
    _make_certs(d, "ca")
    _make_certs(d, "management", "localhost", "IP:127.0.0.1")
    _make_certs(d, "operator", "client")
    for ext in ("pem", "key"):
        (d / f"localhost.{ext}").rename(d / f"server.{ext}")
    # a second CA the server does not trust
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "rogue.key",
        "-out",
        "rogue.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rogue",
        cwd=d,
    )
    return d


def _get_info(address: str, creds: grpc.ChannelCredentials) -> str:
    with grpc.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as ch:
        return (
            identity_pb2_grpc.IdentityStub(ch)
            .GetInfo(identity_pb2.GetInfoRequest(), timeout=5)
            .name
        )


def _list_pools(address: str, creds: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as ch:
        stub = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(ch)
        return len(stub.ListPools(lifecycle_pb2.ListPoolsRequest(), timeout=5).pools)


def _start_tls(tmp_path: Path, pki: Path, services: list[Service], mutual: bool) -> Service:
    args = [
        "management",
        "--db",
        str(tmp_path / "m.db"),
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
    ]
    if mutual:
        args += ["--tls-ca", str(pki / "ca.pem"), "--tls-client-auth"]
    service = start_service(args, tmp_path, "mgmt-tls")
    services.append(service)
    return service


def test_tls_server(tmp_path, pki, services):
    service = _start_tls(tmp_path, pki, services, mutual=False)
    ca = (pki / "ca.pem").read_bytes()
    assert _get_info(service.address, grpc.ssl_channel_credentials(ca)) == "spcs-management"
    # without client certificates there are no roles to check: every caller may call everything
    assert _list_pools(service.address, grpc.ssl_channel_credentials(ca)) == 0
    with pytest.raises(grpc.RpcError) as plain, grpc.insecure_channel(service.address) as ch:
        identity_pb2_grpc.IdentityStub(ch).GetInfo(identity_pb2.GetInfoRequest(), timeout=3)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "listening" in service.log_with("listening") and "(TLS)" in service.log()


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki, services):
    service = _start_tls(tmp_path, pki, services, mutual=True)
    ca = (pki / "ca.pem").read_bytes()
    good = grpc.ssl_channel_credentials(
        ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
    )
    assert _get_info(service.address, good) == "spcs-management"
    assert _list_pools(service.address, good) == 0  # the operator role
    for creds in (
        grpc.ssl_channel_credentials(ca),  # no client certificate
        grpc.ssl_channel_credentials(
            ca, (pki / "rogue.key").read_bytes(), (pki / "rogue.pem").read_bytes()
        ),  # untrusted CA
    ):
        with pytest.raises(grpc.RpcError) as refused:
            _get_info(service.address, creds)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "mutual TLS" in service.log_with("mutual TLS")
