"""Volume snapshots and VM snapshots on StorPool, and the snapshot strategy's decisions.

Whether spcs handles a snapshot is decided by asking StorPool (by path, name or `uuid` tag),
never by trusting CloudStack's records, which lose rows when volumes are deleted.
"""

from __future__ import annotations

import logging

from spcs.common import errors, holds
from spcs.common.locks import Locks
from spcs.common.secrets import LUKS_HEADER_BYTES
from spcs.management import encryption, objects
from spcs.management.pools import Pools
from spcs.management.state import PoolRecord
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolSnapshot, StorPoolVolume
from spcs.v1 import strategies_pb2, types_pb2

log = logging.getLogger(__name__)

HIGHEST = strategies_pb2.STRATEGY_PRIORITY_HIGHEST
CANT_HANDLE = strategies_pb2.STRATEGY_PRIORITY_CANT_HANDLE
# The Java plugin's strategy claims only these; take/backup/revert go through CloudStack's
# default strategy, which calls the driver. COPY is the copy to another zone (CopySnapshot).
CLAIMED = (strategies_pb2.SNAPSHOT_OPERATION_DELETE, strategies_pb2.SNAPSHOT_OPERATION_COPY)
# What StorPool answers a delete of a snapshot another location may still read.
STILL_EXPORTED = "still exported"


def snapshot_key(snapshot: types_pb2.Snapshot) -> str:
    """The key that serializes creating the snapshot of one CloudStack uuid."""
    return holds.new_object("snapshot", snapshot.uuid or snapshot.path)


class Snapshots:
    def __init__(self, pools: Pools, locks: Locks) -> None:
        self.pools = pools
        self.locks = locks

    def take(self, pool_uuid: str, snapshot: types_pb2.Snapshot) -> types_pb2.Snapshot:
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        volume = objects.require_volume(
            api, types_pb2.Volume(path=snapshot.volume_path), "snapshot.volume_path"
        )
        name = names.snapshot_name(snapshot.uuid)
        tags = {"uuid": snapshot.uuid, "cs": names.CS_SNAPSHOT}
        if snapshot.vm_uuid:
            tags["cvm"] = names.tag_value(snapshot.vm_uuid, "vm_uuid")
        encryption.check_format(snapshot, "snapshot")
        snapshot.ClearField("passphrase")  # not needed to take it; never echoed
        luks = encryption.encrypted(snapshot, volume)
        if luks:
            tags.update(encryption.TAGS)  # its backups and clones are encrypted too
        # the volume's lock too: no resize, revert or delete while its snapshot is cut
        with self.locks.hold(
            "TakeSnapshot",
            snapshot=snapshot_key(snapshot),
            volume=holds.storpool_object(volume.global_id),
        ):
            try:
                gid = api.snapshot_create(volume.ref, name=name, tags=tags)
            except errors.AlreadyExists:
                # a replay: the snapshot exists; it must be of the same volume
                taken = api.snapshot(name)
                if not self._of_volume(api, taken, volume):
                    raise errors.AlreadyExists(
                        f"snapshot {snapshot.uuid} already exists as {taken.ref} of another "
                        f"volume ({taken.on_volume}); use another uuid"
                    ) from None
                gid, size = taken.global_id, taken.size
            else:
                size = volume.size  # a snapshot has its volume's size at this moment
                log.info("snapshot %s of %s is ~%s", snapshot.uuid, volume.ref, gid)
        # The reply is what StorPool was told, the same for a replay (no read-back).
        reply = types_pb2.Snapshot()
        reply.CopyFrom(snapshot)
        if luks:
            size -= LUKS_HEADER_BYTES  # the guest's size, as for the volume
            reply.encryption_format = encryption.LUKS
        reply.path, reply.global_id, reply.size_bytes = names.byid_path(gid), gid, size
        reply.store.primary.pool_uuid, reply.format = pool.uuid, types_pb2.IMAGE_FORMAT_RAW
        return reply

    @staticmethod
    def _of_volume(api: StorPoolClient, snap: StorPoolSnapshot, volume: StorPoolVolume) -> bool:
        """Is `snap` in the volume's chain of parents? (Later snapshots sit between them.)"""
        ref, hops = volume.parent, 0
        while ref and hops < 1000:
            if ref in (snap.name, snap.ref):
                return True
            parent = api.snapshot_or_none(ref)
            ref, hops = (parent.parent if parent else ""), hops + 1
        return snap.on_volume in (volume.name, volume.ref)

    def find(
        self, snapshot: types_pb2.Snapshot, pool_uuid: str = ""
    ) -> tuple[PoolRecord, StorPoolSnapshot] | None:
        """The pool and StorPool snapshot behind a CloudStack snapshot, looking in every pool
        when none is named."""
        pools = [self.pools.get(pool_uuid)] if pool_uuid else self.pools.all()
        for pool in pools:
            found = objects.find_snapshot(
                self.pools.api(pool), path=snapshot.path, uuid=snapshot.uuid
            )
            if found is not None:
                return pool, found
        return None

    def _check_one_zone(self, snapshot: types_pb2.Snapshot, first: PoolRecord) -> None:
        """A snapshot copied to another zone has the same path there (StorPool keeps its
        global id): without a pool, a delete must not pick one of the copies."""
        others = [
            pool.name
            for pool in self.pools.all()
            if pool.conn.endpoint != first.conn.endpoint
            and objects.find_snapshot(self.pools.api(pool), path=snapshot.path, uuid=snapshot.uuid)
        ]
        if others:
            raise errors.FailedPrecondition(
                f"snapshot {snapshot.path or snapshot.uuid} exists in pool {first.name} and in "
                f"{', '.join(others)} (copies in several zones); name the pool to delete it from"
            )

    def can_handle(
        self, request: strategies_pb2.CanHandleSnapshotRequest
    ) -> strategies_pb2.CanHandleResponse:
        if request.operation not in CLAIMED:
            return strategies_pb2.CanHandleResponse(
                priority=CANT_HANDLE,
                reason="take, backup and revert go through CloudStack's default strategy and "
                "this driver",
            )
        found = self.find(request.snapshot, request.pool.pool_uuid)
        if found is None:
            return strategies_pb2.CanHandleResponse(
                priority=CANT_HANDLE, reason="no such snapshot in StorPool"
            )
        pool, snap = found
        return strategies_pb2.CanHandleResponse(
            priority=HIGHEST, reason=f"StorPool snapshot {snap.ref} exists (pool {pool.name})"
        )

    def delete(self, snapshot: types_pb2.Snapshot, pool_uuid: str = "") -> bool:
        found = self.find(snapshot, pool_uuid)
        if found is None:
            return False
        pool, snap = found
        if not pool_uuid:
            self._check_one_zone(snapshot, pool)
        api = self.pools.api(pool)
        with self.locks.hold("DeleteSnapshot", snapshot=holds.storpool_object(snap.global_id)):
            try:
                deleted = api.snapshot_delete(snap.ref)
            except errors.InvalidArgument as refused:
                if STILL_EXPORTED not in refused.message:
                    raise
                # exported to another location: the hold says no copy of spcs reads it now, and
                # a delete is the caller's explicit wish (the Java plugin fails here until a
                # periodic task unexports it)
                log.info("snapshot %s is exported; unexporting it to delete it", snap.ref)
                api.snapshot_unexport(snap.ref, None)
                deleted = api.snapshot_delete(snap.ref)
        log.info("snapshot %s (%s) deleted", snapshot.uuid or snap.name, snap.ref)
        return deleted

    # ---- VM snapshots ---------------------------------------------------------------------

    def vm_can_handle(
        self, request: strategies_pb2.CanHandleVMSnapshotRequest
    ) -> strategies_pb2.CanHandleResponse:
        if request.with_memory:
            return strategies_pb2.CanHandleResponse(
                priority=CANT_HANDLE, reason="StorPool cannot take memory snapshots"
            )
        if not request.volume_paths:
            return strategies_pb2.CanHandleResponse(priority=CANT_HANDLE, reason="no volumes")
        for path in request.volume_paths:
            if names.ref_or_none(path) is None or not any(
                objects.find_volume(self.pools.api(pool), path=path) for pool in self.pools.all()
            ):
                return strategies_pb2.CanHandleResponse(
                    priority=CANT_HANDLE, reason=f"volume {path} is not on a StorPool pool"
                )
        return strategies_pb2.CanHandleResponse(
            priority=HIGHEST, reason="every volume is on StorPool"
        )

    def vm_take(self, request: strategies_pb2.TakeVMSnapshotRequest) -> strategies_pb2.VMSnapshot:
        pool = self.pools.get(request.pool.pool_uuid)
        api = self.pools.api(pool)
        wanted = []
        for ref in request.volumes:
            volume = objects.require_volume(
                api, types_pb2.Volume(path=ref.volume_path), "volumes.volume_path"
            )
            wanted.append(
                (ref, volume, names.vm_snapshot_name(request.vm_snapshot_uuid, ref.volume_uuid))
            )
        with self.locks.hold(
            "TakeVMSnapshot",
            vm_snapshot=holds.vm_snapshot(request.vm_snapshot_uuid),
            volumes=[holds.storpool_object(v.global_id) for _, v, _ in wanted],
        ):
            # StorPool's group snapshot is all or nothing, so what exists is one earlier take
            existing = sorted(
                s.name
                for s in api.snapshots()
                if s.tags.get("uuid") == request.vm_snapshot_uuid
                and s.tags.get("cs") == names.CS_GROUP
                and not s.deleted
            )
            if existing and existing != sorted(name for _, _, name in wanted):
                # never delete what exists: those snapshots may be all that is left of the VM
                raise errors.AlreadyExists(
                    f"VM snapshot {request.vm_snapshot_uuid} already exists with other volumes "
                    f"({', '.join(existing)}); use another vm_snapshot_uuid"
                )
            if not existing:
                api.group_snapshot(
                    [(v.ref, name) for _, v, name in wanted],
                    tags={
                        "uuid": request.vm_snapshot_uuid,
                        "cs": names.CS_GROUP,
                        "cvm": names.tag_value(request.vm_uuid, "vm_uuid"),
                    },
                )
            reply = strategies_pb2.VMSnapshot(
                vm_snapshot_uuid=request.vm_snapshot_uuid, vm_uuid=request.vm_uuid
            )
            for ref, _, name in wanted:
                snap = api.snapshot(name)
                reply.volumes.add(
                    volume_uuid=ref.volume_uuid,
                    volume_path=ref.volume_path,
                    snapshot_path=names.byid_path(snap.global_id),
                    size_bytes=snap.size,
                )
        log.info(
            "VM snapshot %s of %s: %d volumes",
            request.vm_snapshot_uuid,
            request.vm_uuid,
            len(wanted),
        )
        return reply

    def vm_revert(self, request: strategies_pb2.RevertVMSnapshotRequest) -> None:
        if request.vm_running:
            raise errors.FailedPrecondition(
                f"VM {request.vm_uuid} is running; stop it before reverting to VM snapshot "
                f"{request.vm_snapshot_uuid}"
            )
        pool = self.pools.get(request.pool.pool_uuid)
        api = self.pools.api(pool)
        pairs = []
        for ref in request.volumes:
            pairs.append(
                (
                    objects.require_volume(
                        api, types_pb2.Volume(path=ref.volume_path), "volumes.volume_path"
                    ),
                    objects.require_snapshot(
                        api, types_pb2.Snapshot(path=ref.snapshot_path), "volumes.snapshot_path"
                    ),
                    ref.max_iops,
                )
            )
        with self.locks.hold(
            "RevertVMSnapshot",
            vm_snapshot=holds.vm_snapshot(request.vm_snapshot_uuid),
            volumes=[holds.storpool_object(volume.global_id) for volume, _, _ in pairs],
            snapshots=[holds.storpool_object(snap.global_id) for _, snap, _ in pairs],
        ):
            for volume, snap, iops in pairs:
                api.detach_all(volume.ref, snapshot=False)
                api.volume_revert(volume.ref, snap.ref)
                if iops or volume.iops:
                    api.volume_update(volume.ref, iops=iops or volume.iops)

    def vm_delete(self, request: strategies_pb2.DeleteVMSnapshotRequest) -> int:
        pool = self.pools.get(request.pool.pool_uuid)
        api = self.pools.api(pool)
        found = []
        for ref in request.volumes:
            snap = api.snapshot_or_none(names.api_ref(ref.snapshot_path, "volumes.snapshot_path"))
            if snap is not None:
                found.append(snap)
        deleted = 0
        with self.locks.hold(
            "DeleteVMSnapshot",
            vm_snapshot=holds.vm_snapshot(request.vm_snapshot_uuid),
            snapshots=[holds.storpool_object(snap.global_id) for snap in found],
        ):
            for snap in found:
                # a snapshot with children (a reverted volume) is only marked deleted: a replay
                # must not count it again
                if api.snapshot_delete(snap.ref):
                    deleted += 1
        return deleted
