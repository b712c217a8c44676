"""The real `grpcurl` binary against a running stack, the way docs/grpcurl.md uses it.

Reflection only: grpcurl is never given a .proto file and runs in a directory without any, so
every call here also checks that server reflection describes the whole contract (including
google.longrunning and the Any payloads in operations). Outputs are parsed as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spcs.demo.stack import TEMPLATE, Stack
from spcs.storpool.api import StorPoolApi
from tests.e2e.helpers import MISSING, find_grpcurl
from tests.support import log_containing

MIB = 1 << 20
MANAGEMENT_SERVICES = {
    "google.longrunning.Operations",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "spcs.v1.HostListener",
    "spcs.v1.Identity",
    "spcs.v1.NodeRegistry",
    "spcs.v1.PrimaryDataStoreDriver",
    "spcs.v1.PrimaryDataStoreLifeCycle",
    "spcs.v1.SnapshotStrategy",
    "spcs.v1.VMSnapshotStrategy",
}
NODE_SERVICES = {
    "google.longrunning.Operations",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "spcs.v1.AgentCommands",
    "spcs.v1.Identity",
    "spcs.v1.StorageAdaptor",
}
# grpcurl exits with 64 + the gRPC status code when the call fails
EXIT_NOT_FOUND = 64 + 5
EXIT_ALREADY_EXISTS = 64 + 6


GRPCURL = find_grpcurl()
pytestmark = pytest.mark.skipif(GRPCURL is None, reason=MISSING)


@dataclass
class Grpcurl:
    workdir: Path  # an empty directory: no .proto files for grpcurl to find

    def run(
        self, address: str, *args: str, data: Any = None, flags: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(GRPCURL), "-plaintext", "-max-time", "60", *flags]
        if data is not None:
            argv += ["-d", "@"]
        argv += [address, *args]
        return subprocess.run(
            argv,
            input=None if data is None else json.dumps(data),
            capture_output=True,
            text=True,
            timeout=90,
            cwd=self.workdir,
        )

    def ok(self, address: str, *args: str, data: Any = None, flags: tuple[str, ...] = ()) -> str:
        result = self.run(address, *args, data=data, flags=flags)
        assert result.returncode == 0, (
            f"grpcurl {' '.join(args)} exited {result.returncode}: {result.stderr}"
        )
        return result.stdout

    def call(self, address: str, method: str, data: Any = None, *flags: str) -> dict[str, Any]:
        """Invoke `method` and parse the single JSON message grpcurl prints."""
        return json.loads(self.ok(address, method, data=data, flags=flags))


@dataclass
class Env:
    stack: Stack
    grpcurl: Grpcurl
    api: StorPoolApi

    @property
    def mgmt(self) -> str:
        assert self.stack.management is not None
        return self.stack.management.address

    @property
    def node(self) -> str:
        return self.stack.nodes[0].address


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    stack = Stack(tmp_path_factory.mktemp("stack"), hosts=1).start()
    assert stack.emulator is not None
    empty = tmp_path_factory.mktemp("cwd")
    processes = [*stack.nodes, stack.management]
    try:
        yield Env(
            stack,
            Grpcurl(empty),
            StorPoolApi(stack.emulator.host, stack.emulator.port, stack.emulator.token),
        )
    finally:
        stack.stop()
    # SIGTERM drains and exits 0
    assert {p.name: p.popen.returncode for p in processes if p} == {
        p.name: 0 for p in processes if p
    }


def test_list_services_and_methods(env: Env):
    assert set(env.grpcurl.ok(env.mgmt, "list").split()) == MANAGEMENT_SERVICES
    assert set(env.grpcurl.ok(env.node, "list").split()) == NODE_SERVICES
    methods = env.grpcurl.ok(env.mgmt, "list", "google.longrunning.Operations").split()
    assert {
        "google.longrunning.Operations.GetOperation",
        "google.longrunning.Operations.WaitOperation",
        "google.longrunning.Operations.CancelOperation",
        "google.longrunning.Operations.ListOperations",
        "google.longrunning.Operations.DeleteOperation",
    } <= set(methods)


def test_describe_service_and_message_template(env: Env):
    service = env.grpcurl.ok(env.mgmt, "describe", "spcs.v1.PrimaryDataStoreDriver")
    assert "spcs.v1.PrimaryDataStoreDriver is a service:" in service
    assert (
        "rpc CopyData ( .spcs.v1.CopyDataRequest ) returns ( .google.longrunning.Operation );"
        in service
    )
    message = env.grpcurl.ok(env.mgmt, "describe", "spcs.v1.InitializePoolRequest")
    assert "string url = 3 [(.spcs.v1.secret) = true];" in message
    templated = env.grpcurl.ok(
        env.mgmt, "describe", "spcs.v1.CreateVolumeRequest", flags=("-msg-template",)
    )
    template = json.loads(templated.split("Message template:", 1)[1])
    assert template["pool"] == {"pool_uuid": ""}
    assert template["volume"]["size_bytes"] == "0"


def test_health_check(env: Env):
    for address in (env.mgmt, env.node):
        assert env.grpcurl.call(address, "grpc.health.v1.Health/Check") == {"status": "SERVING"}
    per_service = env.grpcurl.call(
        env.mgmt, "grpc.health.v1.Health/Check", {"service": "spcs.v1.PrimaryDataStoreDriver"}
    )
    assert per_service == {"status": "SERVING"}
    unknown = env.grpcurl.run(env.mgmt, "grpc.health.v1.Health/Check", data={"service": "nope"})
    assert unknown.returncode == EXIT_NOT_FOUND
    assert "Code: NotFound" in unknown.stderr


def test_identity_and_node_registry(env: Env):
    info = env.grpcurl.call(env.node, "spcs.v1.Identity/GetInfo")
    assert info["name"] == "spcs-node" and info["host_id"] == "host-1"
    assert info["storpool_client_id"] == 1 and info["api"] == "spcs.v1"
    probe = env.grpcurl.call(env.node, "spcs.v1.Identity/Probe")
    assert probe["ready"] is True, probe
    nodes = env.grpcurl.call(env.mgmt, "spcs.v1.NodeRegistry/ListNodes")["nodes"]
    assert [(n["host_id"], n["address"], n["healthy"]) for n in nodes] == [
        ("host-1", env.node, True)
    ]


def test_request_id_reaches_the_log(env: Env):
    out = env.grpcurl.ok(
        env.mgmt,
        "spcs.v1.Identity/GetInfo",
        flags=("-v", "-H", "x-request-id: e2e-grpcurl-1"),
    )
    assert "x-request-id: e2e-grpcurl-1" in out.split("Response trailers received:", 1)[1]
    assert env.stack.management is not None
    line = "[e2e-grpcurl-1] rpc=/spcs.v1.Identity/GetInfo key=- status=OK"
    assert line in log_containing(env.stack.management.log_path, line)


def test_error_as_json(env: Env):
    result = env.grpcurl.run(
        env.mgmt,
        "spcs.v1.PrimaryDataStoreLifeCycle/GetPool",
        data={"pool_uuid": "no-such-pool"},
        flags=("-format-error",),
    )
    assert result.returncode == EXIT_NOT_FOUND
    assert result.stdout == ""
    error = json.loads(result.stderr)  # -format-error prints the status as JSON on stderr
    assert error["code"] == 5 and "no-such-pool" in error["message"]
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert error["details"][0]["reason"] == "NOT_FOUND"


def wait_done(env: Env, name: str, timeout: float = 60) -> dict[str, Any]:
    """Poll with GetOperation (as an operator would) until the operation is done."""
    deadline = time.monotonic() + timeout
    while True:
        op = env.grpcurl.call(
            env.mgmt, "google.longrunning.Operations/GetOperation", {"name": name}
        )
        assert op["name"] == name
        assert op["metadata"]["@type"] == "type.googleapis.com/spcs.v1.OperationMetadata"
        if op.get("done"):
            return op
        assert op["metadata"]["state"] in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"), op
        assert time.monotonic() < deadline, f"{name} not done in {timeout}s: {op}"
        time.sleep(0.2)


def test_pool_volume_copy_and_delete(env: Env):
    """InitializePool, AttachZone, HostConnect, CreateVolume, CopyData + GetOperation, the copied
    bytes on the device, then everything deleted again with nothing left in StorPool."""
    mgmt, call = env.mgmt, env.grpcurl.call
    pool = {"pool_uuid": "pool-e2e"}
    initialized = call(
        mgmt,
        "spcs.v1.PrimaryDataStoreLifeCycle/InitializePool",
        {
            "pool_uuid": "pool-e2e",
            "name": "sp-e2e",
            "url": TEMPLATE,  # the management service has the emulator's storpool.conf
            "zone_id": "zone-1",
            "capacity_bytes": str(1 << 40),
        },
    )
    assert initialized["state"] == "POOL_STATE_INITIALIZED"
    assert initialized["sp_template"] == TEMPLATE and initialized["url_form"] == "template"
    assert initialized["capacity_bytes"] == str(1 << 40)  # uint64 as a JSON string
    attached = call(
        mgmt,
        "spcs.v1.PrimaryDataStoreLifeCycle/AttachZone",
        {"pool_uuid": "pool-e2e", "zone_id": "zone-1", "hypervisor": "KVM"},
    )
    assert attached["state"] == "POOL_STATE_UP"
    connected = call(
        mgmt, "spcs.v1.HostListener/HostConnect", {"host_id": "host-1", "pool_uuid": "pool-e2e"}
    )
    assert connected["connected"] is True and connected["node"]["pool_uuids"] == ["pool-e2e"]

    request = {"pool": pool, "volume": {"uuid": "vol-e2e-1", "size_bytes": str(64 * MIB)}}
    volume = call(mgmt, "spcs.v1.PrimaryDataStoreDriver/CreateVolume", request)
    assert volume["uuid"] == "vol-e2e-1" and volume["size_bytes"] == str(64 * MIB)
    assert volume["path"] == f"/dev/storpool-byid/{volume['global_id']}"
    assert env.api.volume(f"~{volume['global_id']}").tags["uuid"] == "vol-e2e-1"
    replay = call(mgmt, "spcs.v1.PrimaryDataStoreDriver/CreateVolume", request)
    assert replay["path"] == volume["path"]
    request["volume"]["size_bytes"] = str(128 * MIB)
    conflict = env.grpcurl.run(mgmt, "spcs.v1.PrimaryDataStoreDriver/CreateVolume", data=request)
    assert conflict.returncode == EXIT_ALREADY_EXISTS, conflict.stderr

    # a RAW template in a CloudStack template directory on the secondary store
    template_dir = env.stack.secondary / "template" / "tmpl" / "2" / "301"
    template_dir.mkdir(parents=True)
    content = os.urandom(2 * MIB) + bytes(4 * MIB) + os.urandom(2 * MIB)
    (template_dir / "301.raw").write_bytes(content)
    copy = {
        "operation_id": "copy-e2e-1",
        "source": {
            "template": {
                "uuid": "tmpl-e2e-301",
                "id": "301",
                "path": "template/tmpl/2/301",
                "format": "IMAGE_FORMAT_RAW",
                "store": {"secondary": {"url": f"file://{env.stack.secondary}"}},
            }
        },
        "destination": {
            "volume": {
                "uuid": "vol-e2e-root",
                "type": "VOLUME_TYPE_ROOT",
                "size_bytes": str(16 * MIB),
                "store": {"primary": pool},
            }
        },
    }
    started = call(mgmt, "spcs.v1.PrimaryDataStoreDriver/CopyData", copy)
    assert started["name"] == "operations/copy-e2e-1"
    assert started["metadata"]["kind"] == "spcs.v1.PrimaryDataStoreDriver/CopyData"
    done = wait_done(env, started["name"])
    assert "error" not in done, done
    assert done["metadata"]["state"] == "JOB_STATE_SUCCEEDED"
    result = done["response"]
    assert result["@type"] == "type.googleapis.com/spcs.v1.CopyDataResult"
    assert result["kind"] == "template-to-volume" and result["host_id"] == "host-1"
    root = result["result"]["volume"]
    assert root["uuid"] == "vol-e2e-root" and root["size_bytes"] == str(16 * MIB)
    listed = call(mgmt, "google.longrunning.Operations/ListOperations")["operations"]
    assert "operations/copy-e2e-1" in [op["name"] for op in listed]

    # the bytes arrived: attach the new volume on host-1 through the service and read it
    grant = {"object": {"volume": {"path": root["path"]}}, "host_id": "host-1"}
    assert call(mgmt, "spcs.v1.PrimaryDataStoreDriver/GrantAccess", grant)["path"] == root["path"]
    device = env.stack.device_root(1) / "storpool-byid" / root["global_id"]
    data = device.read_bytes()
    assert data[: len(content)] == content and not data[len(content) :].strip(b"\0")
    assert call(mgmt, "spcs.v1.PrimaryDataStoreDriver/RevokeAccess", grant) == {"detached": True}

    refused = env.grpcurl.run(
        mgmt, "spcs.v1.PrimaryDataStoreLifeCycle/DeletePool", data={"pool_uuid": "pool-e2e"}
    )
    assert refused.returncode == 64 + 9 and "FailedPrecondition" in refused.stderr  # 9: FP
    for uuid in ("vol-e2e-1", "vol-e2e-root"):
        deleted = call(
            mgmt,
            "spcs.v1.PrimaryDataStoreDriver/DeleteData",
            {"pool": pool, "object": {"volume": {"uuid": uuid}}},
        )
        assert deleted == {"deleted": True}
    again = call(
        mgmt,
        "spcs.v1.PrimaryDataStoreDriver/DeleteData",
        {"pool": pool, "object": {"volume": {"uuid": "vol-e2e-1"}}},
        "-emit-defaults",
    )
    assert again == {"deleted": False}
    gone = call(mgmt, "spcs.v1.PrimaryDataStoreLifeCycle/DeletePool", {"pool_uuid": "pool-e2e"})
    assert gone == {"deleted": True, "template_snapshots_removed": 1}
    deleted_op = call(
        mgmt, "google.longrunning.Operations/DeleteOperation", {"name": started["name"]}
    )
    assert deleted_op == {}
    assert call(mgmt, "spcs.v1.PrimaryDataStoreLifeCycle/ListPools") == {}
    assert env.api.volumes() == []
    assert [s.name for s in env.api.snapshots() if not s.deleted] == []
