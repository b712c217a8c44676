"""Thin gRPC handlers of the management service: validate, lock, call the domain, reply."""

from __future__ import annotations

from spcs.common import errors, holds, validate
from spcs.common.locks import KeyedLocks
from spcs.common.operations import OperationRegistry
from spcs.management.copies import Copies
from spcs.management.hosts import HostEvents
from spcs.management.lifecycle import PoolLifecycle
from spcs.management.pools import DISABLED, MAINTENANCE, UP, Pools
from spcs.management.snapshots import Snapshots
from spcs.management.templates import TemplateCache
from spcs.management.volumes import Volumes
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
)

CAPABILITIES = {
    "STORAGE_SYSTEM_SNAPSHOT": "true",
    "CAN_CREATE_VOLUME_FROM_SNAPSHOT": "true",
    "CAN_CREATE_VOLUME_FROM_VOLUME": "true",
    "CAN_REVERT_VOLUME_TO_SNAPSHOT": "true",
    "CAN_CREATE_TEMPLATE_FROM_SNAPSHOT": "true",
    "CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE": "false",
}


class LifecycleServicer(lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleServicer):
    def __init__(self, pools: Pools, lifecycle: PoolLifecycle, locks: KeyedLocks) -> None:
        self._pools = pools
        self._lifecycle = lifecycle
        self._locks = locks

    def _locked(self, uuid: str, operation: str):  # type: ignore[no-untyped-def]
        validate.identifier(uuid, "pool_uuid")
        return self._locks.hold(operation, pool=holds.pool(uuid))

    def InitializePool(self, request, context):
        validate.identifier(request.pool_uuid, "pool_uuid")
        with self._locked(request.pool_uuid, "InitializePool"):
            return self._pools.initialize(request).message()

    def AttachZone(self, request, context):
        validate.require(request, "pool_uuid", "zone_id")
        with self._locked(request.pool_uuid, "AttachZone"):
            return self._pools.attach_zone(
                request.pool_uuid, request.zone_id, request.hypervisor
            ).message()

    def AttachCluster(self, request, context):
        validate.require(request, "pool_uuid", "cluster_id")
        return self._pools.attach_cluster(request.pool_uuid).message()

    def _state(self, request: lifecycle_pb2.PoolRef, state: int, operation: str):  # type: ignore[no-untyped-def]
        validate.require(request, "pool_uuid")
        with self._locked(request.pool_uuid, operation):
            return self._pools.change_state(request.pool_uuid, state).message()

    def MaintainPool(self, request, context):
        return self._state(request, MAINTENANCE, "MaintainPool")

    def CancelMaintainPool(self, request, context):
        return self._state(request, UP, "CancelMaintainPool")

    def EnablePool(self, request, context):
        return self._state(request, UP, "EnablePool")

    def DisablePool(self, request, context):
        return self._state(request, DISABLED, "DisablePool")

    def DeletePool(self, request, context):
        validate.require(request, "pool_uuid")
        validate.identifier(request.pool_uuid, "pool_uuid")
        deleted, removed = self._lifecycle.delete(request.pool_uuid)
        return lifecycle_pb2.DeletePoolResponse(deleted=deleted, template_snapshots_removed=removed)

    def UpdatePool(self, request, context):
        validate.require(request, "pool_uuid")
        with self._locked(request.pool_uuid, "UpdatePool"):
            return self._pools.update(request).message()

    def GetPool(self, request, context):
        validate.require(request, "pool_uuid")
        return self._pools.get(request.pool_uuid).message()

    def ListPools(self, request, context):
        return lifecycle_pb2.ListPoolsResponse(pools=[p.message() for p in self._pools.all()])


class DriverServicer(driver_pb2_grpc.PrimaryDataStoreDriverServicer):
    def __init__(
        self,
        pools: Pools,
        volumes: Volumes,
        snapshots: Snapshots,
        templates: TemplateCache,
        copies: Copies,
        lifecycle: PoolLifecycle,
        locks: KeyedLocks,
    ) -> None:
        self._pools = pools
        self._volumes = volumes
        self._snapshots = snapshots
        self._templates = templates
        self._copies = copies
        self._lifecycle = lifecycle
        self._locks = locks

    def GetDriverCapabilities(self, request, context):
        return driver_pb2.GetDriverCapabilitiesResponse(capabilities=CAPABILITIES)

    def CreateVolume(self, request, context):
        validate.require(request, "pool.pool_uuid", "volume")
        return self._volumes.create(request.pool.pool_uuid, request.volume)

    def DeleteData(self, request, context):
        validate.require(request, "object", "pool.pool_uuid")
        kind = request.object.WhichOneof("object")
        if kind is None:
            raise errors.InvalidArgument("object must be a volume, a snapshot or a template")
        pool = self._pools.get(request.pool.pool_uuid)
        if kind == "volume":
            deleted = self._volumes.delete(pool, request.object.volume)
        elif kind == "snapshot":
            deleted = self._snapshots.delete(request.object.snapshot, pool.uuid)
        else:
            template = request.object.template
            if not template.uuid and not template.path:
                raise errors.InvalidArgument("object.template needs a uuid or a path")
            deleted = self._templates.drop(pool, template)
        return driver_pb2.DeleteDataResponse(deleted=deleted)

    def CanCopy(self, request, context):
        return self._copies.can_copy(request)

    def CopyData(self, request, context):
        return self._copies.start(request)

    def TakeSnapshot(self, request, context):
        validate.require(request, "pool.pool_uuid", "snapshot")
        return self._snapshots.take(request.pool.pool_uuid, request.snapshot)

    def RevertSnapshot(self, request, context):
        return self._volumes.revert(request)

    def ResizeVolume(self, request, context):
        return self._volumes.resize(request)

    def GrantAccess(self, request, context):
        return driver_pb2.GrantAccessResponse(path=self._volumes.grant(request))

    def RevokeAccess(self, request, context):
        return driver_pb2.RevokeAccessResponse(detached=self._volumes.revoke(request))

    def GetStorageStats(self, request, context):
        validate.require(request, "pool.pool_uuid")
        capacity, used = self._lifecycle.storage_stats(request.pool.pool_uuid)
        return driver_pb2.GetStorageStatsResponse(capacity_bytes=capacity, used_bytes=used)

    def GetVolumeStats(self, request, context):
        validate.require(request, "pool.pool_uuid", "volume_path")
        size, used = self._volumes.stats(request.pool.pool_uuid, request.volume_path)
        return driver_pb2.GetVolumeStatsResponse(size_bytes=size, used_bytes=used)

    def GetVolumesStats(self, request, context):
        validate.require(request, "pool.pool_uuid")
        volumes = self._volumes.stats_many(request.pool.pool_uuid, list(request.volume_paths))
        return driver_pb2.GetVolumesStatsResponse(volumes=volumes)

    def DetachVolumeFromAllStorageNodes(self, request, context):
        validate.require(request, "pool.pool_uuid", "volume_path")
        clients = self._volumes.detach_all(request.pool.pool_uuid, request.volume_path)
        return driver_pb2.DetachVolumeFromAllStorageNodesResponse(detached_client_ids=clients)

    def ProvideVmInfo(self, request, context):
        validate.require(request, "pool.pool_uuid", "volume")
        self._volumes.provide_vm_info(request.pool.pool_uuid, request.volume)
        return driver_pb2.ProvideVmInfoResponse()

    def ProvideVmTags(self, request, context):
        updated = self._volumes.provide_vm_tags(request)
        return driver_pb2.ProvideVmTagsResponse(volumes_updated=updated)

    def MigrateVolume(self, request, context):
        validate.require(request, "source_pool.pool_uuid", "volume", "destination_pool.pool_uuid")
        return self._volumes.migrate(
            request.source_pool.pool_uuid,
            request.volume,
            request.destination_pool.pool_uuid,
            request.vm_running,
        )

    def ChangeVolumeOffering(self, request, context):
        validate.require(request, "pool.pool_uuid", "volume")
        return self._volumes.change_offering(request.pool.pool_uuid, request.volume)


class SnapshotStrategyServicer(strategies_pb2_grpc.SnapshotStrategyServicer):
    def __init__(self, snapshots: Snapshots, copies: Copies, registry: OperationRegistry) -> None:
        self._snapshots = snapshots
        self._copies = copies
        self._registry = registry

    def CanHandleSnapshot(self, request, context):
        return self._snapshots.can_handle(request)

    def DeleteSnapshot(self, request, context):
        validate.require(request, "snapshot")
        deleted = self._snapshots.delete(request.snapshot, request.pool.pool_uuid)
        return strategies_pb2.DeleteSnapshotResponse(deleted=deleted)

    def BackupSnapshot(self, request, context):
        return self._copies.start_backup(request)


class VMSnapshotStrategyServicer(strategies_pb2_grpc.VMSnapshotStrategyServicer):
    def __init__(self, snapshots: Snapshots) -> None:
        self._snapshots = snapshots

    def CanHandleVMSnapshot(self, request, context):
        return self._snapshots.vm_can_handle(request)

    def TakeVMSnapshot(self, request, context):
        return self._snapshots.vm_take(request)

    def RevertVMSnapshot(self, request, context):
        self._snapshots.vm_revert(request)
        return strategies_pb2.RevertVMSnapshotResponse()

    def DeleteVMSnapshot(self, request, context):
        deleted = self._snapshots.vm_delete(request)
        return strategies_pb2.DeleteVMSnapshotResponse(snapshots_deleted=deleted)


class HostListenerServicer(hosts_pb2_grpc.HostListenerServicer):
    def __init__(self, events: HostEvents) -> None:
        self._events = events

    def HostConnect(self, request, context):
        return self._events.connect(request)

    def HostDisconnected(self, request, context):
        return hosts_pb2.HostEventResponse(message=self._events.disconnected(request))

    def HostAdded(self, request, context):
        return hosts_pb2.HostEventResponse(message=self._events.added(request))

    def HostAboutToBeRemoved(self, request, context):
        return hosts_pb2.HostEventResponse(message=self._events.about_to_be_removed(request))

    def HostRemoved(self, request, context):
        return hosts_pb2.HostEventResponse(message=self._events.removed(request))
