"""Thin gRPC handlers of the management service: declare, hold, call the domain, reply.

Each handler's `@rpc` declares its request contract (required fields, ids, sizes, the
idempotency key and the holds it takes; `spcs.common.contract`), checked before it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import grpc
from google.longrunning import operations_pb2

from spcs.common import errors, holds
from spcs.common.contract import rpc
from spcs.common.locks import Locks
from spcs.management import objects
from spcs.management.abandoned import Abandoned
from spcs.management.copies import COPY_KINDS, Copies
from spcs.management.heartbeat import Heartbeats
from spcs.management.hosts import HostEvents
from spcs.management.inventory import Inventory
from spcs.management.lifecycle import PoolLifecycle
from spcs.management.nodes import NodeDirectory, node_message
from spcs.management.pools import DISABLED, MAINTENANCE, UP, Pools
from spcs.management.snapshots import Snapshots
from spcs.management.state import DEFAULT_MAX_COPIES, REFRESH_SECONDS
from spcs.management.templates import TemplateCache
from spcs.management.volumes import Volumes
from spcs.management.zones import ZoneCopies
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
    types_pb2,
)

_POOL = ("pool.pool_uuid",)
_SNAPSHOT = ("snapshot.path", "snapshot.uuid")
_DISK_PATH = (("object.volume.path",), ("object.snapshot.path",))

CAPABILITIES = {
    "STORAGE_SYSTEM_SNAPSHOT": "true",
    "CAN_CREATE_VOLUME_FROM_SNAPSHOT": "true",
    "CAN_CREATE_VOLUME_FROM_VOLUME": "true",
    "CAN_REVERT_VOLUME_TO_SNAPSHOT": "true",
    "CAN_CREATE_TEMPLATE_FROM_SNAPSHOT": "true",
    "CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE": "true",
    # LUKS volumes (Volume.encryption_format, the passphrase per call), as StorPool's
    # StoragePoolType supportsEncryption in CloudStack
    "VOLUME_ENCRYPTION": "true",
    "ENCRYPTION_FORMATS": "LUKS",
}


class LifecycleServicer(lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleServicer):
    def __init__(
        self,
        pools: Pools,
        lifecycle: PoolLifecycle,
        locks: Locks,
        inventory: Inventory,
        abandoned: Abandoned,
    ) -> None:
        self._pools = pools
        self._lifecycle = lifecycle
        self._locks = locks
        self._inventory = inventory
        self._abandoned = abandoned

    def _locked(self, uuid: str) -> AbstractContextManager[None]:
        """The pool's hold, as the RPC's @rpc declares it."""
        return self._locks.hold(holds.declared_entry(), pool=holds.pool(uuid))

    @rpc(
        key="pool_uuid",
        required=("name", "url", "zone_id", "capacity_bytes"),
        holds="InitializePool",
    )
    def InitializePool(
        self, request: lifecycle_pb2.InitializePoolRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        with self._locked(request.pool_uuid):
            return self._pools.initialize(request).message()

    @rpc(ids=("pool_uuid",), required=("zone_id",), holds="AttachZone")
    def AttachZone(
        self, request: lifecycle_pb2.AttachZoneRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        with self._locked(request.pool_uuid):
            return self._pools.attach_zone(
                request.pool_uuid, request.zone_id, request.hypervisor
            ).message()

    @rpc(ids=("pool_uuid",), required=("cluster_id",))
    def AttachCluster(
        self, request: lifecycle_pb2.AttachClusterRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        return self._pools.attach_cluster(request.pool_uuid).message()

    def _state(
        self, request: lifecycle_pb2.PoolRef, state: lifecycle_pb2.PoolState.ValueType
    ) -> lifecycle_pb2.Pool:
        with self._locked(request.pool_uuid):
            return self._pools.change_state(request.pool_uuid, state).message()

    @rpc(ids=("pool_uuid",), holds="MaintainPool")
    def MaintainPool(
        self, request: lifecycle_pb2.PoolRef, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        return self._state(request, MAINTENANCE)

    @rpc(ids=("pool_uuid",), holds="CancelMaintainPool")
    def CancelMaintainPool(
        self, request: lifecycle_pb2.PoolRef, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        return self._state(request, UP)

    @rpc(ids=("pool_uuid",), holds="EnablePool")
    def EnablePool(
        self, request: lifecycle_pb2.PoolRef, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        return self._state(request, UP)

    @rpc(ids=("pool_uuid",), holds="DisablePool")
    def DisablePool(
        self, request: lifecycle_pb2.PoolRef, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        return self._state(request, DISABLED)

    @rpc(ids=("pool_uuid",), holds="DeletePool")
    def DeletePool(
        self, request: lifecycle_pb2.DeletePoolRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.DeletePoolResponse:
        deleted, removed = self._lifecycle.delete(request.pool_uuid)
        return lifecycle_pb2.DeletePoolResponse(deleted=deleted, template_snapshots_removed=removed)

    @rpc(ids=("pool_uuid",), holds="UpdatePool")
    def UpdatePool(
        self, request: lifecycle_pb2.UpdatePoolRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        with self._locked(request.pool_uuid):
            return self._pools.update(request).message()

    @rpc(ids=("pool_uuid",))
    def GetPool(
        self, request: lifecycle_pb2.PoolRef, context: grpc.ServicerContext
    ) -> lifecycle_pb2.Pool:
        return self._pools.get(request.pool_uuid).message()

    @rpc()
    def ListPools(
        self, request: lifecycle_pb2.ListPoolsRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.ListPoolsResponse:
        return lifecycle_pb2.ListPoolsResponse(pools=[p.message() for p in self._pools.all()])

    @rpc(ids=("pool_uuid",))
    def ListPoolObjects(
        self, request: lifecycle_pb2.ListPoolObjectsRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.ListPoolObjectsResponse:
        page = self._inventory.page(
            request.pool_uuid,
            request.kind,
            request.page_size,
            request.page_token,
            request.cloudstack_kind,
        )
        return lifecycle_pb2.ListPoolObjectsResponse(
            objects=page.objects, next_page_token=page.next_token
        )

    @rpc(ids=("pool_uuid",), required=("ref",))
    def GetPoolObject(
        self, request: lifecycle_pb2.GetPoolObjectRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.PoolObject:
        return self._inventory.get(request.pool_uuid, request.ref)

    @rpc(ids=("pool_uuid",), stream=True)
    def ReportAbandonedObjects(
        self,
        request_iterator: Iterator[lifecycle_pb2.ReportAbandonedObjectsRequest],
        context: grpc.ServicerContext,
    ) -> lifecycle_pb2.ReportAbandonedObjectsResponse:
        report = self._abandoned.report(request_iterator)
        return lifecycle_pb2.ReportAbandonedObjectsResponse(
            objects=report.objects, examined=report.examined, known=report.known
        )

    @rpc(ids=("pool_uuid",), required=("paths",), holds="DeleteAbandonedObjects")
    def DeleteAbandonedObjects(
        self, request: lifecycle_pb2.DeleteAbandonedObjectsRequest, context: grpc.ServicerContext
    ) -> lifecycle_pb2.DeleteAbandonedObjectsResponse:
        results = self._abandoned.delete(request.pool_uuid, list(request.paths))
        return lifecycle_pb2.DeleteAbandonedObjectsResponse(results=results)


class DriverServicer(driver_pb2_grpc.PrimaryDataStoreDriverServicer):
    def __init__(
        self,
        pools: Pools,
        volumes: Volumes,
        snapshots: Snapshots,
        templates: TemplateCache,
        copies: Copies,
        lifecycle: PoolLifecycle,
    ) -> None:
        self._pools = pools
        self._volumes = volumes
        self._snapshots = snapshots
        self._templates = templates
        self._copies = copies
        self._lifecycle = lifecycle

    @rpc()
    def GetDriverCapabilities(
        self, request: driver_pb2.GetDriverCapabilitiesRequest, context: grpc.ServicerContext
    ) -> driver_pb2.GetDriverCapabilitiesResponse:
        return driver_pb2.GetDriverCapabilitiesResponse(capabilities=CAPABILITIES)

    @rpc(key="volume.uuid", ids=_POOL, sizes=("volume.size_bytes",), holds="CreateVolume")
    def CreateVolume(
        self, request: driver_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> types_pb2.Volume:
        return self._volumes.create(request.pool.pool_uuid, request.volume, request.host_id)

    @rpc(
        ids=_POOL,
        chosen=("object",),
        one_of=(
            ("object.volume.path", "object.volume.uuid"),
            ("object.snapshot.path", "object.snapshot.uuid"),
            ("object.template.path", "object.template.uuid"),
        ),
        holds=("DeleteVolume", "DeleteSnapshot", "DeleteTemplate"),
    )
    def DeleteData(
        self, request: driver_pb2.DeleteDataRequest, context: grpc.ServicerContext
    ) -> driver_pb2.DeleteDataResponse:
        kind = request.object.WhichOneof("object")
        pool = self._pools.get(request.pool.pool_uuid)
        if kind == "volume":
            deleted, backup = self._volumes.delete(pool, request.object.volume)
            reply = driver_pb2.DeleteDataResponse(deleted=deleted)
            if backup is not None:
                reply.delay_delete_backup.CopyFrom(objects.snapshot_message(backup, pool.uuid))
                if backup.delete_at:
                    reply.backup_delete_time.FromSeconds(backup.delete_at)
            return reply
        if kind == "snapshot":
            deleted = self._snapshots.delete(request.object.snapshot, pool.uuid)
        else:
            deleted = self._templates.drop(pool, request.object.template)
        return driver_pb2.DeleteDataResponse(deleted=deleted)

    @rpc(chosen=("source", "destination"))
    def CanCopy(
        self, request: driver_pb2.CanCopyRequest, context: grpc.ServicerContext
    ) -> driver_pb2.CanCopyResponse:
        return self._copies.can_copy(request)

    @rpc(key="operation_id", chosen=("source", "destination"), holds=COPY_KINDS)
    def CopyData(
        self, request: driver_pb2.CopyDataRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._copies.start(request)

    @rpc(key="snapshot.uuid", ids=_POOL, required=("snapshot.volume_path",), holds="TakeSnapshot")
    def TakeSnapshot(
        self, request: driver_pb2.TakeSnapshotRequest, context: grpc.ServicerContext
    ) -> types_pb2.Snapshot:
        return self._snapshots.take(request.pool.pool_uuid, request.snapshot)

    @rpc(
        ids=_POOL,
        required=("snapshot", "volume"),
        one_of=(("snapshot.path", "snapshot.uuid"), ("volume.path", "volume.uuid")),
        holds="RevertSnapshot",
    )
    def RevertSnapshot(
        self, request: driver_pb2.RevertSnapshotRequest, context: grpc.ServicerContext
    ) -> types_pb2.Volume:
        return self._volumes.revert(request)

    @rpc(
        ids=_POOL,
        required=("volume",),
        sizes=("new_size_bytes",),
        one_of=(("volume.path", "volume.uuid"),),
        holds="ResizeVolume",
    )
    def ResizeVolume(
        self, request: driver_pb2.ResizeVolumeRequest, context: grpc.ServicerContext
    ) -> types_pb2.Volume:
        return self._volumes.resize(request)

    @rpc(required=("host_id",), chosen=("object",), one_of=_DISK_PATH)
    def GrantAccess(
        self, request: driver_pb2.GrantAccessRequest, context: grpc.ServicerContext
    ) -> driver_pb2.GrantAccessResponse:
        return driver_pb2.GrantAccessResponse(path=self._volumes.grant(request))

    @rpc(required=("host_id",), chosen=("object",), one_of=_DISK_PATH)
    def RevokeAccess(
        self, request: driver_pb2.RevokeAccessRequest, context: grpc.ServicerContext
    ) -> driver_pb2.RevokeAccessResponse:
        return driver_pb2.RevokeAccessResponse(detached=self._volumes.revoke(request))

    @rpc(ids=_POOL)
    def GetStorageStats(
        self, request: driver_pb2.GetStorageStatsRequest, context: grpc.ServicerContext
    ) -> driver_pb2.GetStorageStatsResponse:
        capacity, used = self._lifecycle.storage_stats(request.pool.pool_uuid)
        return driver_pb2.GetStorageStatsResponse(capacity_bytes=capacity, used_bytes=used)

    @rpc(ids=_POOL, required=("volume_path",))
    def GetVolumeStats(
        self, request: driver_pb2.GetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> driver_pb2.GetVolumeStatsResponse:
        size, used = self._volumes.stats(request.pool.pool_uuid, request.volume_path)
        return driver_pb2.GetVolumeStatsResponse(size_bytes=size, used_bytes=used)

    @rpc(ids=_POOL)
    def GetVolumesStats(
        self, request: driver_pb2.GetVolumesStatsRequest, context: grpc.ServicerContext
    ) -> driver_pb2.GetVolumesStatsResponse:
        volumes = self._volumes.stats_many(request.pool.pool_uuid, list(request.volume_paths))
        reply = driver_pb2.GetVolumesStatsResponse(volumes=volumes)
        if request.template_cache:
            reply.template_cache.CopyFrom(
                self._volumes.template_cache_usage(request.pool.pool_uuid)
            )
        return reply

    @rpc(ids=_POOL, required=("volume_path",))
    def DetachVolumeFromAllStorageNodes(
        self,
        request: driver_pb2.DetachVolumeFromAllStorageNodesRequest,
        context: grpc.ServicerContext,
    ) -> driver_pb2.DetachVolumeFromAllStorageNodesResponse:
        clients = self._volumes.detach_all(request.pool.pool_uuid, request.volume_path)
        return driver_pb2.DetachVolumeFromAllStorageNodesResponse(detached_client_ids=clients)

    @rpc(ids=_POOL, required=("volume.path",), holds="ProvideVmInfo")
    def ProvideVmInfo(
        self, request: driver_pb2.ProvideVmInfoRequest, context: grpc.ServicerContext
    ) -> driver_pb2.ProvideVmInfoResponse:
        self._volumes.provide_vm_info(request.pool.pool_uuid, request.volume)
        return driver_pb2.ProvideVmInfoResponse()

    @rpc(ids=_POOL, required=("vm_uuid", "volume_paths", "key"))
    def ProvideVmTags(
        self, request: driver_pb2.ProvideVmTagsRequest, context: grpc.ServicerContext
    ) -> driver_pb2.ProvideVmTagsResponse:
        updated = self._volumes.provide_vm_tags(request)
        return driver_pb2.ProvideVmTagsResponse(volumes_updated=updated)

    @rpc(
        ids=("source_pool.pool_uuid", "destination_pool.pool_uuid"),
        required=("volume",),
        one_of=(("volume.path", "volume.uuid"),),
        holds="MigrateVolume",
    )
    def MigrateVolume(
        self, request: driver_pb2.MigrateVolumeRequest, context: grpc.ServicerContext
    ) -> types_pb2.Volume:
        return self._volumes.migrate(
            request.source_pool.pool_uuid,
            request.volume,
            request.destination_pool.pool_uuid,
            request.vm_running,
        )

    @rpc(ids=_POOL, required=("volume.path",), holds="ChangeVolumeOffering")
    def ChangeVolumeOffering(
        self, request: driver_pb2.ChangeVolumeOfferingRequest, context: grpc.ServicerContext
    ) -> types_pb2.Volume:
        return self._volumes.change_offering(request.pool.pool_uuid, request.volume)


class SnapshotStrategyServicer(strategies_pb2_grpc.SnapshotStrategyServicer):
    def __init__(self, snapshots: Snapshots, copies: Copies, zones: ZoneCopies) -> None:
        self._snapshots = snapshots
        self._copies = copies
        self._zones = zones

    @rpc(required=("snapshot",), one_of=(_SNAPSHOT,))
    def CanHandleSnapshot(
        self, request: strategies_pb2.CanHandleSnapshotRequest, context: grpc.ServicerContext
    ) -> strategies_pb2.CanHandleResponse:
        return self._snapshots.can_handle(request)

    @rpc(required=("snapshot",), one_of=(_SNAPSHOT,), holds="DeleteSnapshot")
    def DeleteSnapshot(
        self, request: strategies_pb2.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> strategies_pb2.DeleteSnapshotResponse:
        deleted = self._snapshots.delete(request.snapshot, request.pool.pool_uuid)
        return strategies_pb2.DeleteSnapshotResponse(deleted=deleted)

    @rpc(
        key="operation_id",
        ids=_POOL,
        required=("snapshot", "destination.url", "destination_path"),
        one_of=(_SNAPSHOT,),
        holds="snapshot-to-secondary",
    )
    def BackupSnapshot(
        self, request: strategies_pb2.BackupSnapshotRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._copies.start_backup(request)

    @rpc(
        key="operation_id",
        ids=(*_POOL, "destination_pool.pool_uuid"),
        required=("snapshot",),
        one_of=(_SNAPSHOT,),
        holds="snapshot-to-zone",
    )
    def CopySnapshot(
        self, request: strategies_pb2.CopySnapshotRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._zones.start(request)


class VMSnapshotStrategyServicer(strategies_pb2_grpc.VMSnapshotStrategyServicer):
    def __init__(self, snapshots: Snapshots) -> None:
        self._snapshots = snapshots

    @rpc()
    def CanHandleVMSnapshot(
        self, request: strategies_pb2.CanHandleVMSnapshotRequest, context: grpc.ServicerContext
    ) -> strategies_pb2.CanHandleResponse:
        return self._snapshots.vm_can_handle(request)

    @rpc(
        key="vm_snapshot_uuid",
        ids=_POOL,
        required=("vm_uuid", "volumes[*].volume_uuid", "volumes[*].volume_path"),
        holds="TakeVMSnapshot",
    )
    def TakeVMSnapshot(
        self, request: strategies_pb2.TakeVMSnapshotRequest, context: grpc.ServicerContext
    ) -> strategies_pb2.VMSnapshot:
        return self._snapshots.vm_take(request)

    @rpc(
        ids=("vm_snapshot_uuid", *_POOL),
        required=("volumes[*].volume_path", "volumes[*].snapshot_path"),
        holds="RevertVMSnapshot",
    )
    def RevertVMSnapshot(
        self, request: strategies_pb2.RevertVMSnapshotRequest, context: grpc.ServicerContext
    ) -> strategies_pb2.RevertVMSnapshotResponse:
        self._snapshots.vm_revert(request)
        return strategies_pb2.RevertVMSnapshotResponse()

    @rpc(
        ids=("vm_snapshot_uuid", *_POOL),
        required=("volumes[*].snapshot_path",),
        holds="DeleteVMSnapshot",
    )
    def DeleteVMSnapshot(
        self, request: strategies_pb2.DeleteVMSnapshotRequest, context: grpc.ServicerContext
    ) -> strategies_pb2.DeleteVMSnapshotResponse:
        deleted = self._snapshots.vm_delete(request)
        return strategies_pb2.DeleteVMSnapshotResponse(snapshots_deleted=deleted)


class HostListenerServicer(hosts_pb2_grpc.HostListenerServicer):
    def __init__(self, events: HostEvents) -> None:
        self._events = events

    @rpc(required=("host_id",), ids=("pool_uuid",))
    def HostConnect(
        self, request: hosts_pb2.HostConnectRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.HostConnectResponse:
        return self._events.connect(request)

    @rpc(required=("host_id",))
    def HostDisconnected(
        self, request: hosts_pb2.HostEventRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.HostEventResponse:
        return hosts_pb2.HostEventResponse(message=self._events.disconnected(request))

    @rpc(required=("host_id",))
    def HostAdded(
        self, request: hosts_pb2.HostEventRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.HostEventResponse:
        return hosts_pb2.HostEventResponse(message=self._events.added(request))

    @rpc(required=("host_id",))
    def HostAboutToBeRemoved(
        self, request: hosts_pb2.HostEventRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.HostEventResponse:
        return hosts_pb2.HostEventResponse(message=self._events.about_to_be_removed(request))

    @rpc(required=("host_id",))
    def HostRemoved(
        self, request: hosts_pb2.HostEventRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.HostEventResponse:
        return hosts_pb2.HostEventResponse(message=self._events.removed(request))


class NodeRegistryServicer(hosts_pb2_grpc.NodeRegistryServicer):
    def __init__(
        self,
        nodes: NodeDirectory,
        heartbeats: Heartbeats,
        copies_running: Callable[[str], int] = lambda _host: 0,
    ) -> None:
        self._nodes = nodes
        self._heartbeats = heartbeats
        self._copies_running = copies_running

    @rpc(key="host_id", required=("address", "storpool_client_id"))
    def RegisterNode(
        self, request: hosts_pb2.RegisterNodeRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.RegisterNodeResponse:
        if not 1 <= request.storpool_client_id <= 4095:
            raise errors.InvalidArgument(
                f"storpool_client_id {request.storpool_client_id} is outside 1-4095 (SP_OURID)"
            )
        self._nodes.register(
            request.host_id,
            request.address,
            request.storpool_client_id,
            request.storpool_cluster_id,
            request.version,
            request.max_copies or DEFAULT_MAX_COPIES,
        )
        return hosts_pb2.RegisterNodeResponse(refresh_seconds=REFRESH_SECONDS)

    @rpc()
    def ListNodes(
        self, request: hosts_pb2.ListNodesRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.ListNodesResponse:
        return hosts_pb2.ListNodesResponse(
            nodes=[
                node_message(
                    n,
                    self._nodes.pools_of(n.host_id),
                    copies_running=self._copies_running(n.host_id),
                )
                for n in self._nodes.all()
            ]
        )

    @rpc(ids=("host_id",))
    def CheckHostHeartbeat(
        self, request: hosts_pb2.CheckHostHeartbeatRequest, context: grpc.ServicerContext
    ) -> hosts_pb2.CheckHostHeartbeatResponse:
        return self._heartbeats.check(request.host_id, request.via_host_id)
