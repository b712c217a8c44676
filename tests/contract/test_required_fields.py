"""Required fields (csi-sanity's INVALID_ARGUMENT checks): for every RPC of every spcs.v1
service, a complete minimal request, and the fields it requires as its handler's `@rpc`
declares them (`spcs.common.contract`) — the cases are generated from the declarations, so a
field the service starts requiring is tested without a change here. The complete request must
pass validation (it answers the code the table names: OK, or NOT_FOUND because it refers to
objects that do not exist); without any one required field (or a message holding it) the answer
is INVALID_ARGUMENT and the message names the field. `extra` adds what a domain rule checks
beyond the declaration (a copy's stores, an object's path or uuid when it is looked up).

Requests refer to the suite's pool, to unknown objects or to a real node's registration, so
the complete requests change nothing (the ones that do, RegisterNode, repeat what is there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message

from spcs.common.contract import Contract as RpcContract
from spcs.common.contract import declared
from spcs.common.holds import HOLDS
from spcs.common.validate import field_value
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
    SERVICERS,
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
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
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
    extra: tuple[Required, ...] = ()
    answers: grpc.StatusCode = OK  # what the complete request answers

    @property
    def on_node(self) -> bool:
        return self.rpc.split("/")[0] in NODE_SERVICES

    @property
    def contract(self) -> RpcContract:
        service, method = self.rpc.split("/")
        return declared(SERVICERS[service])[method]

    @property
    def required(self) -> tuple[Required, ...]:
        """What the declaration requires, as fields to drop from the complete request."""
        sample = self.build(SAMPLE)
        found: list[Required] = []
        for dotted in self.contract.must_be_set:
            # the field, and each message holding it (a repeated one emptied as a whole)
            parts = dotted.replace("[*]", "[0]").split(".")
            found.extend(".".join(parts[: i + 1]).removesuffix("[0]") for i in range(len(parts)))
        for dotted in self.contract.chosen:
            found.append(dotted)
            member = field_value(sample, dotted)
            assert isinstance(member, Message)
            chosen = member.WhichOneof(member.DESCRIPTOR.oneofs[0].name)
            words = tuple(f.name for f in member.DESCRIPTOR.oneofs[0].fields)
            found.append(Either((f"{dotted}.{chosen}",), words))
        for group in (*self.contract.one_of, *self.contract.id_of):
            present = [f for f in group if _is_present(sample, f)]
            parent = group[0].rsplit(".", 1)[0]
            if present and ("." not in group[0] or _is_present(sample, parent)):
                found.append(Either(tuple(present), tuple(f.rsplit(".", 1)[-1] for f in group)))
        unique = {(r.label if isinstance(r, Either) else r): r for r in (*found, *self.extra)}
        return tuple(unique.values())


SAMPLE = World(
    "sample-pool",
    "file:///sample",
    hosts_pb2.Node(host_id="host-1", address="127.0.0.1:1", storpool_client_id=1),
    "storpool://token@127.0.0.1:1/sample",
)


def _is_present(message: Message, dotted: str) -> bool:
    value = field_value(message, dotted)
    return value is not None and value != "" and value != 0


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


# The copy table's rules (every object of a copy names its store) and the source's lookup.
EXTRA_CANCOPY = (
    Either(("source.snapshot.store",), ("store",)),
    Either(("destination.volume.store",), ("store",)),
)
EXTRA_COPYDATA = (*EXTRA_CANCOPY, path_or_uuid("source.snapshot"))

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
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreLifeCycle/AttachZone",
        lambda w: lifecycle_pb2.AttachZoneRequest(pool_uuid=w.pool, zone_id=ZONE),
    ),
    Case(
        "PrimaryDataStoreLifeCycle/AttachCluster",
        lambda w: lifecycle_pb2.AttachClusterRequest(pool_uuid=w.pool, cluster_id="cluster-1"),
        answers=FAILED_PRECONDITION,
    ),
    *[
        Case(
            f"PrimaryDataStoreLifeCycle/{name}",
            lambda w: lifecycle_pb2.PoolRef(pool_uuid=UNKNOWN_POOL),
            answers=NOT_FOUND,
        )
        for name in ("MaintainPool", "CancelMaintainPool", "EnablePool", "DisablePool")
    ],
    Case(
        "PrimaryDataStoreLifeCycle/DeletePool",
        lambda w: lifecycle_pb2.DeletePoolRequest(pool_uuid=UNKNOWN_POOL),
    ),
    Case(
        "PrimaryDataStoreLifeCycle/UpdatePool",
        lambda w: lifecycle_pb2.UpdatePoolRequest(pool_uuid=UNKNOWN_POOL),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreLifeCycle/GetPool",
        lambda w: lifecycle_pb2.PoolRef(pool_uuid=w.pool),
    ),
    Case("PrimaryDataStoreLifeCycle/ListPools", lambda w: lifecycle_pb2.ListPoolsRequest()),
    Case(
        "PrimaryDataStoreLifeCycle/ListPoolObjects",
        lambda w: lifecycle_pb2.ListPoolObjectsRequest(pool_uuid=w.pool),
    ),
    Case(
        "PrimaryDataStoreLifeCycle/GetPoolObject",
        lambda w: lifecycle_pb2.GetPoolObjectRequest(pool_uuid=w.pool, ref=MISSING_PATH),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreLifeCycle/ReportAbandonedObjects",
        lambda w: lifecycle_pb2.ReportAbandonedObjectsRequest(pool_uuid=w.pool),
    ),
    Case(
        "PrimaryDataStoreLifeCycle/DeleteAbandonedObjects",
        lambda w: lifecycle_pb2.DeleteAbandonedObjectsRequest(
            pool_uuid=w.pool, paths=[MISSING_PATH]
        ),
    ),
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
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/DeleteData",
        lambda w: driver_pb2.DeleteDataRequest(
            object=types_pb2.DataObject(volume=types_pb2.Volume(uuid=new_id("vol"))),
            pool=pool(w),
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
        extra=EXTRA_CANCOPY,
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
        extra=EXTRA_COPYDATA,
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/TakeSnapshot",
        lambda w: driver_pb2.TakeSnapshotRequest(
            pool=pool(w),
            snapshot=types_pb2.Snapshot(uuid=new_id("snap"), volume_path=MISSING_PATH),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/RevertSnapshot",
        lambda w: driver_pb2.RevertSnapshotRequest(
            pool=pool(w),
            snapshot=types_pb2.Snapshot(path=MISSING_PATH),
            volume=types_pb2.Volume(path=MISSING_PATH),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/ResizeVolume",
        lambda w: driver_pb2.ResizeVolumeRequest(
            pool=pool(w), volume=types_pb2.Volume(path=MISSING_PATH), new_size_bytes=MIB
        ),
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
    ),
    Case(
        "PrimaryDataStoreDriver/GetVolumesStats",
        lambda w: driver_pb2.GetVolumesStatsRequest(pool=pool(w), volume_paths=[MISSING_PATH]),
    ),
    *[
        Case(
            f"PrimaryDataStoreDriver/{name}",
            lambda w, r=request: r(pool=pool(w), volume_path=MISSING_PATH),
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
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/MigrateVolume",
        lambda w: driver_pb2.MigrateVolumeRequest(
            source_pool=pool(w),
            volume=types_pb2.Volume(path=MISSING_PATH),
            destination_pool=pool(w),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "PrimaryDataStoreDriver/ChangeVolumeOffering",
        lambda w: driver_pb2.ChangeVolumeOfferingRequest(
            pool=pool(w), volume=types_pb2.Volume(path=MISSING_PATH, max_iops=100)
        ),
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
    ),
    Case(
        "SnapshotStrategy/DeleteSnapshot",
        lambda w: strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(uuid=new_id("snap"))
        ),
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
        answers=NOT_FOUND,
    ),
    Case(
        "SnapshotStrategy/CopySnapshot",
        lambda w: strategies_pb2.CopySnapshotRequest(
            operation_id=new_id("op"),
            snapshot=types_pb2.Snapshot(path=MISSING_PATH),
            pool=pool(w),
            destination_pool=pool(w),
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
        answers=NOT_FOUND,
    ),
    Case(
        "VMSnapshotStrategy/DeleteVMSnapshot",
        lambda w: strategies_pb2.DeleteVMSnapshotRequest(
            vm_snapshot_uuid=new_id("vms"),
            volumes=[strategies_pb2.VolumeSnapshotRef(snapshot_path=MISSING_PATH)],
            pool=pool(w),
        ),
    ),
]

HOSTS = [
    Case(
        "HostListener/HostConnect",
        lambda w: hosts_pb2.HostConnectRequest(host_id="host-1", pool_uuid=UNKNOWN_POOL),
        answers=NOT_FOUND,
    ),
    *[
        Case(
            f"HostListener/{name}",
            lambda w: hosts_pb2.HostEventRequest(host_id=GHOST_HOST),
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
    ),
    Case("NodeRegistry/ListNodes", lambda w: hosts_pb2.ListNodesRequest()),
    Case(
        "NodeRegistry/CheckHostHeartbeat",
        lambda w: hosts_pb2.CheckHostHeartbeatRequest(host_id=w.node.host_id),
    ),
]


def _disk() -> node_pb2.DiskRef:
    return node_pb2.DiskRef(path=MISSING_PATH)


NODE = [
    Case(
        "StorageAdaptor/ConnectPhysicalDisk",
        lambda w: node_pb2.ConnectPhysicalDiskRequest(disk=_disk()),
        answers=NOT_FOUND,
    ),
    Case(
        "StorageAdaptor/DisconnectPhysicalDisk",
        lambda w: node_pb2.DisconnectPhysicalDiskRequest(disk=_disk()),
    ),
    Case(
        "StorageAdaptor/DisconnectPhysicalDiskByPath",
        lambda w: node_pb2.DisconnectPhysicalDiskByPathRequest(path=MISSING_PATH),
    ),
    Case(
        "StorageAdaptor/GetPhysicalDisk",
        lambda w: node_pb2.GetPhysicalDiskRequest(disk=_disk()),
        answers=NOT_FOUND,
    ),
    Case(
        "StorageAdaptor/DeletePhysicalDisk",
        lambda w: node_pb2.DeletePhysicalDiskRequest(disk=_disk()),
    ),
    Case(
        "StorageAdaptor/ResizePhysicalDisk",
        lambda w: node_pb2.ResizePhysicalDiskRequest(disk=_disk(), new_size_bytes=MIB),
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
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/DirectDownloadTemplate",
        lambda w: node_pb2.DirectDownloadTemplateRequest(
            operation_id=new_id("op"),
            source=types_pb2.DirectDownloadSource(url="http://127.0.0.1:9/f/t.qcow2"),
            destination_path=MISSING_PATH,
        ),
        # the contract stack's nodes allow no direct-download server
        answers=PERMISSION_DENIED,
    ),
    Case(
        "AgentCommands/FormatVolume",
        lambda w: node_pb2.FormatVolumeRequest(
            volume_path=MISSING_PATH,
            encryption=node_pb2.Encryption(
                format=types_pb2.ENCRYPTION_FORMAT_LUKS, passphrase=b"secret"
            ),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/EncryptVolume",
        lambda w: node_pb2.EncryptVolumeRequest(
            operation_id=new_id("op"),
            source=node_pb2.DiskRef(path=MISSING_PATH),
            destination_path=MISSING_PATH,
            encryption=node_pb2.Encryption(
                format=types_pb2.ENCRYPTION_FORMAT_LUKS, passphrase=b"secret"
            ),
        ),
        answers=NOT_FOUND,
    ),
    Case(
        "AgentCommands/ResizeNotify",
        lambda w: node_pb2.ResizeNotifyRequest(
            vm_name="i-2-3-VM", path=MISSING_PATH, new_size_bytes=MIB
        ),
        # no libvirt on the emulated hosts
        answers=FAILED_PRECONDITION,
    ),
    Case(
        "AgentCommands/ModifyStoragePool",
        lambda w: node_pb2.ModifyStoragePoolRequest(pool_uuid=w.pool, add=True),
    ),
    Case(
        "AgentCommands/CheckHeartbeat",
        lambda w: node_pb2.CheckHeartbeatRequest(neighbour_client_ids=[2]),
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


def test_every_handler_declares_its_contract():
    """Every method of every service has an `@rpc` declaration on its handler (the cases above
    are generated from them), and the holds it declares are entries of the HOLDS table."""
    for service, servicer in SERVICERS.items():
        methods = {rpc.split("/")[1] for rpc in all_methods((service,))}
        assert set(declared(servicer)) == methods, service
        for contract in declared(servicer).values():
            assert set(contract.holds) <= set(HOLDS)
