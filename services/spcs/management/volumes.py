"""Volumes on a StorPool pool: create, clone, delete, resize, revert, access, tags, migration.

Every mutation holds the volume's try-lock (a second one on the same volume is ABORTED at
once) and is idempotent by the CloudStack uuid: StorPool names are derived from it, so a
replayed create meets `objectExists` and is checked, not duplicated.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from spcs.common import errors, holds, secrets, validate
from spcs.common.locks import Locks
from spcs.common.secrets import Passphrase
from spcs.management import encryption, objects
from spcs.management.nodecalls import NodeCalls
from spcs.management.pools import Pools
from spcs.management.state import PoolRecord
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolSnapshot, StorPoolVolume
from spcs.storpool.space import VolumeSpace
from spcs.v1 import driver_pb2, node_pb2, types_pb2

log = logging.getLogger(__name__)

UNLIMITED = "-"


def volume_key(volume: types_pb2.Volume) -> str:
    """The key that serializes creating the volume of one CloudStack uuid."""
    return holds.new_object("volume", volume.uuid or volume.path)


def limits(volume: types_pb2.Volume) -> dict[str, Any]:
    """iops/bw for a create: absent when 0 (no limit)."""
    out: dict[str, Any] = {}
    if volume.max_iops:
        out["iops"] = volume.max_iops
    if volume.max_bandwidth_bytes_per_second:
        out["bw"] = names.bandwidth_to_storpool(volume.max_bandwidth_bytes_per_second)
    return out


def placement(pool: PoolRecord, volume: types_pb2.Volume) -> tuple[str, dict[str, str]]:
    """StorPool template and extra tags: the QoS class wins over the offering's template."""
    if volume.qos_class:
        return pool.template, {"qc": names.tag_value(volume.qos_class, "qos_class")}
    return volume.sp_template or pool.template, {}


# How old the cached cluster space (VolumesSpace) may be for GetVolumeStats.
STATS_SECONDS = 30.0


class Volumes:
    def __init__(
        self,
        pools: Pools,
        nodes: NodeCalls,
        locks: Locks,
        stats_seconds: float = STATS_SECONDS,
    ) -> None:
        self.pools = pools
        self.nodes = nodes
        self.locks = locks
        self.stats_seconds = stats_seconds

    def _tags(self, pool: PoolRecord, volume: types_pb2.Volume) -> tuple[str, dict[str, str]]:
        template, extra = placement(pool, volume)
        for field in ("vm_uuid", "vc_policy"):  # named as the caller sent them, not as tags
            names.tag_value(getattr(volume, field), f"volume.{field}")
        device = volume.device_id if volume.HasField("device_id") else None
        tags = names.volume_tags(
            volume.uuid,
            vm_uuid=volume.vm_uuid,
            vc_policy=volume.vc_policy,
            qos_class=volume.qos_class,
            device_id=device,
        )
        tags.update(extra)
        return template, tags

    def _created(
        self, api: StorPoolClient, name: str, volume: types_pb2.Volume, size: int, parent: str = ""
    ) -> StorPoolVolume:
        """After `objectExists`: the existing volume, if it is the one asked for."""
        existing = api.volume(name)
        if existing.size < size or (
            parent and existing.parent not in (parent, "") and f"~{existing.parent}" != parent
        ):
            raise errors.AlreadyExists(
                f"volume {volume.uuid} already exists as {existing.ref} with size "
                f"{existing.size}{f' from {existing.parent}' if existing.parent else ''}, "
                f"not {size}; resize it, or use another uuid"
            )
        return existing

    def create(
        self, pool_uuid: str, volume: types_pb2.Volume, host_id: str = ""
    ) -> types_pb2.Volume:
        """A new empty volume; an encrypted one is created a LUKS header larger, tagged as
        being filled, formatted by a node, then untagged (a replay formats it again while the
        tag is there; a volume this call made and could not format is deleted)."""
        pool = self.pools.usable(pool_uuid)
        api = self.pools.api(pool)
        template, tags = self._tags(pool, volume)
        key = encryption.take_key(volume, "volume")
        luks = encryption.encrypted(volume)
        size = volume.size_bytes
        if luks:
            encryption.require(key, "volume", f"volume {volume.uuid}")
            size = encryption.storpool_size(size)
            tags.update(encryption.TAGS)
            tags[names.FILLING_TAG] = "format"
        name = names.volume_name(volume.uuid)
        with secrets.held(key), self.locks.hold("CreateVolume", volume=volume_key(volume)):
            gid, created, filling = self._create_or_replay(api, name, volume, size, template, tags)
            if luks and filling and key is not None:
                try:
                    self._format(pool, gid, key, host_id)
                except errors.SpcsError:
                    if created:
                        api.volume_delete(f"~{gid}")
                    raise
                api.volume_update(f"~{gid}", tags={names.FILLING_TAG: ""})
        # The reply is what StorPool was told, the same for a replay: no read-back, which is
        # one API round trip less per create.
        reply = types_pb2.Volume()
        reply.CopyFrom(volume)
        reply.path, reply.global_id, reply.sp_template = names.byid_path(gid), gid, template
        reply.store.primary.pool_uuid, reply.format = pool.uuid, types_pb2.IMAGE_FORMAT_RAW
        return reply

    def _create_or_replay(
        self,
        api: StorPoolClient,
        name: str,
        volume: types_pb2.Volume,
        size: int,
        template: str,
        tags: dict[str, str],
    ) -> tuple[str, bool, bool]:
        """(global id, created by this call, still being filled)."""
        try:
            gid = api.volume_create(
                name=name, size=size, template=template, tags=tags, **limits(volume)
            )
        except errors.AlreadyExists:
            # a replay: the volume must be the one asked for (size, placement, limits)
            obj = api.volume(name)
            wanted = limits(volume)
            have = (obj.size, obj.template, obj.iops, obj.bw)
            asked = (size, template, wanted.get("iops"), wanted.get("bw"))
            if have != asked:
                raise errors.AlreadyExists(
                    f"volume {volume.uuid} already exists as {obj.ref} with (size, template, "
                    f"iops, bw) {have}, not {asked}; resize it or change its offering, or "
                    "use another uuid"
                ) from None
            return obj.global_id, False, bool(obj.tags.get(names.FILLING_TAG))
        log.info("volume %s is ~%s (%d bytes, template %s)", volume.uuid, gid, size, template)
        return gid, True, True

    def _format(self, pool: PoolRecord, gid: str, key: Passphrase, host_id: str) -> None:
        """Have a node write the LUKS header (the preferred host, else any that answers)."""
        path = names.byid_path(gid)
        request = node_pb2.FormatVolumeRequest(
            volume_path=path, encryption=encryption.for_node(key)
        )
        failure: errors.SpcsError | None = None
        try:
            for node in self.nodes.candidates(pool, host_id):
                try:
                    self.nodes.command(
                        node.host_id, f"format {path}", lambda s: s.FormatVolume, request
                    )
                    return
                except (errors.Unavailable, errors.ResourceExhausted) as error:
                    failure = error
        finally:
            request.encryption.ClearField("passphrase")
        assert failure is not None  # candidates() is never empty
        raise failure

    def clone(
        self, pool: PoolRecord, volume: types_pb2.Volume, parent: StorPoolSnapshot
    ) -> StorPoolVolume:
        """An instant copy-on-write volume from a snapshot (no bytes copied). The caller (a copy
        job) holds the volume's lock; its request contract checked the volume's uuid."""
        validate.size_at_most_max(volume.size_bytes, "destination.volume.size_bytes")
        api = self.pools.api(pool)
        template, tags = self._tags(pool, volume)
        size = max(volume.size_bytes, parent.size)
        if names.is_encrypted(parent.tags):
            # the clone holds the parent's LUKS header: the guest's size is past it
            size = max(encryption.storpool_size(volume.size_bytes), parent.size)
            tags.update(encryption.TAGS)
        name = names.volume_name(volume.uuid)
        try:
            gid = api.volume_create(
                name=name,
                size=size,
                parent=parent.ref,
                template=template,
                tags=tags,
                **limits(volume),
            )
            return api.volume(f"~{gid}")
        except errors.AlreadyExists:
            return self._created(api, name, volume, size, parent.name)

    def create_for_copy(
        self,
        pool: PoolRecord,
        volume: types_pb2.Volume,
        size: int,
        operation_id: str,
        *,
        encrypted: bool = False,
    ) -> tuple[StorPoolVolume, bool]:
        """An empty volume that a node will fill (volume from secondary storage), tagged as
        being filled by `operation_id`; (volume, whether this call created it). A volume of
        that uuid that exists already is used as it is. The caller (a copy job) holds it."""
        validate.size(size, "size")
        api = self.pools.api(pool)
        template, tags = self._tags(pool, volume)
        tags[names.FILLING_TAG] = operation_id
        if encrypted:
            tags.update(encryption.TAGS)
        name = names.volume_name(volume.uuid)
        try:
            gid = api.volume_create(
                name=name, size=size, template=template, tags=tags, **limits(volume)
            )
            return api.volume(f"~{gid}"), True
        except errors.AlreadyExists:
            return self._created(api, name, volume, size), False

    def delete(
        self, pool: PoolRecord, volume: types_pb2.Volume
    ) -> tuple[bool, StorPoolSnapshot | None]:
        """(deleted, the delay-delete backup). With the pool's `storpool.delete.after.interval`
        set, a snapshot StorPool deletes by itself after that many seconds is taken first; a
        replay (the volume already gone) reports the backup the first attempt took."""
        api = self.pools.api(pool)
        obj = objects.find_volume(api, path=volume.path, uuid=volume.uuid)
        if obj is None:
            return False, self._backup_of(api, pool, volume)
        with self.locks.hold("DeleteVolume", volume=holds.storpool_object(obj.global_id)):
            backup = None
            # as the Java plugin: no delay-delete backup of an encrypted volume
            if pool.delete_after and not encryption.encrypted(volume, obj):
                backup = self._delay_delete_backup(api, pool, obj, volume)
            deleted = api.volume_delete(obj.ref)
        log.info(
            "volume %s (%s) deleted%s",
            volume.uuid or obj.name,
            obj.ref,
            f"; backup {backup.name} ({backup.ref}) until StorPool deletes it" if backup else "",
        )
        return deleted, backup

    def _delay_delete_backup(
        self, api: StorPoolClient, pool: PoolRecord, obj: StorPoolVolume, volume: types_pb2.Volume
    ) -> StorPoolSnapshot:
        name = names.delay_delete_name(obj.global_id)
        existing = api.snapshot_or_none(name)
        if existing is not None and not existing.deleted:
            return existing  # a retry: the first attempt took it
        tags = {
            "cs": names.CS_DELAY_DELETE,
            "uuid": obj.tags.get("uuid") or names.tag_value(volume.uuid, "volume.uuid"),
        }
        if obj.tags.get("cvm"):
            tags["cvm"] = obj.tags["cvm"]
        # AlreadyExists: a retried call whose first attempt StorPool had done
        with contextlib.suppress(errors.AlreadyExists):
            api.snapshot_create(obj.ref, name=name, tags=tags, delete_after=pool.delete_after)
        return api.snapshot(name)

    @staticmethod
    def _backup_of(
        api: StorPoolClient, pool: PoolRecord, volume: types_pb2.Volume
    ) -> StorPoolSnapshot | None:
        """The delay-delete backup of a volume that is gone: by the name its global id gives,
        else by its uuid tag in the pool's template."""
        gid = names.global_id_of(names.ref_or_none(volume.path) or "") if volume.path else None
        if gid is not None:
            found = api.snapshot_or_none(names.delay_delete_name(gid))
            return found if found is not None and not found.deleted else None
        if not volume.uuid or not pool.delete_after:
            return None
        for snap in api.snapshots():
            if (
                snap.tags.get("cs") == names.CS_DELAY_DELETE
                and snap.tags.get("uuid") == volume.uuid
                and snap.template == pool.template
                and not snap.deleted
            ):
                return snap
        return None

    # ---- size and data ------------------------------------------------------------------

    def resize(self, request: driver_pb2.ResizeVolumeRequest) -> types_pb2.Volume:
        if request.host_id and not request.vm_name:
            raise errors.InvalidArgument("vm_name is required with host_id (to notify the VM)")
        pool = self.pools.get(request.pool.pool_uuid)
        api = self.pools.api(pool)
        volume = request.volume
        obj = objects.require_volume(api, volume)
        with self.locks.hold("ResizeVolume", volume=holds.storpool_object(obj.global_id)):
            # sizes are the guest's; an encrypted volume keeps its LUKS header before them
            luks = encryption.encrypted(volume, obj)
            header = encryption.storpool_size(0) if luks else 0
            new = request.new_size_bytes
            if new < obj.size - header and not request.shrink_ok:
                raise errors.OutOfRange(
                    f"volume {obj.ref} is {obj.size - header} bytes; shrinking it to {new} loses "
                    "the data past the new end and needs shrink_ok"
                )
            changes: dict[str, Any] = {
                "size": new + header,
                "shrinkOk": True if new + header < obj.size else None,
                "iops": volume.max_iops or UNLIMITED,
            }
            if volume.qos_class or volume.sp_template:
                template, extra = placement(pool, volume)
                changes["template"] = template
                changes["tags"] = extra or None
            api.volume_update(obj.ref, **changes)
            if request.host_id and new + header != obj.size:
                self._notify_or_roll_back(api, obj, request)
            return objects.volume_message(api.volume(obj.ref), pool.uuid, volume.uuid)

    def _notify_or_roll_back(
        self, api: StorPoolClient, obj: StorPoolVolume, request: driver_pb2.ResizeVolumeRequest
    ) -> None:
        notify = node_pb2.ResizeNotifyRequest(
            vm_name=request.vm_name,
            path=names.byid_path(obj.global_id),
            new_size_bytes=request.new_size_bytes,
        )
        try:
            self.nodes.command(request.host_id, "ResizeNotify", lambda s: s.ResizeNotify, notify)
        except errors.SpcsError as error:
            api.volume_update(
                obj.ref, size=obj.size, shrinkOk=True, iops=obj.iops if obj.iops else UNLIMITED
            )
            log.warning(
                "resize of %s rolled back to %d bytes: %s", obj.ref, obj.size, error.message
            )
            raise type(error)(
                f"{error.message}; the volume was rolled back to {obj.size} bytes"
            ) from None

    def revert(self, request: driver_pb2.RevertSnapshotRequest) -> types_pb2.Volume:
        pool = self.pools.get(request.pool.pool_uuid)
        api = self.pools.api(pool)
        volume = objects.require_volume(api, request.volume)
        snapshot = objects.require_snapshot(api, request.snapshot)
        with self.locks.hold(
            "RevertSnapshot",
            volume=holds.storpool_object(volume.global_id),
            snapshot=holds.storpool_object(snapshot.global_id),
        ):
            iops = request.volume.max_iops or volume.iops
            bw = (
                names.bandwidth_to_storpool(request.volume.max_bandwidth_bytes_per_second)
                if request.volume.max_bandwidth_bytes_per_second
                else volume.bw
            )
            # no host may keep the device while its data is replaced
            api.detach_all(volume.ref, snapshot=False)
            api.volume_revert(volume.ref, snapshot.ref)
            if iops or bw:
                api.volume_update(volume.ref, iops=iops or None, bw=bw or None)
            log.info("volume %s reverted to %s", volume.ref, snapshot.ref)
            return objects.volume_message(api.volume(volume.ref), pool.uuid, request.volume.uuid)

    # ---- access and tags -----------------------------------------------------------------

    def grant(self, request: driver_pb2.GrantAccessRequest) -> str:
        path, kind = self._disk(request.object)
        disk = self.nodes.adaptor(
            request.host_id,
            f"attach {path}",
            lambda s: s.ConnectPhysicalDisk,
            node_pb2.ConnectPhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=path, kind=kind), mode=request.mode
            ),
        )
        return disk.path

    def revoke(self, request: driver_pb2.RevokeAccessRequest) -> bool:
        path, kind = self._disk(request.object)
        pool = None
        if request.clear_vm_tags and kind == node_pb2.DISK_KIND_VOLUME:
            # checked before detaching: an invalid request must change nothing
            validate.require(request, "object.volume.store.primary.pool_uuid")
            pool = self.pools.get(request.object.volume.store.primary.pool_uuid)
        reply = self.nodes.adaptor(
            request.host_id,
            f"detach {path}",
            lambda s: s.DisconnectPhysicalDisk,
            node_pb2.DisconnectPhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=path, kind=kind), force_allowed=request.force
            ),
        )
        if pool is not None:
            self.pools.api(pool).volume_update(
                names.api_ref(path, "object.volume.path"),
                tags={"cvm": "", "disk": "", "vc-policy": ""},
            )
        return reply.detached

    @staticmethod
    def _disk(obj: types_pb2.DataObject) -> tuple[str, node_pb2.DiskKind.ValueType]:
        kind = obj.WhichOneof("object")
        if kind == "volume" and obj.volume.path:
            return obj.volume.path, node_pb2.DISK_KIND_VOLUME
        if kind == "snapshot" and obj.snapshot.path:
            return obj.snapshot.path, node_pb2.DISK_KIND_SNAPSHOT
        raise errors.InvalidArgument("object must be a volume or a snapshot with its path")

    def detach_all(self, pool_uuid: str, volume_path: str) -> list[int]:
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        obj = objects.require_volume(api, types_pb2.Volume(path=volume_path), "volume_path")
        clients = sorted(
            {
                a.client
                for a in api.attachments()
                if not a.snapshot
                and (a.global_id == obj.global_id or a.volume in (obj.name, obj.ref))
            }
        )
        api.detach_all(obj.ref, snapshot=False)
        if clients:
            log.info("volume %s force-detached from clients %s", obj.ref, clients)
        return clients

    def provide_vm_info(self, pool_uuid: str, volume: types_pb2.Volume) -> None:
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        tags = {"cvm": names.tag_value(volume.vm_uuid, "vm_uuid")}
        if volume.HasField("device_id"):
            tags["disk"] = str(volume.device_id)
        if volume.vc_policy:
            tags["vc-policy"] = names.tag_value(volume.vc_policy, "vc_policy")
        obj = objects.require_volume(api, volume)
        with self.locks.hold("ProvideVmInfo", volume=holds.storpool_object(obj.global_id)):
            api.volume_update(obj.ref, tags=tags)

    def provide_vm_tags(self, request: driver_pb2.ProvideVmTagsRequest) -> int:
        if request.key != "vc-policy":
            raise errors.InvalidArgument(
                f"key {request.key!r}: this VM tag is not propagated to StorPool; only vc-policy is"
            )
        value = names.tag_value(request.value, "value")
        pool = self.pools.get(request.pool.pool_uuid)
        api = self.pools.api(pool)
        for path in request.volume_paths:
            api.volume_update(names.api_ref(path, "volume_paths"), tags={"vc-policy": value})
        return len(request.volume_paths)

    def change_offering(self, pool_uuid: str, volume: types_pb2.Volume) -> types_pb2.Volume:
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        obj = objects.require_volume(api, volume)
        with self.locks.hold("ChangeVolumeOffering", volume=holds.storpool_object(obj.global_id)):
            template, extra = placement(pool, volume)
            bw = volume.max_bandwidth_bytes_per_second
            api.volume_update(
                obj.ref,
                template=template if template != obj.template else None,
                tags=extra or None,
                iops=volume.max_iops or UNLIMITED,
                bw=names.bandwidth_to_storpool(bw) if bw else UNLIMITED,
            )
            return objects.volume_message(api.volume(obj.ref), pool.uuid, volume.uuid)

    # StorPool has no per-volume space call: VolumesSpace answers for the whole cluster. Each
    # endpoint's answer is cached (`StorPoolApi.space`, single-flight refresh), so a stats cycle
    # over N volumes costs O(1) VolumesSpace calls, not N.

    def stats(self, pool_uuid: str, volume_path: str) -> tuple[int, int]:
        """(size, used) of one volume: no StorPool call while the endpoint's space answer is
        younger than `stats_seconds`, else one VolumesSpace for the whole cluster. A volume
        that answer does not know (created since) costs one small `Volume/<ref>` call; its
        used bytes are 0 until the next refresh."""
        pool = self.pools.get(pool_uuid)
        ref = names.api_ref(volume_path, "volume_path")
        api = self.pools.api(pool)
        view = api.space.view(self.stats_seconds)
        row = view.find(ref)
        if row is None:
            obj = objects.require_volume(api, types_pb2.Volume(path=volume_path), "volume_path")
            row = VolumeSpace(obj.name, obj.global_id, obj.template, obj.size, 0)
            view.add(row)
        return row.size, row.used

    def stats_many(self, pool_uuid: str, volume_paths: list[str]) -> list[driver_pb2.VolumeStats]:
        """Many volumes from one VolumesSpace answer that arrived during this call (or joined
        the fetch already running); no paths: every volume of the pool's template."""
        pool = self.pools.get(pool_uuid)
        refs = [names.api_ref(path, f"volume_paths[{i}]") for i, path in enumerate(volume_paths)]
        view = self.pools.api(pool).space.view(0)
        if not volume_paths:
            rows = sorted(
                (r for r in view.rows() if r.template == pool.template), key=lambda r: r.global_id
            )
            return [_volume_stats(names.byid_path(r.global_id), r) for r in rows]
        return [
            _volume_stats(path, view.find(ref))
            for path, ref in zip(volume_paths, refs, strict=True)
        ]

    def template_cache_usage(self, pool_uuid: str) -> driver_pb2.TemplateCacheUsage:
        """The pool's cached templates (their `cs=template` snapshots), from one SnapshotsSpace."""
        pool = self.pools.get(pool_uuid)
        rows = [
            r
            for r in self.pools.api(pool).snapshots_space()
            if r.template == pool.template and r.cs == names.CS_TEMPLATE
        ]
        return driver_pb2.TemplateCacheUsage(
            templates=len(rows),
            size_bytes=sum(r.size for r in rows),
            used_bytes=sum(r.used for r in rows),
        )

    # ---- migration between StorPool pools --------------------------------------------------

    def migrate(
        self, source_uuid: str, volume: types_pb2.Volume, destination_uuid: str, vm_running: bool
    ) -> types_pb2.Volume:
        source = self.pools.get(source_uuid)
        destination = self.pools.usable(destination_uuid)
        self.check_same_cluster(source, destination)
        obj = objects.require_volume(self.pools.api(source), volume)
        with self.locks.hold("MigrateVolume", volume=holds.storpool_object(obj.global_id)):
            return self.migrate_locked(source, volume, destination, vm_running)

    @staticmethod
    def check_same_cluster(source: PoolRecord, destination: PoolRecord) -> None:
        # the copy addresses the source by global id through one API endpoint
        if source.conn.endpoint != destination.conn.endpoint:
            raise errors.FailedPrecondition(
                f"pools {source.name} and {destination.name} are on different StorPool API "
                "endpoints; migrate through secondary storage (copy the volume out and in)"
            )

    def migrate_locked(
        self,
        source: PoolRecord,
        volume: types_pb2.Volume,
        destination: PoolRecord,
        vm_running: bool,
    ) -> types_pb2.Volume:
        """Migration for a caller (a copy job) that holds the volume's lock."""
        api = self.pools.api(source)
        obj = objects.require_volume(api, volume)
        uuid = volume.uuid or obj.tags.get("uuid", "")
        if vm_running:
            # the running VM keeps its device; StorPool moves the data in the background
            api.volume_update(obj.ref, template=destination.template)
            return objects.volume_message(api.volume(obj.ref), destination.uuid, uuid)
        name = names.migrated_volume_name(uuid or obj.global_id, destination.uuid)
        try:
            gid = api.volume_create(
                name=name,
                base_on=obj.ref,
                template=destination.template,
                iops=obj.iops,
                bw=obj.bw,
                tags=obj.tags or None,
            )
            copy = api.volume(f"~{gid}")
        except errors.AlreadyExists:
            copy = api.volume(name)
        log.info("volume %s copied to pool %s as %s", obj.ref, destination.name, copy.ref)
        return objects.volume_message(copy, destination.uuid, uuid)


def _volume_stats(path: str, row: VolumeSpace | None) -> driver_pb2.VolumeStats:
    if row is None:
        return driver_pb2.VolumeStats(volume_path=path, found=False)
    return driver_pb2.VolumeStats(
        volume_path=path,
        found=True,
        size_bytes=row.size,
        used_bytes=row.used,
        max_iops=row.iops or 0,
        max_bandwidth_bytes_per_second=names.bandwidth_from_storpool(row.bw),
    )
