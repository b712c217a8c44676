"""Required fields, table-driven (csi-sanity's INVALID_ARGUMENT checks): for every RPC of every
spcs.v1 service, a complete minimal request and the fields it requires. The complete request
must pass validation (it answers the code the table names: OK, or NOT_FOUND because it refers
to objects that do not exist); without any one required field the answer is INVALID_ARGUMENT
and the message names the field.

Requests refer to the suite's pool, to unknown objects or to a real node's registration, so
the complete requests change nothing (the ones that do, RegisterNode, repeat what is there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message

from spcs.v1 import (
    driver_pb2,
    hosts_pb2,
    identity_pb2,
    lifecycle_pb2,
    node_pb2,
    strategies_pb2,
    types_pb2,
)
from tests.contract.harness import (
    MANAGEMENT_SERVICES,
    MIB,
    MISSING_PATH,
    NODE_SERVICES,
    OK,
    ZONE,
    Contract,
    all_methods,
    clear,
    code_of,
    expect_error,
    invoke,
    new_id,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNKNOWN_POOL = "ct-no-such-pool"
GHOST_HOST = "ct-no-such-host"


@dataclass(frozen=True)
class World:
    pool: str  # a real pool, Up, both hosts connected
    secondary_url: str
    node: hosts_pb2.Node  # host-1 as management knows it
    missing_template_url: str  # the emulator's endpoint and token, a template that is not there


@dataclass(frozen=True)
class Either:
    """Fields dropped together (the RPC needs one of them, or the whole group); the message must
    name every word."""

    fields: tuple[str, ...]
    words: tuple[str, ...]

    @property
    def label(self) -> str:
        return "+".join(self.fields)


Required = str | Either


@dataclass(frozen=True)
class Case:
    rpc: str  # Service/Method
    build: Callable[[World], Message]
    required: tuple[Required, ...] = ()
    answers: grpc.StatusCode = OK  # what the complete request answers

    @property
    def on_node(self) -> bool:
        return self.rpc.split("/")[0] in NODE_SERVICES


def pool(w: World) -> types_pb2.PrimaryStore:
    return types_pb2.PrimaryStore(pool_uuid=w.pool)


def primary(w: World) -> types_pb2.DataStore:
    return types_pb2.DataStore(primary=pool(w))


def secondary(w: World) -> types_pb2.SecondaryStore:
    return types_pb2.SecondaryStore(url=w.secondary_url)


def path_or_uuid(prefix: str) -> Either:
    """An object that needs its path and/or uuid; the request gives only the path."""
    return Either((f"{prefix}.path",), ("path", "uuid"))


def _identity() -> list[Case]:
    return [
        Case(f"Identity/{name}", lambda w, r=request: r())
        for name, request in (
            ("GetInfo", identity_pb2.GetInfoRequest),
            ("GetServerCapabilities", identity_pb2.GetServerCapabilitiesRequest),
            ("Probe", identity_pb2.ProbeRequest),
        )
    ]


LIFECYCLE = [
    Case(
        "PrimaryDataStoreLifeCycle/InitializePool",
        lambda w: lifecycle_pb2.InitializePoolRequest(
            pool_uuid=new_id("pool"),
            name="contract",
            # a template that does not exist: the complete request changes nothing
            url=w.missing_template_url,
            zone_id=ZONE,
            capacity_bytes=1 << 40,
        ),
        ("pool_uuid", "name", "url", "zone_id", "capacity_bytes"),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreLifeCycle/AttachZone",
        lambda w: lifecycle_pb2.AttachZoneRequest(pool_uuid=w.pool, zone_id=ZONE),
        ("pool_uuid", "zone_id"),
    ),
    Case(
        "PrimaryDataStoreLifeCycle/AttachCluster",
        lambda w: lifecycle_pb2.AttachClusterRequest(pool_uuid=w.pool, cluster_id="cluster-1"),
        ("pool_uuid", "cluster_id"),
        answers=FAILED_PRECONDITION,
    ),
    *[
        Case(
            f"PrimaryDataStoreLifeCycle/{name}",
            lambda w: lifecycle_pb2.PoolRef(pool_uuid=UNKNOWN_POOL),
            ("pool_uuid",),
            answers=NOT_FOUND,
        )
        for name in ("MaintainPool", "CancelMaintainPool", "EnablePool", "DisablePool")
    ],
    Case(
        "PrimaryDataStoreLifeCycle/DeletePool",
        lambda w: lifecycle_pb2.DeletePoolRequest(pool_uuid=UNKNOWN_POOL),
        ("pool_uuid",),
    ),
    Case(
        "PrimaryDataStoreLifeCycle/UpdatePool",
        lambda w: lifecycle_pb2.UpdatePoolRequest(pool_uuid=UNKNOWN_POOL),
        ("pool_uuid",),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreLifeCycle/GetPool",
        lambda w: lifecycle_pb2.PoolRef(pool_uuid=w.pool),
        ("pool_uuid",),
    ),
    Case("PrimaryDataStoreLifeCycle/ListPools", lambda w: lifecycle_pb2.ListPoolsRequest()),
]

DRIVER = [
    Case(
        "PrimaryDataStoreDriver/GetDriverCapabilities",
        lambda w: driver_pb2.GetDriverCapabilitiesRequest(),
    ),
    Case(
        "PrimaryDataStoreDriver/CreateVolume",
        lambda w: driver_pb2.CreateVolumeRequest(
            pool=types_pb2.PrimaryStore(pool_uuid=UNKNOWN_POOL),
            volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB),
        ),
        ("pool", "pool.pool_uuid", "volume", "volume.uuid", "volume.size_bytes"),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/DeleteData",
        lambda w: driver_pb2.DeleteDataRequest(
            object=types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("vol"))),
            pool=pool(w),
        ),
        (
            "object",
            Either(("object.volume",), ("volume", "snapshot", "template")),
            Either(("object.volume.uuid",), ("path", "uuid")),
            "pool",
            "pool.pool_uuid",
        ),
    ),
    Case(
        "PrimaryDataStoreDriver/CanCopy",
        lambda w: driver_pb2.CanCopyRequest(
            source=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path=MISSING_PATH, store=primary(w))
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=primary(w))
            ),
        ),
        (
            "source",
            "destination",
            Either(("source.snapshot.store",), ("store",)),
            Either(("destination.volume.store",), ("store",)),
        ),
    ),
    Case(
        "PrimaryDataStoreDriver/CopyData",
        lambda w: driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(
                snapshot=types_pb2.Snapshot(path=MISSING_PATH, store=primary(w))
            ),
            destination=types_pb2.DataObject(
                volume=types_pb2.Volume(uuid=new_id("vol"), store=primary(w))
            ),
        ),
        (
            "operation_id",
            "source",
            "destination",
            Either(("source.snapshot.store",), ("store",)),
            Either(("destination.volume.store",), ("store",)),
            path_or_uuid("source.snapshot"),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/TakeSnapshot",
        lambda w: driver_pb2.TakeSnapshotRequest(
            pool=pool(w),
            snapshot=types_pb2.Snapshot(uuid=new_id("snap"), volume_path=MISSING_PATH),
        ),
        ("pool", "pool.pool_uuid", "snapshot", "snapshot.uuid", "snapshot.volume_path"),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/RevertSnapshot",
        lambda w: driver_pb2.RevertSnapshotRequest(
            pool=pool(w),
            snapshot=types_pb2.Snapshot(path=MISSING_PATH),
            volume=types_pb2.Volume(path=MISSING_PATH),
        ),
        (
            "pool.pool_uuid",
            "snapshot",
            path_or_uuid("snapshot"),
            "volume",
            path_or_uuid("volume"),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/ResizeVolume",
        lambda w: driver_pb2.ResizeVolumeRequest(
            pool=pool(w), volume=types_pb2.Volume(path=MISSING_PATH), new_size_bytes=MIB
        ),
        ("pool.pool_uuid", "volume", path_or_uuid("volume"), "new_size_bytes"),
        answers=NOT_FOUND,
    ),
    *[
        Case(
            f"PrimaryDataStoreDriver/{name}",
            lambda w, r=request: r(
                object=types_pb2.DataObject(
                    volume=types_pb2.Volume(path=MISSING_PATH, store=primary(w))
                ),
                host_id="host-1",
            ),
            ("object", Either(("object.volume.path",), ("path",)), "host_id"),
            answers=answers,
        )
        for name, request, answers in (
            ("GrantAccess", driver_pb2.GrantAccessRequest, NOT_FOUND),
            ("RevokeAccess", driver_pb2.RevokeAccessRequest, OK),
        )
    ],
    Case(
        "PrimaryDataStoreDriver/GetStorageStats",
        lambda w: driver_pb2.GetStorageStatsRequest(pool=pool(w)),
        ("pool", "pool.pool_uuid"),
    ),
    Case(
        "PrimaryDataStoreDriver/GetVolumesStats",
        lambda w: driver_pb2.GetVolumesStatsRequest(pool=pool(w), volume_paths=[MISSING_PATH]),
        ("pool", "pool.pool_uuid"),
    ),
    *[
        Case(
            f"PrimaryDataStoreDriver/{name}",
            lambda w, r=request: r(pool=pool(w), volume_path=MISSING_PATH),
            ("pool.pool_uuid", "volume_path"),
            answers=NOT_FOUND,
        )
        for name, request in (
            ("GetVolumeStats", driver_pb2.GetVolumeStatsRequest),
            ("DetachVolumeFromAllStorageNodes", driver_pb2.DetachVolumeFromAllStorageNodesRequest),
        )
    ],
    Case(
        "PrimaryDataStoreDriver/ProvideVmInfo",
        lambda w: driver_pb2.ProvideVmInfoRequest(
            pool=pool(w), volume=types_pb2.Volume(path=MISSING_PATH, vm_uuid="vm-1")
        ),
        ("pool.pool_uuid", "volume", "volume.path"),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/ProvideVmTags",
        lambda w: driver_pb2.ProvideVmTagsRequest(
            pool=pool(w),
            vm_uuid="vm-1",
            volume_paths=[MISSING_PATH],
            key="vc-policy",
            value="daily",
        ),
        ("pool.pool_uuid", "vm_uuid", "volume_paths", "key"),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/MigrateVolume",
        lambda w: driver_pb2.MigrateVolumeRequest(
            source_pool=pool(w),
            volume=types_pb2.Volume(path=MISSING_PATH),
            destination_pool=pool(w),
        ),
        (
            "source_pool",
            "source_pool.pool_uuid",
            "volume",
            path_or_uuid("volume"),
            "destination_pool.pool_uuid",
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/ChangeVolumeOffering",
        lambda w: driver_pb2.ChangeVolumeOfferingRequest(
            pool=pool(w), volume=types_pb2.Volume(path=MISSING_PATH, max_iops=100)
        ),
        ("pool.pool_uuid", "volume", "volume.path"),
        answers=NOT_FOUND,
    ),
]

STRATEGIES = [
    Case(
        "SnapshotStrategy/CanHandleSnapshot",
        # the operation is not REQUIRED: the minimal request is the snapshot alone
        lambda w: strategies_pb2.CanHandleSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid=new_id("snap"))
        ),
        ("snapshot", Either(("snapshot.uuid",), ("uuid", "path"))),
    ),
    Case(
        "SnapshotStrategy/DeleteSnapshot",
        lambda w: strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid=new_id("snap"))
        ),
        ("snapshot", Either(("snapshot.uuid",), ("uuid", "path"))),
    ),
    Case(
        "SnapshotStrategy/BackupSnapshot",
        lambda w: strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot=types_pb2.Snapshot(path=MISSING_PATH),
            pool=pool(w),
            destination=secondary(w),
            destination_path="snapshots/2/1/x",
        ),
        (
            "operation_id",
            "snapshot",
            path_or_uuid("snapshot"),
            "pool",
            "pool.pool_uuid",
            "destination",
            "destination.url",
            "destination_path",
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "VMSnapshotStrategy/CanHandleVMSnapshot",
        lambda w: strategies_pb2.CanHandleVMSnapshotRequest(),
    ),
    Case(
        "VMSnapshotStrategy/TakeVMSnapshot",
        lambda w: strategies_pb2.TakeVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            vm_uuid="vm-1",
            volumes=[
                strategies_pb2.VolumeSnapshotRef(volume_uuid="vol-1", volume_path=MISSING_PATH)
            ],
            pool=pool(w),
        ),
        (
            "vm_snapshot_uuid",
            "vm_uuid",
            "volumes",
            "volumes[0].volume_uuid",
            "volumes[0].volume_path",
            "pool",
            "pool.pool_uuid",
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "VMSnapshotStrategy/RevertVMSnapshot",
        lambda w: strategies_pb2.RevertVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            vm_uuid="vm-1",
            volumes=[
                strategies_pb2.VolumeSnapshotRef(
                    volume_path=MISSING_PATH, snapshot_path=MISSING_PATH
                )
            ],
            pool=pool(w),
        ),
        (
            "vm_snapshot_uuid",
            "volumes",
            "volumes[0].volume_path",
            "volumes[0].snapshot_path",
            "pool.pool_uuid",
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "VMSnapshotStrategy/DeleteVMSnapshot",
        lambda w: strategies_pb2.DeleteVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            volumes=[strategies_pb2.VolumeSnapshotRef(snapshot_path=MISSING_PATH)],
            pool=pool(w),
        ),
        ("vm_snapshot_uuid", "volumes", "volumes[0].snapshot_path", "pool.pool_uuid"),
    ),
]

HOSTS = [
    Case(
        "HostListener/HostConnect",
        lambda w: hosts_pb2.HostConnectRequest(host_id="host-1", pool_uuid=UNKNOWN_POOL),
        ("host_id", "pool_uuid"),
        answers=NOT_FOUND,
    ),
    *[
        Case(
            f"HostListener/{name}",
            lambda w: hosts_pb2.HostEventRequest(host_id=GHOST_HOST),
            ("host_id",),
        )
        for name in ("HostDisconnected", "HostAdded", "HostAboutToBeRemoved", "HostRemoved")
    ],
    Case(
        "NodeRegistry/RegisterNode",
        # host-1 announcing itself again, exactly as it did
        lambda w: hosts_pb2.RegisterNodeRequest(
            host_id=w.node.host_id,
            address=w.node.address,
            storpool_client_id=w.node.storpool_client_id,
            storpool_cluster_id=w.node.storpool_cluster_id,
            version=w.node.version,
        ),
        ("host_id", "address", "storpool_client_id"),
    ),
    Case("NodeRegistry/ListNodes", lambda w: hosts_pb2.ListNodesRequest()),
]


def _disk() -> node_pb2.DiskRef:
    return node_pb2.DiskRef(path=MISSING_PATH)


NODE = [
    Case(
        "StorageAdaptor/ConnectPhysicalDisk",
        lambda w: node_pb2.ConnectPhysicalDiskRequest(disk=_disk()),
        ("disk", "disk.path"),
        answers=NOT_FOUND,
    ),
    Case(
        "StorageAdaptor/DisconnectPhysicalDisk",
        lambda w: node_pb2.DisconnectPhysicalDiskRequest(disk=_disk()),
        ("disk", "disk.path"),
    ),
    Case(
        "StorageAdaptor/DisconnectPhysicalDiskByPath",
        lambda w: node_pb2.DisconnectPhysicalDiskByPathRequest(path=MISSING_PATH),
        ("path",),
    ),
    Case(
        "StorageAdaptor/GetPhysicalDisk",
        lambda w: node_pb2.GetPhysicalDiskRequest(disk=_disk()),
        ("disk", "disk.path"),
        answers=NOT_FOUND,
    ),
    Case(
        "StorageAdaptor/DeletePhysicalDisk",
        lambda w: node_pb2.DeletePhysicalDiskRequest(disk=_disk()),
        ("disk", "disk.path"),
    ),
    Case(
        "StorageAdaptor/ResizePhysicalDisk",
        lambda w: node_pb2.ResizePhysicalDiskRequest(disk=_disk(), new_size_bytes=MIB),
        ("disk", "disk.path", "new_size_bytes"),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/DownloadTemplate",
        lambda w: node_pb2.DownloadTemplateRequest(
            operation_id=new_id("op"),
            source=secondary(w),
            source_path="template/tmpl/2/901",
            destination_path=MISSING_PATH,
        ),
        ("operation_id", "source", "source.url", "source_path", "destination_path"),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/BackupSnapshot",
        lambda w: node_pb2.NodeBackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot_path=MISSING_PATH,
            destination=secondary(w),
            destination_path="snapshots/2/1/x",
        ),
        ("operation_id", "snapshot_path", "destination", "destination.url", "destination_path"),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/BackupTemplate",
        lambda w: node_pb2.BackupTemplateRequest(
            operation_id=new_id("op"),
            source=_disk(),
            destination=secondary(w),
            destination_dir="template/tmpl/2/999",
            template=types_pb2.Template(uuid=new_id("tmpl")),
        ),
        (
            "operation_id",
            "source",
            "source.path",
            "destination",
            "destination.url",
            "destination_dir",
            "template",
            "template.uuid",
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/CopyVolumeToSecondary",
        lambda w: node_pb2.CopyVolumeToSecondaryRequest(
            operation_id=new_id("op"),
            source=_disk(),
            volume_uuid=new_id("vol"),
            destination=secondary(w),
            destination_dir="volumes/2/1",
        ),
        (
            "operation_id",
            "source",
            "source.path",
            "volume_uuid",
            "destination",
            "destination.url",
            "destination_dir",
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/DownloadVolume",
        lambda w: node_pb2.DownloadVolumeRequest(
            operation_id=new_id("op"),
            source=secondary(w),
            source_path="volumes/2/1/x.qcow2",
            destination_path=MISSING_PATH,
        ),
        ("operation_id", "source", "source.url", "source_path", "destination_path"),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/ResizeNotify",
        lambda w: node_pb2.ResizeNotifyRequest(
            vm_name="i-2-3-VM", path=MISSING_PATH, new_size_bytes=MIB
        ),
        ("vm_name", "path", "new_size_bytes"),
        # no libvirt on the emulated hosts
        answers=FAILED_PRECONDITION,
    ),
    Case(
        "AgentCommands/ModifyStoragePool",
        lambda w: node_pb2.ModifyStoragePoolRequest(pool_uuid=w.pool, add=True),
        ("pool_uuid",),
    ),
]

MANAGEMENT_CASES = [*_identity(), *LIFECYCLE, *DRIVER, *STRATEGIES, *HOSTS]
NODE_CASES = [*_identity(), *NODE]


def _params() -> list:
    params = []
    for where, cases in (("management", MANAGEMENT_CASES), ("node", NODE_CASES)):
        for case in cases:
            params.append(pytest.param(where, case, None, id=f"{where}:{case.rpc}:complete"))
            for required in case.required:
                label = required.label if isinstance(required, Either) else required
                params.append(
                    pytest.param(where, case, required, id=f"{where}:{case.rpc}:-{label}")
                )
    return params


@pytest.fixture(scope="module")
def world(contract: Contract, base_pool: str) -> World:
    nodes = contract.registry.ListNodes(hosts_pb2.ListNodesRequest()).nodes
    (host1,) = [n for n in nodes if n.host_id == "host-1"]
    return World(base_pool, contract.secondary_url, host1, contract.pool_url("ct-no-such-template"))


@pytest.mark.parametrize(("where", "case", "dropped"), _params())
def test_required_field(contract: Contract, world: World, where: str, case: Case, dropped):
    channel = contract.nodes[0] if where == "node" else contract.management
    request = case.build(world)

    def call(message: Message) -> Message:
        return invoke(channel, case.rpc, message)

    if dropped is None:
        code, details = code_of(call, request)
        assert code == case.answers, (
            f"the complete request should answer {case.answers.name}, got {code.name}: {details}"
        )
        return
    fields, words = (
        (dropped.fields, dropped.words)
        if isinstance(dropped, Either)
        else ((dropped,), (dropped.rsplit(".", 1)[-1].split("[")[0],))
    )
    for field in fields:
        clear(request, field)
    expect_error(call, request, grpc.StatusCode.INVALID_ARGUMENT, *words)


@pytest.mark.parametrize(
    ("where", "services", "cases"),
    [
        ("management", ("Identity", *MANAGEMENT_SERVICES), MANAGEMENT_CASES),
        ("node", ("Identity", *NODE_SERVICES), NODE_CASES),
    ],
)
def test_every_rpc_has_a_row(contract: Contract, where: str, services, cases):
    """The table covers every method of every service the server says it serves, so an RPC
    added to the contract cannot go unchecked."""
    channel = contract.nodes[0] if where == "node" else contract.management
    served = invoke(
        channel,
        "Identity/GetServerCapabilities",
        identity_pb2.GetServerCapabilitiesRequest(),
    ).services
    spcs_services = {s.removeprefix("spcs.v1.") for s in served if s.startswith("spcs.v1.")}
    assert spcs_services == set(services)
    assert "google.longrunning.Operations" in served
    assert sorted(c.rpc for c in cases) == sorted(all_methods(tuple(services)))
