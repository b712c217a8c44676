"""Authorization by certificate role under mutual TLS: the real services with certificates from
deploy/tls/make-certs.sh (and, for odd ones, the cryptography library with the same CA), called
over gRPC on loopback and with the real grpcurl."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import wrappers_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from spcs.common import authz
from spcs.common.authz import Policy, Rule
from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.interceptors import CallInterceptor
from spcs.common.server import bind
from spcs.emulator import Emulator
from spcs.storpool.api import StorPoolApi
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    types_pb2,
)
from tests.e2e.helpers import MISSING, find_grpcurl
from tests.stacks import Service, server_settings, serving, start_service
from tests.support import REPO, SPCS

MAKE_CERTS = REPO / "deploy" / "tls" / "make-certs.sh"
TEMPLATE = "authz-test"
DENIED = grpc.StatusCode.PERMISSION_DENIED
MIB = 1 << 20


# ------------------------------------------------------------------ certificates


def make_certs(directory: Path, *args: str, env: dict[str, str] | None = None) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["sh", str(MAKE_CERTS), str(directory), *args],
        check=True,
        capture_output=True,
        env=env,
    )


def sign_with_ca(pki: Path, name: str, uris: list[str]) -> None:
    """PKI/NAME.pem + .key signed by PKI's CA, with exactly these URI SANs (and a DNS one)."""
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(f"{name}.test")]
    sans += [x509.UniformResourceIdentifier(uri) for uri in uris]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (pki / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """One CA; management, two KVM hosts, an operator (two trust domains), and certificates the
    CA signed that carry no spcs role."""
    d = tmp_path_factory.mktemp("pki")
    make_certs(d, "ca")
    # every service listens on 127.0.0.1, and is dialled there
    make_certs(d, "management", "mgmt.test", "IP:127.0.0.1")
    make_certs(d, "node", "kvm1.test", "host-1", "IP:127.0.0.1")
    make_certs(d, "node", "kvm2.test", "host-2", "IP:127.0.0.1")
    make_certs(d, "operator", "ops")
    make_certs(d, "operator", "ops-elsewhere", env={"SPCS_TRUST_DOMAIN": "example.org"})
    sign_with_ca(d, "norole", ["spiffe://spcs/spcs/admin"])
    sign_with_ca(d, "bare", [])
    return d


def creds(pki: Path, name: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / f"{name}.key").read_bytes(),
        (pki / f"{name}.pem").read_bytes(),
    )


def tls_args(pki: Path, name: str) -> list[str]:
    return [
        "--tls-cert",
        str(pki / f"{name}.pem"),
        "--tls-key",
        str(pki / f"{name}.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
        "--tls-client-auth",
    ]


def refused(call: Callable[[], object]) -> str:
    """The message of a PERMISSION_DENIED `call` answered, checking its ErrorInfo reason."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    assert error.code() == DENIED, (error.code(), error.details())
    status = rpc_status.from_call(error)
    assert status is not None and status.message == error.details()
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == authz.REASON
    return error.details()


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    pki: Path
    emulator: Emulator
    api: StorPoolApi
    management: Service
    nodes: dict[str, Service]
    pool_uuid: str = "pool-authz"

    def channel(self, service: Service, cert: str) -> grpc.Channel:
        return grpc.secure_channel(service.address, creds(self.pki, cert))

    def storpool_volumes(self) -> set[str]:
        return {v.global_id for v in self.api.volumes()}


@pytest.fixture(scope="module")
def stack(pki: Path, tmp_path_factory) -> Iterator[Stack]:
    """The emulator with two KVM hosts, management and both nodes, all with mutual TLS."""
    work = tmp_path_factory.mktemp("authz")
    devs = {n: work / f"host{n}" / "dev" for n in (1, 2)}
    for dev in devs.values():
        dev.mkdir(parents=True)
    emulator = Emulator(
        work / "emulator", clients=devs, cluster_id="emu.a", templates={TEMPLATE: 64 << 30}
    )
    emulator.start()
    emulator.write_conf(work / "storpool.conf")
    started: list[Service] = []
    try:
        management = start_service(
            ["management", "--db", str(work / "m.db"), *tls_args(pki, "mgmt.test")],
            work,
            "management",
        )
        started.append(management)
        nodes = {}
        for n in (1, 2):
            host = work / f"host{n}"
            node = start_service(
                [
                    "node",
                    "--host-id",
                    f"host-{n}",
                    "--device-root",
                    str(devs[n]),
                    "--management",
                    management.address,
                    "--storpool-conf",
                    str(work / f"storpool.client-{n}.conf"),
                    "--state-dir",
                    str(host / "state"),
                    "--mount-root",
                    str(host / "mnt"),
                    *tls_args(pki, f"kvm{n}.test"),
                ],
                work,
                f"node{n}",
            )
            started.append(node)
            nodes[f"host-{n}"] = node
        result = Stack(
            pki,
            emulator,
            StorPoolApi(emulator.host, emulator.port, emulator.token),
            management,
            nodes,
        )
        # the nodes registered with their own certificates
        with result.channel(management, "ops") as channel:
            registry = hosts_pb2_grpc.NodeRegistryStub(channel)
            deadline = time.monotonic() + 20
            while {n.host_id for n in registry.ListNodes(hosts_pb2.ListNodesRequest()).nodes} != {
                "host-1",
                "host-2",
            }:
                assert time.monotonic() < deadline, management.log()
                time.sleep(0.1)
        yield result
        for service in reversed(started):
            assert service.terminate() == 0
            assert "Traceback" not in service.log(), service.log()
    finally:
        for service in started:
            if service.popen.poll() is None:
                service.popen.kill()
                service.popen.wait()
        emulator.stop(release_devices=True)


@pytest.fixture(scope="module")
def volume(stack: Stack) -> types_pb2.Volume:
    """A pool connected to both hosts (management calling the nodes) and a volume in it, made
    with the operator certificate."""
    with stack.channel(stack.management, "ops") as channel:
        lifecycle = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel)
        emu = stack.emulator
        lifecycle.InitializePool(
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid=stack.pool_uuid,
                name=stack.pool_uuid,
                url=f"storpool://{emu.token}@{emu.host}:{emu.port}/{TEMPLATE}",
                zone_id="zone-1",
                capacity_bytes=1 << 40,
            )
        )
        lifecycle.AttachZone(
            lifecycle_pb2.AttachZoneRequest(pool_uuid=stack.pool_uuid, zone_id="zone-1")
        )
        hosts = hosts_pb2_grpc.HostListenerStub(channel)
        for host in ("host-1", "host-2"):
            reply = hosts.HostConnect(
                hosts_pb2.HostConnectRequest(host_id=host, pool_uuid=stack.pool_uuid)
            )
            assert reply.connected, reply.reason
        return driver_pb2_grpc.PrimaryDataStoreDriverStub(channel).CreateVolume(
            driver_pb2.CreateVolumeRequest(
                pool=types_pb2.PrimaryStore(pool_uuid=stack.pool_uuid),
                volume=types_pb2.Volume(uuid="vol-authz", size_bytes=16 * MIB),
            )
        )


def device_of(stack: Stack, host: int, volume: types_pb2.Volume) -> Path:
    return Path(stack.emulator.client_root(host)) / "storpool-byid" / volume.path.rsplit("/", 1)[1]


# ------------------------------------------------------------------ management


def test_operator_drives_the_management_service_which_calls_the_nodes(
    stack: Stack, volume: types_pb2.Volume
):
    assert volume.global_id in stack.storpool_volumes()
    obj = types_pb2.DataObject(volume=volume)
    with stack.channel(stack.management, "ops") as channel:
        driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
        # GrantAccess: management attaches through host-2's node with its management certificate
        granted = driver.GrantAccess(driver_pb2.GrantAccessRequest(object=obj, host_id="host-2"))
        assert Path(granted.path).name == device_of(stack, 2, volume).name
        assert device_of(stack, 2, volume).exists()
        assert driver.RevokeAccess(driver_pb2.RevokeAccessRequest(object=obj, host_id="host-2"))
        assert not device_of(stack, 2, volume).exists()
        registry = hosts_pb2_grpc.NodeRegistryStub(channel)
        assert {n.host_id for n in registry.ListNodes(hosts_pb2.ListNodesRequest()).nodes} == {
            "host-1",
            "host-2",
        }
        operations_pb2_grpc.OperationsStub(channel).ListOperations(
            operations_pb2.ListOperationsRequest()
        )
    # any trust domain the CA issues is accepted
    with stack.channel(stack.management, "ops-elsewhere") as channel:
        pools = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel).ListPools(
            lifecycle_pb2.ListPoolsRequest()
        )
        assert stack.pool_uuid in {p.uuid for p in pools.pools}


def test_spcs_ctl_over_mutual_tls(stack: Stack):
    """The operator's command line with an operator certificate, as the services take theirs;
    without a client certificate the management service does not answer it (exit 3)."""
    pki = stack.pki
    base = [*SPCS, "ctl", "--management", stack.management.address, "--tls-ca", str(pki / "ca.pem")]
    own = ["--tls-cert", str(pki / "ops.pem"), "--tls-key", str(pki / "ops.key")]
    nodes = subprocess.run([*base, *own, "--json", "nodes"], capture_output=True, text=True)
    assert nodes.returncode == 0, nodes.stderr
    assert {(n["host_id"], n["serving"]) for n in json.loads(nodes.stdout)} == {
        ("host-1", "SERVING"),
        ("host-2", "SERVING"),
    }
    pools = subprocess.run([*base, *own, "pools"], capture_output=True, text=True)
    assert pools.returncode == 0 and pools.stdout.startswith("UUID"), pools.stderr
    anonymous = subprocess.run([*base, "pools"], capture_output=True, text=True)
    assert anonymous.returncode == 3 and "UNAVAILABLE" in anonymous.stderr, anonymous.stderr


def test_a_node_certificate_cannot_change_storage_through_management(
    stack: Stack, volume: types_pb2.Volume
):
    before = stack.storpool_volumes()
    assert volume.global_id in before
    pool = types_pb2.PrimaryStore(pool_uuid=stack.pool_uuid)
    with stack.channel(stack.management, "kvm1.test") as channel:
        driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
        message = refused(
            lambda: driver.DeleteData(
                driver_pb2.DeleteDataRequest(pool=pool, object=types_pb2.DataObject(volume=volume))
            )
        )
        assert message == (
            "spcs.v1.PrimaryDataStoreDriver/DeleteData needs a certificate with role operator; "
            "this one (CN=kvm1.test) has node/host-1; issue an operator certificate with "
            "deploy/tls/make-certs.sh"
        )
        refused(
            lambda: driver.CreateVolume(
                driver_pb2.CreateVolumeRequest(
                    pool=pool, volume=types_pb2.Volume(uuid="vol-by-node", size_bytes=16 * MIB)
                )
            )
        )
        lifecycle = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel)
        refused(
            lambda: lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=stack.pool_uuid))
        )
        refused(
            lambda: hosts_pb2_grpc.NodeRegistryStub(channel).ListNodes(hosts_pb2.ListNodesRequest())
        )
    # nothing changed in StorPool, and each denial is one WARNING line without a traceback
    assert stack.storpool_volumes() == before
    log = stack.management.log_with("PrimaryDataStoreLifeCycle/DeletePool needs")
    denial = [line for line in log.splitlines() if "DeleteData needs a certificate" in line]
    assert len(denial) == 1 and " WARNING " in denial[0], denial
    assert "Traceback" not in log


def test_a_node_registers_only_as_its_own_host(stack: Stack):
    node1, node2 = stack.nodes["host-1"], stack.nodes["host-2"]
    with stack.channel(stack.management, "kvm1.test") as channel:
        registry = hosts_pb2_grpc.NodeRegistryStub(channel)
        own = registry.RegisterNode(
            hosts_pb2.RegisterNodeRequest(
                host_id="host-1", address=node1.address, storpool_client_id=1
            )
        )
        assert own.refresh_seconds > 0
        message = refused(
            lambda: registry.RegisterNode(
                hosts_pb2.RegisterNodeRequest(
                    host_id="host-2", address=node1.address, storpool_client_id=1
                )
            )
        )
        assert "'host-2'" in message and "host host-1" in message, message
        assert "--host-id host-1" in message and "make-certs.sh" in message, message
    # the management role may not register (nor do anything beyond the open services)
    with stack.channel(stack.management, "mgmt.test") as channel:
        message = refused(
            lambda: hosts_pb2_grpc.NodeRegistryStub(channel).RegisterNode(
                hosts_pb2.RegisterNodeRequest(
                    host_id="host-2", address=node1.address, storpool_client_id=1
                )
            )
        )
        assert "needs a certificate with role operator or node/host-2" in message, message
        assert "(CN=mgmt.test) has management" in message, message
    # host-2 still points at its own node
    with stack.channel(stack.management, "ops") as channel:
        nodes = hosts_pb2_grpc.NodeRegistryStub(channel).ListNodes(hosts_pb2.ListNodesRequest())
        assert {n.host_id: n.address for n in nodes.nodes}["host-2"] == node2.address


# ------------------------------------------------------------------ nodes


def test_an_operator_may_not_call_a_node(stack: Stack, volume: types_pb2.Volume):
    disk = node_pb2.DiskRef(path=volume.path, kind=node_pb2.DISK_KIND_VOLUME)
    with stack.channel(stack.nodes["host-1"], "ops") as channel:
        adaptor = node_pb2_grpc.StorageAdaptorStub(channel)
        message = refused(
            lambda: adaptor.ConnectPhysicalDisk(node_pb2.ConnectPhysicalDiskRequest(disk=disk))
        )
        assert message == (
            "spcs.v1.StorageAdaptor/ConnectPhysicalDisk needs a certificate with role management "
            "or node/host-1; this one (CN=ops) has operator; issue a management or node/host-1 "
            "certificate with deploy/tls/make-certs.sh"
        )
        commands = node_pb2_grpc.AgentCommandsStub(channel)
        refused(
            lambda: commands.ModifyStoragePool(
                node_pb2.ModifyStoragePoolRequest(pool_uuid=stack.pool_uuid, add=True)
            )
        )
        refused(
            lambda: operations_pb2_grpc.OperationsStub(channel).ListOperations(
                operations_pb2.ListOperationsRequest()
            )
        )
    assert not device_of(stack, 1, volume).exists()


def test_a_node_serves_its_own_host_certificate_and_not_another_hosts(
    stack: Stack, volume: types_pb2.Volume
):
    disk = node_pb2.DiskRef(path=volume.path, kind=node_pb2.DISK_KIND_VOLUME)
    connect = node_pb2.ConnectPhysicalDiskRequest(disk=disk)
    with stack.channel(stack.nodes["host-1"], "kvm2.test") as channel:
        message = refused(
            lambda: node_pb2_grpc.StorageAdaptorStub(channel).ConnectPhysicalDisk(connect)
        )
        assert "(CN=kvm2.test) has node/host-2" in message, message
        refused(
            lambda: node_pb2_grpc.AgentCommandsStub(channel).ModifyStoragePool(
                node_pb2.ModifyStoragePoolRequest(pool_uuid=stack.pool_uuid, add=True)
            )
        )
    assert not device_of(stack, 1, volume).exists()
    # the CloudStack agent shim on host-1 uses host-1's certificate
    with stack.channel(stack.nodes["host-1"], "kvm1.test") as channel:
        adaptor = node_pb2_grpc.StorageAdaptorStub(channel)
        adaptor.ConnectPhysicalDisk(connect)
        assert device_of(stack, 1, volume).exists()
        adaptor.DisconnectPhysicalDisk(node_pb2.DisconnectPhysicalDiskRequest(disk=disk))
        assert not device_of(stack, 1, volume).exists()
        reply = node_pb2_grpc.AgentCommandsStub(channel).ModifyStoragePool(
            node_pb2.ModifyStoragePoolRequest(pool_uuid=stack.pool_uuid, add=True)
        )
        assert reply.host_id == "host-1" and reply.storpool_client_id == 1
        operations_pb2_grpc.OperationsStub(channel).ListOperations(
            operations_pb2.ListOperationsRequest()
        )
    log = stack.nodes["host-1"].log_with("has node/host-2")
    assert "WARNING" in log and "Traceback" not in log


def test_nodes_refuse_a_management_service_without_the_management_role(
    stack: Stack, volume: types_pb2.Volume, tmp_path: Path
):
    """A management service run with a node certificate: its calls to the nodes are refused,
    and its caller is told why."""
    wrong = start_service(
        ["management", "--db", str(tmp_path / "m.db"), *tls_args(stack.pki, "kvm2.test")],
        tmp_path,
        "wrong-management",
    )
    try:
        with stack.channel(wrong, "ops") as channel:
            hosts_pb2_grpc.NodeRegistryStub(channel).RegisterNode(
                hosts_pb2.RegisterNodeRequest(
                    host_id="host-1", address=stack.nodes["host-1"].address, storpool_client_id=1
                )
            )
            grant = driver_pb2.GrantAccessRequest(
                object=types_pb2.DataObject(volume=volume), host_id="host-1"
            )
            with pytest.raises(grpc.RpcError) as raised:
                driver_pb2_grpc.PrimaryDataStoreDriverStub(channel).GrantAccess(grant)
        assert raised.value.code() == DENIED
        assert raised.value.details() == (
            "host host-1: spcs.v1.StorageAdaptor/ConnectPhysicalDisk needs a certificate with "
            "role management or node/host-1; this one (CN=kvm2.test) has node/host-2; issue a "
            "management or node/host-1 certificate with deploy/tls/make-certs.sh"
        )
        assert not device_of(stack, 1, volume).exists()
        assert wrong.terminate() == 0
        assert "Traceback" not in wrong.log()
    finally:
        if wrong.popen.poll() is None:
            wrong.popen.kill()
            wrong.popen.wait()


# ------------------------------------------------------------------ any certificate


def test_a_certificate_without_a_role_reaches_only_health_reflection_and_identity(stack: Stack):
    for cert, why in (
        ("norole", "spiffe://spcs/spcs/admin is not of the form"),
        ("bare", "no subjectAltName URI spiffe://<trust domain>/spcs/<role>"),
    ):
        for service in (stack.management, stack.nodes["host-1"]):
            with stack.channel(service, cert) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                identity = identity_pb2_grpc.IdentityStub(channel)
                assert identity.GetInfo(identity_pb2.GetInfoRequest()).name.startswith("spcs-")
                identity.GetServerCapabilities(identity_pb2.GetServerCapabilitiesRequest())
                identity.Probe(identity_pb2.ProbeRequest())
        with stack.channel(stack.management, cert) as channel:
            message = refused(
                lambda ch=channel: lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(ch).ListPools(
                    lifecycle_pb2.ListPoolsRequest()
                )
            )
            assert f"(CN={cert}) has no spcs role" in message and why in message, message
            assert "issue an operator certificate with deploy/tls/make-certs.sh" in message
            refused(
                lambda ch=channel: hosts_pb2_grpc.NodeRegistryStub(ch).RegisterNode(
                    hosts_pb2.RegisterNodeRequest(
                        host_id="host-1", address="127.0.0.1:1", storpool_client_id=1
                    )
                )
            )
        with stack.channel(stack.nodes["host-1"], cert) as channel:
            refused(
                lambda ch=channel: node_pb2_grpc.StorageAdaptorStub(ch).GetPhysicalDisk(
                    node_pb2.GetPhysicalDiskRequest(disk=node_pb2.DiskRef(path="x"))
                )
            )


def grpcurl(stack: Stack, service: Service, cert: str, *args: str) -> str:
    binary = find_grpcurl()
    if binary is None:
        pytest.skip(MISSING)
    pki = stack.pki
    result = subprocess.run(
        [
            binary,
            "-max-time",
            "20",
            "-cacert",
            str(pki / "ca.pem"),
            "-cert",
            str(pki / f"{cert}.pem"),
            "-key",
            str(pki / f"{cert}.key"),
            service.address,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("cert", ["ops", "mgmt.test", "kvm1.test", "kvm2.test", "norole"])
def test_health_and_reflection_work_with_any_certificate(stack: Stack, cert: str):
    for service, policy in (
        (stack.management, authz.management_policy()),
        (stack.nodes["host-1"], authz.node_policy("host-1")),
    ):
        assert '"SERVING"' in grpcurl(stack, service, cert, "grpc.health.v1.Health/Check")
        listed = grpcurl(stack, service, cert, "list").split()
        assert "grpc.health.v1.Health" in listed and "spcs.v1.Identity" in listed
        described = grpcurl(stack, service, cert, "describe", "spcs.v1.Identity")
        assert "rpc GetInfo" in described
        # every service a server lists is open to all or in its authorization table
        for name in listed:
            method = f"/{name}/Any"
            assert policy.is_open(method) or policy.rule_for(method) is not None, name


# ------------------------------------------------------------------ streaming calls


def test_streaming_calls_are_checked_too(pki: Path):
    """Health Watch (unary-stream) and reflection (stream-stream) behind a rule of a policy."""
    operator_only = Policy(
        "the test service",
        (
            Rule("/grpc.health.v1.Health/", {authz.ROLE_OPERATOR}),
            Rule("/grpc.reflection.v1alpha.ServerReflection/", {authz.ROLE_OPERATOR}),
        ),
        always_allowed=("/spcs.v1.Identity/",),
    )
    info = IdentityInfo(name="test", services=["spcs.v1.Identity"])
    settings = server_settings(
        tls_cert=pki / "mgmt.test.pem",
        tls_key=pki / "mgmt.test.key",
        tls_ca=pki / "ca.pem",
        tls_client_auth=True,
        grace_seconds=1.0,
    )
    binding = bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(info))
    with serving("test", [binding], operator_only, settings) as address:
        watch = health_pb2.HealthCheckRequest()
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        with grpc.secure_channel(address, creds(pki, "ops")) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(watch, timeout=5)
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            stream.cancel()
            replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([listing]), timeout=5
            )
            names = {s.name for s in next(replies).list_services_response.service}
            assert "spcs.v1.Identity" in names
        with grpc.secure_channel(address, creds(pki, "kvm1.test")) as channel:
            message = refused(
                lambda: next(health_pb2_grpc.HealthStub(channel).Watch(watch, timeout=5))
            )
            assert message.startswith("grpc.health.v1.Health/Watch needs a certificate with ")
            assert "(CN=kvm1.test) has node/host-1" in message
            refused(
                lambda: next(
                    reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                        iter([listing]), timeout=5
                    )
                )
            )
            identity = identity_pb2_grpc.IdentityStub(channel)
            assert identity.GetInfo(identity_pb2.GetInfoRequest(), timeout=5).name == "test"


def test_every_handler_kind_is_checked(pki: Path):
    """The interceptor behind CallInterceptor, as the Server puts it, on a raw gRPC server with
    one method of each kind (messages are google.protobuf.StringValue)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[
            CallInterceptor(),
            authz.AuthzInterceptor(Policy("the test service", (Rule("/t.T/", {"operator"}),))),
        ],
    )
    text = wrappers_pb2.StringValue

    def one(request: text, context: grpc.ServicerContext) -> text:
        return text(value="one:" + request.value)

    def many(request: text, context: grpc.ServicerContext) -> Iterator[text]:
        yield text(value="many:" + request.value)

    def join(requests: Iterator[text], context: grpc.ServicerContext) -> text:
        return text(value="+".join(r.value for r in requests))

    def echo(requests: Iterator[text], context: grpc.ServicerContext) -> Iterator[text]:
        yield from requests

    codec = {"request_deserializer": text.FromString, "response_serializer": text.SerializeToString}
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "t.T",
                {
                    "UnaryUnary": grpc.unary_unary_rpc_method_handler(one, **codec),
                    "UnaryStream": grpc.unary_stream_rpc_method_handler(many, **codec),
                    "StreamUnary": grpc.stream_unary_rpc_method_handler(join, **codec),
                    "StreamStream": grpc.stream_stream_rpc_method_handler(echo, **codec),
                },
            )
        ]
    )
    key = (pki / "mgmt.test.key").read_bytes()
    cert = (pki / "mgmt.test.pem").read_bytes()
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=(pki / "ca.pem").read_bytes(),
            require_client_auth=True,
        ),
    )
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        client = {
            "request_serializer": text.SerializeToString,
            "response_deserializer": text.FromString,
        }
        a, b = text(value="a"), text(value="b")

        def calls(channel: grpc.Channel) -> dict[str, Callable[[], object]]:
            def values(replies: Iterator[text]) -> list[str]:
                return [r.value for r in replies]

            return {
                "UnaryUnary": lambda: (
                    channel.unary_unary("/t.T/UnaryUnary", **client)(a, timeout=5).value
                ),
                "UnaryStream": lambda: values(
                    channel.unary_stream("/t.T/UnaryStream", **client)(a, timeout=5)
                ),
                "StreamUnary": lambda: (
                    channel.stream_unary("/t.T/StreamUnary", **client)(
                        iter([a, b]), timeout=5
                    ).value
                ),
                "StreamStream": lambda: values(
                    channel.stream_stream("/t.T/StreamStream", **client)(iter([a, b]), timeout=5)
                ),
            }

        with grpc.secure_channel(address, creds(pki, "ops")) as channel:
            got = {name: call() for name, call in calls(channel).items()}
        assert got == {
            "UnaryUnary": "one:a",
            "UnaryStream": ["many:a"],
            "StreamUnary": "a+b",
            "StreamStream": ["a", "b"],
        }
        with grpc.secure_channel(address, creds(pki, "kvm2.test")) as channel:
            for name, call in calls(channel).items():
                message = refused(call)
                assert message == (
                    f"t.T/{name} needs a certificate with role operator; this one "
                    "(CN=kvm2.test) has node/host-2; issue an operator certificate with "
                    "deploy/tls/make-certs.sh"
                )
    finally:
        server.stop(0)


# ------------------------------------------------------------------ reading certificates


def test_roles_are_read_from_spiffe_uri_sans_of_exactly_this_shape(pki: Path, tmp_path: Path):
    shutil.copy(pki / "ca.pem", tmp_path / "ca.pem")
    shutil.copy(pki / "ca.key", tmp_path / "ca.key")
    good = [
        "spiffe://spcs/spcs/operator",
        "spiffe://example.org/spcs/management",
        "spiffe://spcs/spcs/node/42",
        "spiffe://spcs/spcs/node/d7f1c2e4-aaaa-bbbb-cccc-0123456789ab",
    ]
    bad = [
        "spiffe://spcs/spcs/admin",
        "spiffe://spcs/spcs/operator/",
        "spiffe://spcs/spcs/node/",
        "spiffe://spcs/spcs/node/42/x",
        "spiffe://spcs/spcs/node/-42",
        "spiffe://spcs/other/operator",
        "spiffe://SPCS/spcs/operator",
        "spiffe://spcs/spcs/operator?x=1",
        "https://spcs/spcs/operator",
    ]
    sign_with_ca(tmp_path, "mixed", good + bad)
    peer = authz.peer_from_pem((tmp_path / "mixed.pem").read_bytes())
    assert peer.subject == "CN=mixed"
    assert peer.roles == {
        "operator",
        "management",
        "node/42",
        "node/d7f1c2e4-aaaa-bbbb-cccc-0123456789ab",
    }
    assert peer.host_ids == {"42", "d7f1c2e4-aaaa-bbbb-cccc-0123456789ab"}
    assert "https://spcs/spcs/operator" not in peer.other_uris
    assert set(peer.other_uris) == set(bad) - {"https://spcs/spcs/operator"}
    # make-certs.sh writes exactly one role per certificate
    for name, role in (
        ("ops", "operator"),
        ("ops-elsewhere", "operator"),
        ("mgmt.test", "management"),
        ("kvm1.test", "node/host-1"),
    ):
        made = authz.peer_from_pem((pki / f"{name}.pem").read_bytes())
        assert (made.subject, made.roles) == (f"CN={name}", {role})
    assert authz.peer_from_pem(b"not a certificate").roles == frozenset()
