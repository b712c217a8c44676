"""The contract suite's harness: gRPC clients for a whole stack, a resource tracker, assertions.

The suite talks only gRPC to the services (management and the two nodes). Two things reach
around gRPC, both allowed by the suite's brief: the emulated hosts' device files (to write and
read a few bytes and prove two paths are the same volume) and a read-only listing of the
emulator's objects (the leak check).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from spcs.common.identity import IdentityServicer
from spcs.management import servicers as management
from spcs.node import servicers as node
from spcs.storpool.api import StorPoolApi
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    identity_pb2,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
    types_pb2,
)
from tests.stacks import TEMPLATE, Stack
from tests.support import patterned_raw, qemu_img

MIB = 1 << 20
ZONE = "zone-1"
HOSTS = ("host-1", "host-2")
# One StorPool template per pool (spcs refuses two pools on one endpoint and template).
BASE_TEMPLATE = TEMPLATE  # the pool the error tests share
LIFECYCLE_TEMPLATE = "spcs-contract"  # the pools the lifecycle creates and deletes
OTHER_TEMPLATE = "spcs-contract-other"  # never a pool: for "wrong template" requests
# A device path of nothing: well-formed, never a StorPool object.
MISSING_PATH = "/dev/storpool-byid/zz9.zz9.zz9"
OK = grpc.StatusCode.OK

# Every spcs.v1 service and the module that defines it; which server serves which.
SERVICE_MODULES = {
    "Identity": identity_pb2,
    "PrimaryDataStoreLifeCycle": lifecycle_pb2,
    "PrimaryDataStoreDriver": driver_pb2,
    "SnapshotStrategy": strategies_pb2,
    "VMSnapshotStrategy": strategies_pb2,
    "HostListener": hosts_pb2,
    "NodeRegistry": hosts_pb2,
    "StorageAdaptor": node_pb2,
    "AgentCommands": node_pb2,
}
# the class serving each service (its handlers declare their contracts)
SERVICERS: dict[str, type] = {
    "Identity": IdentityServicer,
    "PrimaryDataStoreLifeCycle": management.LifecycleServicer,
    "PrimaryDataStoreDriver": management.DriverServicer,
    "SnapshotStrategy": management.SnapshotStrategyServicer,
    "VMSnapshotStrategy": management.VMSnapshotStrategyServicer,
    "HostListener": management.HostListenerServicer,
    "NodeRegistry": management.NodeRegistryServicer,
    "StorageAdaptor": node.StorageAdaptorServicer,
    "AgentCommands": node.AgentCommandsServicer,
}
MANAGEMENT_SERVICES = (
    "PrimaryDataStoreLifeCycle",
    "PrimaryDataStoreDriver",
    "SnapshotStrategy",
    "VMSnapshotStrategy",
    "HostListener",
    "NodeRegistry",
)
NODE_SERVICES = ("StorageAdaptor", "AgentCommands")


def iterations() -> int:
    """How many times the lifecycle runs: SPCS_CONTRACT_ITERATIONS, default 10 (csi-sanity's
    IdempotentCount)."""
    raw = os.environ.get("SPCS_CONTRACT_ITERATIONS", "10")
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"SPCS_CONTRACT_ITERATIONS={raw!r} is not a number") from None
    if count < 1:
        raise ValueError(f"SPCS_CONTRACT_ITERATIONS={count} must be at least 1")
    return count


def new_id(prefix: str) -> str:
    return f"ct-{prefix}-{uuid.uuid4().hex[:10]}"


# ---- calling any RPC by name --------------------------------------------------------------------


def method(full: str) -> MethodDescriptor:
    """The descriptor of `Service/Method` (a spcs.v1 service)."""
    service, _, name = full.partition("/")
    return SERVICE_MODULES[service].DESCRIPTOR.services_by_name[service].methods_by_name[name]


def request_class(full: str) -> type[Message]:
    return message_factory.GetMessageClass(method(full).input_type)


def all_methods(services: tuple[str, ...]) -> list[str]:
    return [
        f"{service}/{m.name}"
        for service in services
        for m in SERVICE_MODULES[service].DESCRIPTOR.services_by_name[service].methods
    ]


def invoke(channel: grpc.Channel, full: str, request: Message, timeout: float = 60) -> Message:
    descriptor = method(full)
    reply_class = message_factory.GetMessageClass(descriptor.output_type)
    serializers = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": reply_class.FromString,
    }
    if descriptor.client_streaming:  # the request as a stream of one message
        return channel.stream_unary(f"/spcs.v1.{full}", **serializers)(
            iter([request]), timeout=timeout
        )
    return channel.unary_unary(f"/spcs.v1.{full}", **serializers)(request, timeout=timeout)


# ---- assertions ---------------------------------------------------------------------------------


def names_word(text: str, word: str) -> bool:
    """`word` appears in `text` as a whole word (dots and underscores belong to the word)."""
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text) is not None


def expect_error(
    call: Callable[[Any], Any], request: Message, code: grpc.StatusCode, *words: str
) -> grpc.RpcError:
    """The call fails with `code` and a message naming every one of `words`."""
    try:
        reply = call(request)
    except grpc.RpcError as error:
        assert error.code() == code, (
            f"expected {code.name}, got {error.code().name}: {error.details()}"
        )
        for word in words:
            assert names_word(error.details() or "", word), (
                f"{code.name} as expected, but the message does not name {word!r}: "
                f"{error.details()}"
            )
        return error
    raise AssertionError(f"expected {code.name}, the call succeeded: {reply}")


def code_of(call: Callable[[Any], Any], request: Message) -> tuple[grpc.StatusCode, str]:
    try:
        call(request)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return OK, ""


def twice(
    call: Callable[[Any], Message],
    request: Message,
    normalize: Callable[[Message], None] | None = None,
) -> Message:
    """Call twice with the same request; the replies must be equal (after `normalize`, which
    blanks fields that legitimately change between calls, e.g. timestamps)."""
    first = call(request)
    second = call(request)
    a, b = type(first)(), type(second)()
    a.CopyFrom(first)
    b.CopyFrom(second)
    if normalize is not None:
        normalize(a)
        normalize(b)
    assert a == b, f"the replay answered differently:\nfirst: {first}\nreplay: {second}"
    return first


def clear(message: Message, dotted: str) -> None:
    """Clear a field given as a dotted path; `name[i]` steps into a repeated field."""
    *parents, leaf = dotted.split(".")
    target: Any = message
    for part in parents:
        name, _, index = part.partition("[")
        target = getattr(target, name)
        if index:
            target = target[int(index.rstrip("]"))]
    target.ClearField(leaf)


# ---- the stack ----------------------------------------------------------------------------------


@dataclass
class Contract:
    """Clients for a running stack: management, and a node per emulated host."""

    stack: Stack
    management: grpc.Channel
    nodes: list[grpc.Channel]
    api: StorPoolApi  # read-only inventory for the leak check; never used to change state

    @property
    def lifecycle(self) -> lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub:
        return lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(self.management)

    @property
    def driver(self) -> driver_pb2_grpc.PrimaryDataStoreDriverStub:
        return driver_pb2_grpc.PrimaryDataStoreDriverStub(self.management)

    @property
    def snapshots(self) -> strategies_pb2_grpc.SnapshotStrategyStub:
        return strategies_pb2_grpc.SnapshotStrategyStub(self.management)

    @property
    def vm_snapshots(self) -> strategies_pb2_grpc.VMSnapshotStrategyStub:
        return strategies_pb2_grpc.VMSnapshotStrategyStub(self.management)

    @property
    def hosts(self) -> hosts_pb2_grpc.HostListenerStub:
        return hosts_pb2_grpc.HostListenerStub(self.management)

    @property
    def registry(self) -> hosts_pb2_grpc.NodeRegistryStub:
        return hosts_pb2_grpc.NodeRegistryStub(self.management)

    @property
    def operations(self) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.management)

    def adaptor(self, host: int) -> node_pb2_grpc.StorageAdaptorStub:
        return node_pb2_grpc.StorageAdaptorStub(self.nodes[host - 1])

    def commands(self, host: int) -> node_pb2_grpc.AgentCommandsStub:
        return node_pb2_grpc.AgentCommandsStub(self.nodes[host - 1])

    def node_operations(self, host: int) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.nodes[host - 1])

    # ---- requests ---------------------------------------------------------------------------

    @property
    def secondary_url(self) -> str:
        return f"file://{self.stack.secondary}"

    def secondary(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(secondary=types_pb2.SecondaryStore(url=self.secondary_url))

    @staticmethod
    def primary(pool: str) -> types_pb2.DataStore:
        return types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool))

    def pool_url(self, template: str, token: str | None = None) -> str:
        emu = self.stack.emulator
        assert emu is not None
        return (
            f"SP_API_HTTP={emu.host}:{emu.port};SP_AUTH_TOKEN={token or emu.token};"
            f"SP_TEMPLATE={template}"
        )

    def initialize_request(self, pool: str, template: str) -> lifecycle_pb2.InitializePoolRequest:
        return lifecycle_pb2.InitializePoolRequest(
            pool_uuid=pool,
            name=pool,
            url=self.pool_url(template),
            zone_id=ZONE,
            capacity_bytes=1 << 40,
            tags=["contract"],
        )

    # ---- operations -------------------------------------------------------------------------

    def wait(
        self, name: str, operations: operations_pb2_grpc.OperationsStub | None = None
    ) -> operations_pb2.Operation:
        stub = operations or self.operations
        deadline = time.monotonic() + 120
        while True:
            op = stub.WaitOperation(operations_pb2.WaitOperationRequest(name=name), timeout=70)
            if op.done:
                return op
            assert time.monotonic() < deadline, f"{name} did not finish in 120 s"

    def succeeded(self, name: str, result: Message) -> Message:
        """Wait for an operation that must succeed; unpack its response into `result`."""
        op = self.wait(name)
        assert not op.HasField("error"), f"{name} failed: {op.error}"
        assert op.response.Unpack(result), f"{name} answered {op.response.type_url}"
        return result

    # ---- devices (bytes only, to prove identity) --------------------------------------------

    def device(self, host: int, path: str) -> Path:
        """The emulated host's device file behind a CloudStack path `/dev/storpool-byid/<gid>`."""
        return self.stack.device_root(host) / "storpool-byid" / path.rsplit("/", 1)[1]

    def write(self, host: int, path: str, offset: int, data: bytes) -> None:
        with self.device(host, path).open("r+b") as handle:
            handle.seek(offset)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, host: int, path: str, offset: int, length: int) -> bytes:
        with self.device(host, path).open("rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    # ---- the leak check ---------------------------------------------------------------------

    def inventory(self) -> dict[str, set[tuple[str, ...]]]:
        """Every StorPool object and attachment in the emulator (read-only)."""
        return {
            "volumes": {(v.name, v.global_id) for v in self.api.volumes()},
            "snapshots": {
                (s.name, s.global_id, "deleted" if s.deleted else "live")
                for s in self.api.snapshots()
            },
            "attachments": {(a.global_id, str(a.client), a.rights) for a in self.api.attachments()},
        }

    def running_operations(self) -> dict[str, list[str]]:
        """Names of unfinished operations on management and on every node."""
        stubs = {"management": self.operations} | {
            f"node{n}": self.node_operations(n) for n in range(1, len(self.nodes) + 1)
        }
        running = {}
        for where, stub in stubs.items():
            reply = stub.ListOperations(
                operations_pb2.ListOperationsRequest(filter="done=false", page_size=1000)
            )
            running[where] = [op.name for op in reply.operations]
        return running


def qcow2_template(directory: Path, name: str, size: int, writes: dict[int, bytes]) -> Path:
    """A QCOW2 image (made by qemu-img from a raw file holding `writes`)."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = patterned_raw(directory / f".{name}.raw", size, writes)
    image = directory / f"{name}.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    raw.unlink()
    return image


# ---- the resource tracker -----------------------------------------------------------------------


@dataclass
class _Entry:
    what: str
    delete: Callable[[], None]


@dataclass
class Resources:
    """Every object the suite creates, deleted in reverse order by `cleanup()` (csi-sanity's
    `Resources`). Deletes are idempotent, so objects a test already deleted are fine, and so is
    NOT_FOUND (the object's pool was deleted already); any other failure is collected and
    reported after everything else was attempted. Thread-safe."""

    c: Contract
    _entries: list[_Entry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, what: str, delete: Callable[[], None]) -> None:
        with self._lock:
            self._entries.append(_Entry(what, delete))

    def pool(self, pool: str) -> str:
        def delete() -> None:
            self.c.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=pool))

        self._add(f"pool {pool}", delete)
        return pool

    def volume(self, pool: str, volume: types_pb2.Volume) -> types_pb2.Volume:
        ref = types_pb2.Volume(uuid=volume.uuid, path=volume.path)

        def delete() -> None:
            self.c.driver.DeleteData(
                driver_pb2.DeleteDataRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=pool),
                    object=types_pb2.DataObject(volume=ref),
                )
            )

        self._add(f"volume {volume.uuid or volume.path} on {pool}", delete)
        return volume

    def snapshot(self, pool: str, snapshot: types_pb2.Snapshot) -> types_pb2.Snapshot:
        ref = types_pb2.Snapshot(uuid=snapshot.uuid, path=snapshot.path)

        def delete() -> None:
            self.c.snapshots.DeleteSnapshot(
                strategies_pb2.DeleteSnapshotRequest(
                    snapshot=ref, pool=types_pb2.PrimaryStore(pool_uuid=pool)
                )
            )

        self._add(f"snapshot {snapshot.uuid or snapshot.path} on {pool}", delete)
        return snapshot

    def template(self, pool: str, template_uuid: str) -> None:
        """A template's cache snapshot on a pool."""

        def delete() -> None:
            self.c.driver.DeleteData(
                driver_pb2.DeleteDataRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=pool),
                    object=types_pb2.DataObject(template=types_pb2.Template(uuid=template_uuid)),
                )
            )

        self._add(f"template {template_uuid} cached on {pool}", delete)

    def vm_snapshot(self, pool: str, snapshot: strategies_pb2.VMSnapshot) -> None:
        request = strategies_pb2.DeleteVMSnapshotRequest(
            vm_snapshot_uuid=snapshot.vm_snapshot_uuid,
            volumes=snapshot.volumes,
            pool=types_pb2.PrimaryStore(pool_uuid=pool),
        )
        self._add(
            f"VM snapshot {snapshot.vm_snapshot_uuid} on {pool}",
            lambda: self.c.vm_snapshots.DeleteVMSnapshot(request),
        )

    def operation(self, name: str, host: int = 0) -> str:
        """An operation started on management (host 0) or on a node: waited for, then deleted."""
        stub = self.c.node_operations(host) if host else self.c.operations

        def delete() -> None:
            try:
                self.c.wait(name, stub)
                stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise

        self._add(f"{name} on {'node' + str(host) if host else 'management'}", delete)
        return name

    def file(self, path: Path) -> Path:
        """A file on secondary storage (CloudStack deletes those; spcs has no RPC for it)."""
        self._add(f"file {path}", lambda: path.unlink(missing_ok=True))
        return path

    def node_registration(self, host_id: str) -> None:
        self._add(
            f"node registration {host_id}",
            lambda: self.c.hosts.HostRemoved(hosts_pb2.HostEventRequest(host_id=host_id)),
        )

    def cleanup(self) -> list[str]:
        """Delete everything tracked (newest first); returns the failures."""
        with self._lock:
            entries, self._entries = self._entries[::-1], []
        failures = []
        for entry in entries:
            try:
                entry.delete()
            except grpc.RpcError as error:
                # NOT_FOUND: its pool is gone already (the inventory check catches real leaks)
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    failures.append(f"{entry.what}: {error.code().name}: {error.details()}")
            except Exception as error:
                failures.append(f"{entry.what}: {error!r}")
        return failures
