"""Error codes, table-driven: NOT_FOUND naming the missing object, OK for deletes and detaches
of objects that are not there, and INVALID_ARGUMENT naming the field for invalid values. Every
row also checks that the failed call changed nothing in StorPool (the inventory is the same).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf.message import Message

from spcs.v1 import (
    driver_pb2,
    hosts_pb2,
    lifecycle_pb2,
    node_pb2,
    strategies_pb2,
    types_pb2,
)
from tests.contract.conftest import Objects, Template
from tests.contract.harness import (
    MIB,
    MISSING_PATH,
    OTHER_TEMPLATE,
    ZONE,
    Contract,
    Resources,
    expect_error,
    new_id,
)

MISSING_GID = MISSING_PATH.rsplit("/", 1)[1]
UNKNOWN_POOL = "ct-no-such-pool"
GHOST_HOST = "ct-no-such-host"
UNKNOWN_OP = "operations/ct-no-such-op"
OPS = "google.longrunning.Operations"


@dataclass(frozen=True)
class Ctx:
    c: Contract
    o: Objects
    template: Template

    @property
    def pool(self) -> types_pb2.PrimaryStore:
        return types_pb2.PrimaryStore(pool_uuid=self.o.pool)

    @property
    def primary(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(primary=self.pool)

    @property
    def secondary(self) -> types_pb2.SecondaryStore:
        return types_pb2.SecondaryStore(url=self.c.secondary_url)


@dataclass(frozen=True)
class Row:
    where: str  # "management" or "node"
    rpc: str  # Service/Method; google.longrunning.Operations/<Method> for operations
    build: Callable[[Ctx], Message]
    expect: tuple[str, ...] | Callable[[Ctx, Message], None]  # words of the error, or a check

    @property
    def id(self) -> str:
        return f"{self.where}:{self.rpc.rsplit('.', 1)[-1]}"


def call(x: Ctx, row: Row) -> Callable[[Message], Message]:
    service, _, name = row.rpc.partition("/")
    host = 1 if row.where == "node" else 0
    stubs = {
        "PrimaryDataStoreLifeCycle": x.c.lifecycle,
        "PrimaryDataStoreDriver": x.c.driver,
        "SnapshotStrategy": x.c.snapshots,
        "VMSnapshotStrategy": x.c.vm_snapshots,
        "HostListener": x.c.hosts,
        "NodeRegistry": x.c.registry,
        "StorageAdaptor": x.c.adaptor(1),
        "AgentCommands": x.c.commands(1),
        OPS: x.c.node_operations(1) if host else x.c.operations,
    }
    return getattr(stubs[service], name)


def volume_object(path: str, x: Ctx) -> types_pb2.DataObject:
    return types_pb2.DataObject(volume=types_pb2.Volume(path=path, store=x.primary))


# ---- NOT_FOUND, naming what is missing ----------------------------------------------------------

NOT_FOUND: list[Row] = [
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/GetPool",
        lambda x: lifecycle_pb2.PoolRef(pool_uuid=UNKNOWN_POOL),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/AttachZone",
        lambda x: lifecycle_pb2.AttachZoneRequest(pool_uuid=UNKNOWN_POOL, zone_id=ZONE),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/UpdatePool",
        lambda x: lifecycle_pb2.UpdatePoolRequest(pool_uuid=UNKNOWN_POOL, capacity_bytes=1),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/InitializePool",
        lambda x: lifecycle_pb2.InitializePoolRequest(
            pool_uuid=new_id("pool"),
            name="t",
            url=x.c.pool_url("ct-no-such-template"),
            zone_id=ZONE,
            capacity_bytes=1 << 40,
        ),
        ("ct-no-such-template",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/CreateVolume",
        lambda x: driver_pb2.CreateVolumeRequest(
            pool=types_pb2.PrimaryStore(pool_uuid=UNKNOWN_POOL),
            volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB),
        ),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/GetStorageStats",
        lambda x: driver_pb2.GetStorageStatsRequest(
            pool=types_pb2.PrimaryStore(pool_uuid=UNKNOWN_POOL)
        ),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "HostListener/HostConnect",
        lambda x: hosts_pb2.HostConnectRequest(host_id="host-1", pool_uuid=UNKNOWN_POOL),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/TakeSnapshot",
        lambda x: driver_pb2.TakeSnapshotRequest(
            pool=x.pool, snapshot=types_pb2.Snapshot(uuid=new_id("snap"), volume_path=MISSING_PATH)
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/RevertSnapshot",
        lambda x: driver_pb2.RevertSnapshotRequest(
            pool=x.pool,
            snapshot=types_pb2.Snapshot(path=MISSING_PATH),
            volume=types_pb2.Volume(path=x.o.volume.path),
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/RevertSnapshot",
        lambda x: driver_pb2.RevertSnapshotRequest(
            pool=x.pool,
            snapshot=types_pb2.Snapshot(uuid="ct-no-such-snapshot"),
            volume=types_pb2.Volume(path=x.o.volume.path),
        ),
        ("ct-no-such-snapshot",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/RevertSnapshot",
        lambda x: driver_pb2.RevertSnapshotRequest(
            pool=x.pool,
            snapshot=types_pb2.Snapshot(path=x.o.snapshot.path),
            volume=types_pb2.Volume(path=MISSING_PATH),
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ResizeVolume",
        lambda x: driver_pb2.ResizeVolumeRequest(
            pool=x.pool, volume=types_pb2.Volume(path=MISSING_PATH), new_size_bytes=4 * MIB
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ResizeVolume",
        lambda x: driver_pb2.ResizeVolumeRequest(
            pool=x.pool, volume=types_pb2.Volume(uuid="ct-no-such-volume"), new_size_bytes=4 * MIB
        ),
        ("ct-no-such-volume",),
    ),
    *[
        Row(
            "management",
            f"PrimaryDataStoreDriver/{name}",
            lambda x, r=request: r(pool=x.pool, volume_path=MISSING_PATH),
            (MISSING_GID,),
        )
        for name, request in (
            ("GetVolumeStats", driver_pb2.GetVolumeStatsRequest),
            ("DetachVolumeFromAllStorageNodes", driver_pb2.DetachVolumeFromAllStorageNodesRequest),
        )
    ],
    Row(
        "management",
        "PrimaryDataStoreDriver/ProvideVmInfo",
        lambda x: driver_pb2.ProvideVmInfoRequest(
            pool=x.pool, volume=types_pb2.Volume(path=MISSING_PATH, vm_uuid="vm-1")
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ProvideVmTags",
        lambda x: driver_pb2.ProvideVmTagsRequest(
            pool=x.pool, vm_uuid="vm-1", volume_paths=[MISSING_PATH], key="vc-policy", value="d"
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ChangeVolumeOffering",
        lambda x: driver_pb2.ChangeVolumeOfferingRequest(
            pool=x.pool, volume=types_pb2.Volume(path=MISSING_PATH, max_iops=10)
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/MigrateVolume",
        lambda x: driver_pb2.MigrateVolumeRequest(
            source_pool=x.pool, volume=types_pb2.Volume(path=MISSING_PATH), destination_pool=x.pool
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/MigrateVolume",
        lambda x: driver_pb2.MigrateVolumeRequest(
            source_pool=x.pool,
            volume=types_pb2.Volume(path=x.o.volume.path),
            destination_pool=types_pb2.PrimaryStore(pool_uuid=UNKNOWN_POOL),
        ),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/GrantAccess",
        lambda x: driver_pb2.GrantAccessRequest(
            object=volume_object(MISSING_PATH, x), host_id="host-1"
        ),
        (MISSING_GID,),
    ),
    *[
        Row(
            "management",
            f"PrimaryDataStoreDriver/{name}",
            lambda x, r=request: r(object=volume_object(x.o.volume.path, x), host_id=GHOST_HOST),
            (GHOST_HOST,),
        )
        for name, request in (
            ("GrantAccess", driver_pb2.GrantAccessRequest),
            ("RevokeAccess", driver_pb2.RevokeAccessRequest),
        )
    ],
    Row(
        "management",
        "PrimaryDataStoreDriver/CopyData",
        lambda x: driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path=MISSING_PATH, store=x.primary)
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=x.primary)
            ),
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/CopyData",
        lambda x: driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                template=types_pb2.Template(uuid=new_id("tmpl"), path=MISSING_PATH, store=x.primary)
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=x.primary)
            ),
        ),
        (MISSING_PATH,),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/CopyData",
        lambda x: driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                template=types_pb2.Template(
                    uuid=new_id("tmpl"),
                    path=x.template.install_path,
                    store=types_pb2.DataStore(secondary=x.secondary),
                )
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(
                    uuid=new_id("vol"),
                    store=types_pb2.DataStore(
                        primary=types_pb2.PrimaryStore(pool_uuid=UNKNOWN_POOL)
                    ),
                )
            ),
        ),
        (UNKNOWN_POOL,),
    ),
    Row(
        "management",
        "SnapshotStrategy/BackupSnapshot",
        lambda x: strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot=types_pb2.Snapshot(uuid="ct-no-such-snapshot"),
            pool=x.pool,
            destination=x.secondary,
            destination_path="snapshots/9/9/x",
        ),
        ("ct-no-such-snapshot",),
    ),
    Row(
        "management",
        "VMSnapshotStrategy/TakeVMSnapshot",
        lambda x: strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            vm_uuid="vm-1",
            volumes=[
                strategies_pb2.VolumeSnapshotRef(
                    volume_uuid=x.o.volume.uuid, volume_path=x.o.volume.path
                ),
                strategies_pb2.VolumeSnapshotRef(volume_uuid="v-2", volume_path=MISSING_PATH),
            ],
            pool=x.pool,
        ),
        (MISSING_GID,),
    ),
    Row(
        "management",
        "VMSnapshotStrategy/RevertVMSnapshot",
        lambda x: strategies_pb2.RevertVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            volumes=[
                strategies_pb2.VolumeSnapshotRef(
                    volume_path=x.o.volume.path, snapshot_path=MISSING_PATH
                )
            ],
            pool=x.pool,
        ),
        (MISSING_GID,),
    ),
    *[
        Row(where, f"{OPS}/{name}", lambda x, r=request: r(name=UNKNOWN_OP), (UNKNOWN_OP,))
        for where in ("management", "node")
        for name, request in (
            ("GetOperation", operations_pb2.GetOperationRequest),
            ("WaitOperation", operations_pb2.WaitOperationRequest),
            ("CancelOperation", operations_pb2.CancelOperationRequest),
            ("DeleteOperation", operations_pb2.DeleteOperationRequest),
        )
    ],
    *[
        Row(
            "node",
            f"StorageAdaptor/{name}",
            lambda x, r=request: r(disk=node_pb2.DiskRef(path=MISSING_PATH)),
            (MISSING_GID,),
        )
        for name, request in (
            ("ConnectPhysicalDisk", node_pb2.ConnectPhysicalDiskRequest),
            ("GetPhysicalDisk", node_pb2.GetPhysicalDiskRequest),
        )
    ],
    Row(
        "node",
        "StorageAdaptor/ConnectPhysicalDisk",
        # a volume's path asked for as a snapshot: there is no such snapshot
        lambda x: node_pb2.ConnectPhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=x.o.volume.path, kind=node_pb2.DISK_KIND_SNAPSHOT)
        ),
        ("snapshot",),
    ),
    Row(
        "node",
        "StorageAdaptor/ResizePhysicalDisk",
        lambda x: node_pb2.ResizePhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=MISSING_PATH), new_size_bytes=MIB
        ),
        (MISSING_GID,),
    ),
    Row(
        "node",
        "AgentCommands/DownloadTemplate",
        lambda x: node_pb2.DownloadTemplateRequest(
            operation_id=new_id("op"),
            source=x.secondary,
            source_path=x.template.install_path,
            destination_path=MISSING_PATH,
        ),
        (MISSING_GID,),
    ),
    Row(
        "node",
        "AgentCommands/DownloadVolume",
        lambda x: node_pb2.DownloadVolumeRequest(
            operation_id=new_id("op"),
            source=x.secondary,
            source_path=f"{x.template.install_path}/901.qcow2",
            destination_path=MISSING_PATH,
        ),
        (MISSING_GID,),
    ),
    Row(
        "node",
        "AgentCommands/BackupSnapshot",
        lambda x: node_pb2.NodeBackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot_path=MISSING_PATH,
            destination=x.secondary,
            destination_path="snapshots/9/9/x",
        ),
        (MISSING_GID,),
    ),
    Row(
        "node",
        "AgentCommands/BackupTemplate",
        lambda x: node_pb2.BackupTemplateRequest(
            operation_id=new_id("op"),
            source=node_pb2.DiskRef(path=MISSING_PATH),
            destination=x.secondary,
            destination_dir="template/tmpl/9/9",
            template=types_pb2.Template(uuid=new_id("tmpl")),
        ),
        (MISSING_GID,),
    ),
    Row(
        "node",
        "AgentCommands/CopyVolumeToSecondary",
        lambda x: node_pb2.CopyVolumeToSecondaryRequest(
            operation_id=new_id("op"),
            source=node_pb2.DiskRef(path=MISSING_PATH),
            volume_uuid=new_id("vol"),
            destination=x.secondary,
            destination_dir="volumes/9/9",
        ),
        (MISSING_GID,),
    ),
]


# ---- OK for deletes and detaches of what is not there -------------------------------------------


def reply(expected: Message) -> Callable[[Ctx, Message], None]:
    def check(x: Ctx, got: Message) -> None:
        assert got == expected, f"expected {expected}, got {got}"

    return check


def mentions(text: str) -> Callable[[Ctx, Message], None]:
    def check(x: Ctx, got: Message) -> None:
        assert text in got.message, got

    return check


def _skipped(x: Ctx, got: Message) -> None:
    assert not got.connected and GHOST_HOST in got.reason, got
    pool = x.c.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=x.o.pool))
    assert list(pool.connected_host_ids) == ["host-1", "host-2"]


def delete_data(obj: Callable[[Ctx], types_pb2.DataObject]) -> Callable[[Ctx], Message]:
    return lambda x: driver_pb2.DeleteDataRequest(pool=x.pool, object=obj(x))


MISSING_OK: list[Row] = [
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/DeletePool",
        lambda x: lifecycle_pb2.DeletePoolRequest(pool_uuid=UNKNOWN_POOL),
        reply(lifecycle_pb2.DeletePoolResponse(deleted=False, template_snapshots_removed=0)),
    ),
    *[
        Row(
            "management",
            "PrimaryDataStoreDriver/DeleteData",
            delete_data(obj),
            reply(driver_pb2.DeleteDataResponse(deleted=False)),
        )
        for obj in (
            lambda x: types_pb2.DataObject(volume=types_pb2.Volume(uuid="ct-no-such-volume")),
            lambda x: types_pb2.DataObject(volume=types_pb2.Volume(path=MISSING_PATH)),
            lambda x: types_pb2.DataObject(snapshot=types_pb2.Snapshot(uuid="ct-no-such-snap")),
            lambda x: types_pb2.DataObject(snapshot=types_pb2.Snapshot(path=MISSING_PATH)),
            lambda x: types_pb2.DataObject(template=types_pb2.Template(uuid="ct-no-such-tmpl")),
            lambda x: types_pb2.DataObject(template=types_pb2.Template(path=MISSING_PATH)),
        )
    ],
    Row(
        "management",
        "SnapshotStrategy/DeleteSnapshot",
        # no pool: every pool is searched
        lambda x: strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid="ct-no-such-snap")
        ),
        reply(strategies_pb2.DeleteSnapshotResponse(deleted=False)),
    ),
    Row(
        "management",
        "SnapshotStrategy/DeleteSnapshot",
        lambda x: strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(path=MISSING_PATH), pool=x.pool
        ),
        reply(strategies_pb2.DeleteSnapshotResponse(deleted=False)),
    ),
    Row(
        "management",
        "SnapshotStrategy/CanHandleSnapshot",
        lambda x: strategies_pb2.CanHandleSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid="ct-no-such-snap"),
            operation=strategies_pb2.SNAPSHOT_OPERATION_DELETE,
        ),
        reply(
            strategies_pb2.CanHandleResponse(
                priority=strategies_pb2.STRATEGY_PRIORITY_CANT_HANDLE,
                reason="no such snapshot in StorPool",
            )
        ),
    ),
    Row(
        "management",
        "VMSnapshotStrategy/DeleteVMSnapshot",
        lambda x: strategies_pb2.DeleteVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            volumes=[strategies_pb2.VolumeSnapshotRef(snapshot_path=MISSING_PATH)],
            pool=x.pool,
        ),
        reply(strategies_pb2.DeleteVMSnapshotResponse(snapshots_deleted=0)),
    ),
    *[
        Row(
            "management",
            "PrimaryDataStoreDriver/RevokeAccess",
            lambda x, p=path: driver_pb2.RevokeAccessRequest(
                object=volume_object(p(x), x), host_id="host-1"
            ),
            reply(driver_pb2.RevokeAccessResponse(detached=False)),
        )
        for path in (lambda x: MISSING_PATH, lambda x: x.o.volume.path)
    ],
    Row(
        "management",
        "PrimaryDataStoreDriver/DetachVolumeFromAllStorageNodes",
        lambda x: driver_pb2.DetachVolumeFromAllStorageNodesRequest(
            pool=x.pool, volume_path=x.o.volume.path
        ),
        reply(driver_pb2.DetachVolumeFromAllStorageNodesResponse()),
    ),
    Row(
        "management",
        "HostListener/HostConnect",
        # a host no node has registered for is skipped, not an error
        lambda x: hosts_pb2.HostConnectRequest(host_id=GHOST_HOST, pool_uuid=x.o.pool),
        lambda x, got: _skipped(x, got),
    ),
    *[
        Row(
            "management",
            f"HostListener/{name}",
            lambda x: hosts_pb2.HostEventRequest(host_id=GHOST_HOST, pool_uuid=UNKNOWN_POOL),
            mentions(GHOST_HOST),
        )
        for name in ("HostDisconnected", "HostAdded", "HostAboutToBeRemoved", "HostRemoved")
    ],
    *[
        Row(
            "node",
            "StorageAdaptor/DisconnectPhysicalDisk",
            lambda x, p=path: node_pb2.DisconnectPhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=p(x))
            ),
            reply(node_pb2.DisconnectPhysicalDiskResponse(detached=False)),
        )
        for path in (lambda x: MISSING_PATH, lambda x: x.o.volume.path)
    ],
    Row(
        "node",
        "StorageAdaptor/DisconnectPhysicalDiskByPath",
        lambda x: node_pb2.DisconnectPhysicalDiskByPathRequest(path=MISSING_PATH),
        reply(node_pb2.DisconnectPhysicalDiskByPathResponse(handled=True, detached=False)),
    ),
    Row(
        "node",
        "StorageAdaptor/DisconnectPhysicalDiskByPath",
        # not a StorPool device: another adaptor's turn
        lambda x: node_pb2.DisconnectPhysicalDiskByPathRequest(
            path="/var/lib/libvirt/images/disk.qcow2"
        ),
        reply(node_pb2.DisconnectPhysicalDiskByPathResponse(handled=False, detached=False)),
    ),
    Row(
        "node",
        "StorageAdaptor/DeletePhysicalDisk",
        lambda x: node_pb2.DeletePhysicalDiskRequest(disk=node_pb2.DiskRef(path=MISSING_PATH)),
        reply(node_pb2.DeletePhysicalDiskResponse(deleted=False)),
    ),
]


# ---- INVALID_ARGUMENT for invalid values, naming the field --------------------------------------

INVALID: list[Row] = [
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/InitializePool",
        lambda x: lifecycle_pb2.InitializePoolRequest(
            pool_uuid="bad id!", name="t", url="x", zone_id=ZONE, capacity_bytes=1
        ),
        ("pool_uuid",),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/InitializePool",
        lambda x: lifecycle_pb2.InitializePoolRequest(
            pool_uuid=new_id("pool"),
            name="t",
            url=x.c.pool_url(OTHER_TEMPLATE),
            zone_id=ZONE,
            capacity_bytes=1,
            scope=lifecycle_pb2.POOL_SCOPE_CLUSTER,
        ),
        ("scope",),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/InitializePool",
        lambda x: lifecycle_pb2.InitializePoolRequest(
            pool_uuid=new_id("pool"),
            name="t",
            url=x.c.pool_url(OTHER_TEMPLATE),
            zone_id=ZONE,
            capacity_bytes=1,
            hypervisor="VMware",
        ),
        ("hypervisor",),
    ),
    *[
        Row(
            "management",
            "PrimaryDataStoreLifeCycle/InitializePool",
            lambda x, u=url: lifecycle_pb2.InitializePoolRequest(
                pool_uuid=new_id("pool"), name="t", url=u, zone_id=ZONE, capacity_bytes=1
            ),
            ("url",),
        )
        for url in (
            "SP_API_HTTP=h:1;SP_TEMPLATE=t",
            "storpool://host:81/t",
            "SP_API_HTTP=h:1;SP_AUTH_TOKEN=x;SP_TEMPLATE=t;COLOUR=red",
        )
    ],
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/AttachZone",
        lambda x: lifecycle_pb2.AttachZoneRequest(pool_uuid=x.o.pool, zone_id="zone-9"),
        ("zone_id",),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/AttachZone",
        lambda x: lifecycle_pb2.AttachZoneRequest(
            pool_uuid=x.o.pool, zone_id=ZONE, hypervisor="xen"
        ),
        ("hypervisor",),
    ),
    Row(
        "management",
        "PrimaryDataStoreLifeCycle/UpdatePool",
        lambda x: lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=x.o.pool, url=x.c.pool_url(OTHER_TEMPLATE)
        ),
        ("url",),
    ),
    *[
        Row(
            "management",
            "PrimaryDataStoreDriver/CreateVolume",
            lambda x, v=volume: driver_pb2.CreateVolumeRequest(pool=x.pool, volume=v()),
            words,
        )
        for volume, words in (
            (lambda: types_pb2.Volume(uuid=new_id("vol"), size_bytes=1000), ("size_bytes",)),
            (lambda: types_pb2.Volume(uuid="bad uuid!", size_bytes=MIB), ("uuid",)),
            (
                lambda: types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB, vm_uuid="a b"),
                ("vm_uuid",),
            ),
            (
                lambda: types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB, vc_policy="a b"),
                ("vc_policy",),
            ),
            (
                lambda: types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB, qos_class="a b"),
                ("qos_class",),
            ),
        )
    ],
    Row(
        "management",
        "PrimaryDataStoreDriver/ResizeVolume",
        lambda x: driver_pb2.ResizeVolumeRequest(
            pool=x.pool, volume=types_pb2.Volume(path=x.o.volume.path), new_size_bytes=1000
        ),
        ("new_size_bytes",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ResizeVolume",
        lambda x: driver_pb2.ResizeVolumeRequest(
            pool=x.pool,
            volume=types_pb2.Volume(path=x.o.volume.path),
            new_size_bytes=8 * MIB,
            host_id="host-1",
        ),
        ("vm_name",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ProvideVmTags",
        lambda x: driver_pb2.ProvideVmTagsRequest(
            pool=x.pool, vm_uuid="vm-1", volume_paths=[x.o.volume.path], key="owner"
        ),
        ("key",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ProvideVmTags",
        lambda x: driver_pb2.ProvideVmTagsRequest(
            pool=x.pool,
            vm_uuid="vm-1",
            volume_paths=[x.o.volume.path],
            key="vc-policy",
            value="a b",
        ),
        ("value",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/ProvideVmInfo",
        lambda x: driver_pb2.ProvideVmInfoRequest(
            pool=x.pool, volume=types_pb2.Volume(path=x.o.volume.path, vm_uuid="a b")
        ),
        ("vm_uuid",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/TakeSnapshot",
        lambda x: driver_pb2.TakeSnapshotRequest(
            pool=x.pool,
            snapshot=types_pb2.Snapshot(uuid="bad uuid!", volume_path=x.o.volume.path),
        ),
        ("uuid",),
    ),
    *[
        Row(
            "management",
            "PrimaryDataStoreDriver/CopyData",
            lambda x, o=operation_id: driver_pb2.CopyDataRequest(
                operation_id=o,
                source=types_pb2.DataObject(
                    snapshot=types_pb2.Snapshot(path=x.o.snapshot.path, store=x.primary)
                ),
                destination=types_pb2.DataObject(
                    volume=types_pb2.Volume(uuid=new_id("vol"), store=x.primary)
                ),
            ),
            ("operation_id",),
        )
        for operation_id in ("bad id!", "x" * 129)
    ],
    Row(
        "management",
        "PrimaryDataStoreDriver/CopyData",
        # a combination CanCopy answers false for
        lambda x: driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=x.o.volume.uuid, path=x.o.volume.path, store=x.primary)
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=x.primary)
            ),
        ),
        ("CanCopy",),
    ),
    Row(
        "management",
        "VMSnapshotStrategy/TakeVMSnapshot",
        lambda x: strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid="bad id!",
            vm_uuid="vm-1",
            volumes=[
                strategies_pb2.VolumeSnapshotRef(
                    volume_uuid=x.o.volume.uuid, volume_path=x.o.volume.path
                )
            ],
            pool=x.pool,
        ),
        ("vm_snapshot_uuid",),
    ),
    Row(
        "management",
        "NodeRegistry/RegisterNode",
        lambda x: hosts_pb2.RegisterNodeRequest(
            host_id=GHOST_HOST, address="127.0.0.1:1", storpool_client_id=5000
        ),
        ("storpool_client_id",),
    ),
    Row(
        "management",
        "NodeRegistry/RegisterNode",
        lambda x: hosts_pb2.RegisterNodeRequest(
            host_id="bad id!", address="127.0.0.1:1", storpool_client_id=5
        ),
        ("host_id",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/GrantAccess",
        lambda x: driver_pb2.GrantAccessRequest(
            object=types_pb2.DataObject(snapshot=types_pb2.Snapshot(path=x.o.snapshot.path)),
            host_id="host-1",
            mode=types_pb2.ACCESS_MODE_READ_WRITE,
        ),
        ("mode",),
    ),
    *[
        Row(where, f"{OPS}/ListOperations", lambda x, r=request: r, words)
        for where in ("management", "node")
        for request, words in (
            (operations_pb2.ListOperationsRequest(filter="bogus"), ("filter",)),
            (operations_pb2.ListOperationsRequest(page_token="abc"), ("page_token",)),
        )
    ],
    Row(
        "node",
        "StorageAdaptor/ConnectPhysicalDisk",
        lambda x: node_pb2.ConnectPhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=x.o.snapshot.path, kind=node_pb2.DISK_KIND_SNAPSHOT),
            mode=types_pb2.ACCESS_MODE_READ_WRITE,
        ),
        ("mode",),
    ),
    Row(
        "node",
        "StorageAdaptor/ResizePhysicalDisk",
        lambda x: node_pb2.ResizePhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=x.o.volume.path), new_size_bytes=1000
        ),
        ("new_size_bytes",),
    ),
    *[
        Row(
            "node",
            "AgentCommands/BackupSnapshot",
            lambda x, p=path: node_pb2.NodeBackupSnapshotRequest(
                operation_id=new_id("op"),
                snapshot_path=x.o.snapshot.path,
                destination=x.secondary,
                destination_path=p,
            ),
            ("destination_path",),
        )
        for path in ("../outside", "/etc/outside", "snapshots/../../outside")
    ],
    Row(
        "node",
        "AgentCommands/BackupSnapshot",
        lambda x: node_pb2.NodeBackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot_path=x.o.snapshot.path,
            destination=x.secondary,
            destination_path="snapshots/9/9/x",
            format=types_pb2.IMAGE_FORMAT_RAW,
            compression=types_pb2.COMPRESSION_ZLIB,
        ),
        ("compression",),
    ),
    Row(
        "node",
        "AgentCommands/DownloadTemplate",
        lambda x: node_pb2.DownloadTemplateRequest(
            operation_id=new_id("op"),
            source=x.secondary,
            source_path="/etc",
            destination_path=x.o.volume.path,
        ),
        ("source_path",),
    ),
    Row(
        "node",
        "AgentCommands/DownloadTemplate",
        lambda x: node_pb2.DownloadTemplateRequest(
            operation_id="bad id!",
            source=x.secondary,
            source_path=x.template.install_path,
            destination_path=x.o.volume.path,
        ),
        ("operation_id",),
    ),
    Row(
        "node",
        "AgentCommands/CopyVolumeToSecondary",
        lambda x: node_pb2.CopyVolumeToSecondaryRequest(
            operation_id=new_id("op"),
            source=node_pb2.DiskRef(path=x.o.volume.path),
            volume_uuid="bad id!",
            destination=x.secondary,
            destination_dir="volumes/9/9",
        ),
        ("volume_uuid",),
    ),
    Row(
        "node",
        "AgentCommands/BackupTemplate",
        lambda x: node_pb2.BackupTemplateRequest(
            operation_id=new_id("op"),
            source=node_pb2.DiskRef(path=x.o.snapshot.path),
            destination=x.secondary,
            destination_dir="template/tmpl/9/9",
            template=types_pb2.Template(uuid="bad id!"),
        ),
        ("template.uuid",),
    ),
]

# A malformed device path is refused naming the request field it came in.
INVALID_PATHS: list[Row] = [
    Row(
        "node",
        "StorageAdaptor/ConnectPhysicalDisk",
        lambda x: node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path="/var/lib/x")),
        ("disk.path",),
    ),
    Row(
        "management",
        "PrimaryDataStoreDriver/GetVolumeStats",
        lambda x: driver_pb2.GetVolumeStatsRequest(pool=x.pool, volume_path="/var/lib/x"),
        ("volume_path",),
    ),
]


@pytest.fixture
def ctx(contract: Contract, objects: Objects, template: Template) -> Ctx:
    return Ctx(contract, objects, template)


def _ids(rows: list[Row]) -> list[str]:
    return [f"{n}-{row.id}" for n, row in enumerate(rows)]


@pytest.mark.parametrize("row", NOT_FOUND, ids=_ids(NOT_FOUND))
def test_not_found_names_the_missing_object(ctx: Ctx, row: Row):
    before = ctx.c.inventory()
    expect_error(call(ctx, row), row.build(ctx), grpc.StatusCode.NOT_FOUND, *row.expect)
    assert ctx.c.inventory() == before


@pytest.mark.parametrize("row", MISSING_OK, ids=_ids(MISSING_OK))
def test_deleting_or_detaching_what_is_not_there_is_ok(ctx: Ctx, row: Row):
    before = ctx.c.inventory()
    got = call(ctx, row)(row.build(ctx))
    assert callable(row.expect)
    row.expect(ctx, got)
    assert ctx.c.inventory() == before


@pytest.mark.parametrize(
    "row",
    [
        *INVALID,
        *INVALID_PATHS,
    ],
    ids=_ids([*INVALID, *INVALID_PATHS]),
)
def test_invalid_values_name_the_field(ctx: Ctx, row: Row):
    before = ctx.c.inventory()
    expect_error(call(ctx, row), row.build(ctx), grpc.StatusCode.INVALID_ARGUMENT, *row.expect)
    assert ctx.c.inventory() == before


def test_invalid_revoke_changes_nothing(ctx: Ctx, res: Resources):
    """RevokeAccess with clear_vm_tags needs the volume's pool; without it the request is
    refused before anything is detached."""
    c, path = ctx.c, ctx.o.volume.path
    grant = driver_pb2.GrantAccessRequest(object=volume_object(path, ctx), host_id="host-1")
    c.driver.GrantAccess(grant)
    try:
        expect_error(
            c.driver.RevokeAccess,
            driver_pb2.RevokeAccessRequest(
                object=types_pb2.DataObject(volume=types_pb2.Volume(path=path)),
                host_id="host-1",
                clear_vm_tags=True,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "pool_uuid",
        )
        disk = c.adaptor(1).GetPhysicalDisk(
            node_pb2.GetPhysicalDiskRequest(disk=node_pb2.DiskRef(path=path))
        )
        assert disk.attached and disk.mode == types_pb2.ACCESS_MODE_READ_WRITE
    finally:
        revoke = driver_pb2.RevokeAccessRequest(object=volume_object(path, ctx), host_id="host-1")
        assert c.driver.RevokeAccess(revoke).detached
