"""The management suite's view of a running stack (tests/stacks.py): gRPC stubs, pools, volumes and
the bytes behind them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs.storpool.api import StorPoolApi
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    strategies_pb2_grpc,
    types_pb2,
)
from tests.stacks import TEMPLATE, Stack, stack, storpool_api
from tests.support import pattern, patterned_raw, qemu_img

MIB = 1 << 20
OTHER_TEMPLATE = "spcs-other"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Mgmt:
    stack: Stack
    channel: grpc.Channel
    api: StorPoolApi
    pool_uuid: str = ""

    @property
    def lifecycle(self) -> lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub:
        return lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(self.channel)

    @property
    def driver(self) -> driver_pb2_grpc.PrimaryDataStoreDriverStub:
        return driver_pb2_grpc.PrimaryDataStoreDriverStub(self.channel)

    @property
    def snapshots(self) -> strategies_pb2_grpc.SnapshotStrategyStub:
        return strategies_pb2_grpc.SnapshotStrategyStub(self.channel)

    @property
    def vm_snapshots(self) -> strategies_pb2_grpc.VMSnapshotStrategyStub:
        return strategies_pb2_grpc.VMSnapshotStrategyStub(self.channel)

    @property
    def hosts(self) -> hosts_pb2_grpc.HostListenerStub:
        return hosts_pb2_grpc.HostListenerStub(self.channel)

    @property
    def operations(self) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.channel)

    @property
    def url(self) -> str:
        return f"file://{self.stack.secondary}"

    def pool_url(self, template: str = TEMPLATE, token: str | None = None) -> str:
        emu = self.stack.emulator
        assert emu is not None
        return (
            f"SP_API_HTTP={emu.host}:{emu.port};SP_AUTH_TOKEN={token or emu.token};"
            f"SP_TEMPLATE={template}"
        )

    def add_pool(self, template: str = TEMPLATE, name: str | None = None) -> str:
        pool = new_id("pool")
        self.lifecycle.InitializePool(
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid=pool,
                name=name or pool,
                url=self.pool_url(template),
                zone_id="zone-1",
                capacity_bytes=1 << 40,
            )
        )
        self.lifecycle.AttachZone(lifecycle_pb2.AttachZoneRequest(pool_uuid=pool, zone_id="zone-1"))
        for host in ("host-1", "host-2"):
            reply = self.hosts.HostConnect(
                hosts_pb2.HostConnectRequest(host_id=host, pool_uuid=pool)
            )
            assert reply.connected, reply.reason
        return pool

    def primary(self, pool: str | None = None) -> types_pb2.DataStore:
        return types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool or self.pool_uuid))

    def secondary(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(secondary=types_pb2.SecondaryStore(url=self.url))

    def pool_ref(self, pool: str | None = None) -> types_pb2.PrimaryStore:
        return types_pb2.PrimaryStore(pool_uuid=pool or self.pool_uuid)

    def create_volume(self, size: int = 64 * MIB, **fields) -> types_pb2.Volume:
        volume = types_pb2.Volume(uuid=fields.pop("uuid", new_id("vol")), size_bytes=size, **fields)
        return self.driver.CreateVolume(
            driver_pb2.CreateVolumeRequest(pool=self.pool_ref(), volume=volume)
        )

    def take_snapshot(self, volume_path: str, **fields) -> types_pb2.Snapshot:
        snapshot = types_pb2.Snapshot(
            uuid=fields.pop("uuid", new_id("snap")), volume_path=volume_path, **fields
        )
        return self.driver.TakeSnapshot(
            driver_pb2.TakeSnapshotRequest(pool=self.pool_ref(), snapshot=snapshot)
        )

    def copy(
        self, source: types_pb2.DataObject, destination: types_pb2.DataObject, **options
    ) -> driver_pb2.CopyDataResult:
        op = self.driver.CopyData(
            driver_pb2.CopyDataRequest(
                operation_id=new_id("op"),
                source=source,
                destination=destination,
                options=driver_pb2.CopyOptions(**options),
            )
        )
        done = self.wait(op.name)
        assert not done.HasField("error"), done.error
        result = driver_pb2.CopyDataResult()
        assert done.response.Unpack(result)
        return result

    def wait(self, name: str, timeout: float = 180) -> operations_pb2.Operation:
        deadline = time.monotonic() + timeout
        while True:
            op = self.operations.WaitOperation(operations_pb2.WaitOperationRequest(name=name))
            if op.done:
                return op
            assert time.monotonic() < deadline, f"{name} did not finish"

    def node_channel(self, n: int) -> grpc.Channel:
        return grpc.insecure_channel(self.stack.nodes[n - 1].address)

    def attach_here(self, path: str, host: int = 1, snapshot: bool = False) -> Path:
        """Attach through a node (as CloudStack's agent would) and return the local device."""
        with self.node_channel(host) as channel:
            node_pb2_grpc.StorageAdaptorStub(channel).ConnectPhysicalDisk(
                node_pb2.ConnectPhysicalDiskRequest(
                    disk=node_pb2.DiskRef(
                        path=path,
                        kind=node_pb2.DISK_KIND_SNAPSHOT if snapshot else node_pb2.DISK_KIND_VOLUME,
                    )
                )
            )
        return self.stack.device_root(host) / "storpool-byid" / path.rsplit("/", 1)[1]

    def detach_here(self, path: str, host: int = 1) -> None:
        with self.node_channel(host) as channel:
            node_pb2_grpc.StorageAdaptorStub(channel).DisconnectPhysicalDisk(
                node_pb2.DisconnectPhysicalDiskRequest(
                    disk=node_pb2.DiskRef(path=path), force_allowed=True
                )
            )

    def read(self, path: str, snapshot: bool = False) -> bytes:
        device = self.attach_here(path, snapshot=snapshot)
        try:
            return device.read_bytes()
        finally:
            self.detach_here(path)

    def write(self, path: str, writes: dict[int, bytes]) -> None:
        device = self.attach_here(path)
        try:
            with device.open("r+b") as handle:
                for offset, data in writes.items():
                    handle.seek(offset)
                    handle.write(data)
        finally:
            self.detach_here(path)

    def template_on_secondary(
        self, template_id: int = 201, size: int = 96 * MIB
    ) -> tuple[types_pb2.Template, bytes]:
        """A QCOW2 template in a CloudStack template directory; returns it and its raw bytes."""
        directory = self.stack.secondary / "template" / "tmpl" / "2" / str(template_id)
        directory.mkdir(parents=True, exist_ok=True)
        raw = patterned_raw(
            directory.parent / f"{template_id}.raw",
            size,
            {0: pattern(template_id, 2 * MIB), 30 * MIB: pattern(template_id + 1, 3 * MIB)},
        )
        image = directory / f"{template_id}.qcow2"
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
        data = raw.read_bytes()
        raw.unlink()
        return types_pb2.Template(
            uuid=new_id("tmpl"),
            name=f"{template_id}-2-t",
            id=template_id,
            path=f"template/tmpl/2/{template_id}",
            store=self.secondary(),
            format=types_pb2.IMAGE_FORMAT_QCOW2,
        ), data

    def storpool_names(self) -> set[str]:
        return {v.name for v in self.api.volumes()} | {
            s.name for s in self.api.snapshots() if not s.deleted
        }


@contextmanager
def running_stack(
    tmp: Path,
    *,
    management_args: Sequence[str] = (),
    node_args: Sequence[str] = (),
    pool: bool = True,
    loop: bool = False,
    replicas: int = 1,
) -> Iterator[Mgmt]:
    """A stack (tests/stacks.py: emulator, management, two nodes) with a pool whose hosts are
    connected; the extra arguments come after the test defaults, so they override them. With
    `loop` the hosts' StorPool devices are loop devices (needs root)."""
    with stack(
        tmp,
        extra_templates={OTHER_TEMPLATE: 64 << 30},
        management_args=management_args,
        node_args=node_args,
        loop=loop,
        replicas=replicas,
    ) as running:
        assert running.emulator is not None and running.management is not None
        mgmt = Mgmt(
            running,
            grpc.insecure_channel(running.management.address),
            storpool_api(running.emulator),
        )
        try:
            if pool:
                mgmt.pool_uuid = mgmt.add_pool()
            yield mgmt
        finally:
            mgmt.channel.close()


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")
