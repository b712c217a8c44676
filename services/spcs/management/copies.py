"""CanCopy / CopyData: every copy the driver handles, each a long-running operation.

The combination of (source kind, source store, destination kind, destination store) selects a
copy; CanCopy answers true for exactly these. Copies StorPool does itself (clones, migrations)
move no bytes; the others run as a job on a node, followed from here.

On secondary storage a destination's `path` is the directory to write into (CloudStack's
`snapshots/<account>/<volume>`, `volumes/<account>/<volume>`, `template/tmpl/<account>/<id>`);
the file is named after the object's uuid, and the result carries the file's path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from google.longrunning import operations_pb2

from spcs.common import errors, validate
from spcs.common.operations import JobContext, OperationRegistry, fingerprint
from spcs.management import objects
from spcs.management.nodecalls import NodeCalls, node_operation_id
from spcs.management.pools import PoolRecord, Pools
from spcs.management.snapshots import Snapshots, snapshot_key
from spcs.management.templates import TemplateCache
from spcs.management.volumes import Volumes, volume_key
from spcs.storpool import names
from spcs.storpool.api import Volume
from spcs.v1 import driver_pb2, node_pb2, strategies_pb2, types_pb2

log = logging.getLogger(__name__)

KIND = "spcs.v1.PrimaryDataStoreDriver/CopyData"
# (source object, source store, destination object, destination store) → copy
COPIES: dict[tuple[str, str, str, str], str] = {
    ("template", "secondary", "template", "primary"): "template-to-primary",
    ("template", "primary", "volume", "primary"): "template-to-volume",
    ("template", "secondary", "volume", "primary"): "template-to-volume",
    ("snapshot", "primary", "snapshot", "secondary"): "snapshot-to-secondary",
    ("snapshot", "primary", "volume", "primary"): "snapshot-to-volume",
    ("snapshot", "secondary", "volume", "primary"): "secondary-snapshot-to-volume",
    ("snapshot", "primary", "template", "secondary"): "snapshot-to-template",
    ("volume", "primary", "template", "secondary"): "volume-to-template",
    ("volume", "primary", "volume", "secondary"): "volume-to-secondary",
    ("volume", "secondary", "volume", "primary"): "volume-from-secondary",
    ("volume", "primary", "volume", "primary"): "volume-to-pool",
}


FORMAT_NAMES = {types_pb2.IMAGE_FORMAT_RAW: "raw", types_pb2.IMAGE_FORMAT_QCOW2: "qcow2"}


def _part(obj: types_pb2.DataObject) -> tuple[str, object]:
    kind = obj.WhichOneof("object")
    if kind is None:
        raise errors.InvalidArgument("a data object (volume, snapshot or template) is required")
    return kind, getattr(obj, kind)


def _store(inner) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """('primary', pool uuid) or ('secondary', url)."""
    which = inner.store.WhichOneof("store")
    if which == "primary":
        return which, inner.store.primary.pool_uuid
    if which == "secondary":
        return which, inner.store.secondary.url
    raise errors.InvalidArgument("every object of a copy needs its store (primary or secondary)")


def classify(source: types_pb2.DataObject, destination: types_pb2.DataObject) -> str | None:
    s_kind, s_inner = _part(source)
    d_kind, d_inner = _part(destination)
    s_store, s_where = _store(s_inner)
    d_store, d_where = _store(d_inner)
    copy = COPIES.get((s_kind, s_store, d_kind, d_store))
    if copy == "volume-to-pool" and s_where == d_where:
        return None  # a copy within one pool is not a CloudStack operation
    return copy


class Copies:
    def __init__(
        self,
        pools: Pools,
        nodes: NodeCalls,
        volumes: Volumes,
        snapshots: Snapshots,
        templates: TemplateCache,
        registry: OperationRegistry,
    ) -> None:
        self.pools = pools
        self.nodes = nodes
        self.volumes = volumes
        self.snapshots = snapshots
        self.templates = templates
        self.registry = registry

    def can_copy(self, request: driver_pb2.CanCopyRequest) -> driver_pb2.CanCopyResponse:
        validate.require(request, "source", "destination")
        copy = classify(request.source, request.destination)
        for obj in (request.source, request.destination):
            _, inner = _part(obj)
            store, where = _store(inner)
            if store == "primary" and self.pools.find(where) is None:
                return driver_pb2.CanCopyResponse(
                    can_copy=False, reason=f"pool {where} is not a pool of this service"
                )
        if copy is None:
            return driver_pb2.CanCopyResponse(can_copy=False, reason=self._unsupported(request))
        return driver_pb2.CanCopyResponse(can_copy=True, reason=copy)

    @staticmethod
    def _unsupported(request: driver_pb2.CanCopyRequest | driver_pb2.CopyDataRequest) -> str:
        s_kind, s_inner = _part(request.source)
        d_kind, d_inner = _part(request.destination)
        return (
            f"copying a {s_kind} on {_store(s_inner)[0]} storage to a {d_kind} on "
            f"{_store(d_inner)[0]} storage is not handled by spcs"
        )

    def start(self, request: driver_pb2.CopyDataRequest) -> operations_pb2.Operation:
        validate.require(request, "operation_id", "source", "destination")
        copy = classify(request.source, request.destination)
        if copy is None:
            raise errors.InvalidArgument(self._unsupported(request) + " (CanCopy answers false)")
        runner: Callable[[JobContext, driver_pb2.CopyDataRequest], types_pb2.DataObject] = getattr(
            self, "_" + copy.replace("-", "_")
        )
        key = self._key(request.destination)
        keys = (key, *self._source_keys(request.source))
        written: dict[str, object] = {}

        def run(ctx: JobContext) -> driver_pb2.CopyDataResult:
            result = runner(ctx, request, written)  # type: ignore[call-arg]
            return driver_pb2.CopyDataResult(
                result=result,
                kind=copy,
                bytes_written=int(written.get("bytes", 0)),
                host_id=str(written.get("host", "")),
            )

        args = driver_pb2.CopyDataRequest()
        args.CopyFrom(request)
        args.ClearField("operation_id")
        self._check_pools(copy, request)
        return self.registry.start(
            request.operation_id,
            kind=KIND,
            fingerprint=fingerprint(args),
            target=f"{copy} {key}",
            runner=run,
            lock_keys=keys,
        )

    def _source_keys(self, source: types_pb2.DataObject) -> tuple[str, ...]:
        """A StorPool source is locked while it is read (no resize, revert or delete meanwhile);
        resolving it here also makes a missing source fail the call, not the job."""
        kind, inner = _part(source)
        store, where = _store(inner)
        if store != "primary" or (kind == "template" and not inner.path):
            return ()
        api = self.pools.api(self.pools.get(where))
        if kind == "volume":
            return (objects.object_key(objects.require_volume(api, inner)),)
        if kind == "snapshot":
            return (objects.object_key(objects.require_snapshot(api, inner)),)
        snap = api.snapshot_or_none(names.api_ref(inner.path))
        if snap is None:
            raise errors.NotFound(f"cached template {inner.path} does not exist in pool {where}")
        return (objects.object_key(snap),)

    def backup_keys(self, request: strategies_pb2.BackupSnapshotRequest) -> tuple[str, ...]:
        pool = self.pools.get(request.pool.pool_uuid)
        snap = objects.require_snapshot(self.pools.api(pool), request.snapshot)
        return (objects.object_key(snap),)

    def _check_pools(self, copy: str, request: driver_pb2.CopyDataRequest) -> None:
        """Unknown pools fail the call itself, not the job."""
        for obj in (request.source, request.destination):
            _, inner = _part(obj)
            store, where = _store(inner)
            if store == "primary":
                self.pools.get(where)

    @staticmethod
    def _key(destination: types_pb2.DataObject) -> str:
        kind, inner = _part(destination)
        if kind == "volume":
            return volume_key(inner)
        if kind == "snapshot":
            return snapshot_key(inner)
        return f"template:{inner.uuid or inner.path}@{_store(inner)[1]}"

    # ---- secondary → StorPool -------------------------------------------------------------

    def _template_to_primary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        source, destination = request.source.template, request.destination.template
        pool = self.pools.usable(destination.store.primary.pool_uuid)
        snap, count, host = self.templates.ensure(ctx, pool, source, request.options.host_id)
        written.update(bytes=count, host=host)
        return types_pb2.DataObject(
            template=types_pb2.Template(
                uuid=destination.uuid or source.uuid,
                name=destination.name or source.name,
                id=destination.id or source.id,
                path=names.byid_path(snap.global_id),
                store=destination.store,
                format=types_pb2.IMAGE_FORMAT_RAW,
                size_bytes=snap.size,
                global_id=snap.global_id,
            )
        )

    def _template_to_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        source, volume = request.source.template, request.destination.volume
        pool = self.pools.usable(volume.store.primary.pool_uuid)
        if source.store.WhichOneof("store") == "primary" and source.path:
            snap = self.pools.api(pool).snapshot_or_none(names.api_ref(source.path))
            if snap is None:
                raise errors.NotFound(
                    f"cached template {source.path} does not exist in pool {pool.name}; copy "
                    "the template to primary storage again"
                )
        else:
            snap, count, host = self.templates.ensure(ctx, pool, source, request.options.host_id)
            written.update(bytes=count, host=host)
        ctx.stage("cloning")
        clone = self.volumes.clone(pool, volume, snap)
        return types_pb2.DataObject(volume=objects.volume_message(clone, pool.uuid, volume.uuid))

    def _download_into_new_volume(
        self,
        ctx: JobContext,
        request: driver_pb2.CopyDataRequest,
        source_url: str,
        source_path: str,
        source_format: int,
        size: int,
        written: dict,
    ) -> types_pb2.DataObject:
        volume = request.destination.volume
        pool = self.pools.usable(volume.store.primary.pool_uuid)
        validate.require(volume, "uuid")
        api = self.pools.api(pool)
        existing = api.volume_or_none(names.volume_name(volume.uuid))
        target = existing or self.volumes.create_for_copy(
            pool, volume, (max(size, volume.size_bytes, 512) + 511) // 512 * 512
        )
        try:
            node = self.nodes.pick(pool, request.options.host_id)
            result = self.nodes.run_job(
                ctx,
                node.host_id,
                "DownloadVolume",
                node_pb2.DownloadVolumeRequest(
                    operation_id=node_operation_id(ctx, "download", target.global_id),
                    source=types_pb2.SecondaryStore(url=source_url),
                    source_path=source_path,
                    source_format=source_format,
                    destination_path=names.byid_path(target.global_id),
                    resize_to_virtual_size=True,
                    target_is_zero=existing is None,
                ),
                node_pb2.DownloadResult(),
                "copying into StorPool",
            )
        except BaseException:
            # a half-written volume must not look like the result
            api.volume_delete(target.ref)
            raise
        written.update(bytes=result.bytes_written, host=node.host_id)
        return types_pb2.DataObject(
            volume=objects.volume_message(api.volume(target.ref), pool.uuid, volume.uuid)
        )

    def _secondary_snapshot_to_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        return self._file_into_new_volume(ctx, request, written)

    def _volume_from_secondary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        return self._file_into_new_volume(ctx, request, written)

    def _file_into_new_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        """A snapshot backup or a volume file on secondary storage, into a new volume."""
        _, source = _part(request.source)
        validate.require(source, "path")
        return self._download_into_new_volume(
            ctx,
            request,
            source.store.secondary.url,
            source.path,
            source.format,
            source.size_bytes,
            written,
        )

    # ---- within StorPool ------------------------------------------------------------------

    def _snapshot_to_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        source, volume = request.source.snapshot, request.destination.volume
        source_pool = self.pools.get(source.store.primary.pool_uuid)
        pool = self.pools.usable(volume.store.primary.pool_uuid)
        self.volumes.check_same_cluster(source_pool, pool)
        snap = objects.require_snapshot(self.pools.api(source_pool), source)
        ctx.stage("cloning")
        clone = self.volumes.clone(pool, volume, snap)
        return types_pb2.DataObject(volume=objects.volume_message(clone, pool.uuid, volume.uuid))

    def _volume_to_pool(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        source, destination = request.source.volume, request.destination.volume
        src_pool = self.pools.get(source.store.primary.pool_uuid)
        dst_pool = self.pools.usable(destination.store.primary.pool_uuid)
        self.volumes.check_same_cluster(src_pool, dst_pool)
        ctx.stage("migrating")
        moved = self.volumes.migrate_locked(src_pool, source, dst_pool, request.options.vm_running)
        return types_pb2.DataObject(volume=moved)

    # ---- StorPool → secondary -------------------------------------------------------------

    def _output_format(self, request: driver_pb2.CopyDataRequest) -> tuple[int, str]:
        fmt = request.options.format or types_pb2.IMAGE_FORMAT_QCOW2
        return fmt, FORMAT_NAMES[fmt]

    def backup_snapshot(
        self,
        ctx: JobContext,
        pool: PoolRecord,
        snap: Volume,
        uuid: str,
        url: str,
        file_path: str,
        fmt: int,
        compression: int,
        host_id: str,
        written: dict,
    ) -> types_pb2.Snapshot:
        # The snapshot is the caller's: a failed or cancelled backup leaves it as it was.
        node = self.nodes.pick(pool, host_id)
        result = self.nodes.run_job(
            ctx,
            node.host_id,
            "BackupSnapshot",
            node_pb2.NodeBackupSnapshotRequest(
                operation_id=node_operation_id(ctx, "backup", snap.global_id),
                snapshot_path=names.byid_path(snap.global_id),
                destination=types_pb2.SecondaryStore(url=url),
                destination_path=file_path,
                format=fmt,
                compression=compression,
            ),
            node_pb2.BackupResult(),
            "backing up the snapshot",
        )
        written.update(bytes=result.bytes_written, host=node.host_id)
        return types_pb2.Snapshot(
            uuid=uuid,
            path=result.path,
            store=types_pb2.DataStore(secondary=types_pb2.SecondaryStore(url=url)),
            format=result.format,
            size_bytes=result.virtual_size_bytes,
            physical_size_bytes=result.physical_size_bytes,
            global_id=snap.global_id,
        )

    def _snapshot_to_secondary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        source, destination = request.source.snapshot, request.destination.snapshot
        pool = self.pools.get(source.store.primary.pool_uuid)
        snap = objects.require_snapshot(self.pools.api(pool), source)
        if pool.bypass_secondary:
            # the pool keeps snapshots on primary only: the result stays the StorPool snapshot
            return types_pb2.DataObject(
                snapshot=objects.snapshot_message(snap, pool.uuid, destination.uuid or source.uuid)
            )
        validate.require(destination, "path")
        uuid = destination.uuid or source.uuid
        validate.identifier(uuid, "snapshot uuid")
        fmt, _ = self._output_format(request)
        backup = self.backup_snapshot(
            ctx,
            pool,
            snap,
            uuid,
            destination.store.secondary.url,
            f"{destination.path.rstrip('/')}/{uuid}",
            fmt,
            request.options.compression,
            request.options.host_id,
            written,
        )
        return types_pb2.DataObject(snapshot=backup)

    def run_backup_request(
        self, ctx: JobContext, request: strategies_pb2.BackupSnapshotRequest, written: dict
    ) -> driver_pb2.CopyDataResult:
        pool = self.pools.get(request.pool.pool_uuid)
        snap = objects.require_snapshot(self.pools.api(pool), request.snapshot)
        backup = self.backup_snapshot(
            ctx,
            pool,
            snap,
            request.snapshot.uuid,
            request.destination.url,
            request.destination_path,
            request.format or types_pb2.IMAGE_FORMAT_QCOW2,
            request.compression,
            "",
            written,
        )
        return driver_pb2.CopyDataResult(
            result=types_pb2.DataObject(snapshot=backup),
            kind="snapshot-to-secondary",
            bytes_written=int(written.get("bytes", 0)),
            host_id=str(written.get("host", "")),
        )

    def _template_backup(
        self,
        ctx: JobContext,
        request: driver_pb2.CopyDataRequest,
        pool: PoolRecord,
        cache: Volume,
        written: dict,
    ) -> types_pb2.DataObject:
        template = request.destination.template
        validate.require(template, "uuid", "path")
        fmt, _ = self._output_format(request)
        node = self.nodes.pick(pool, request.options.host_id)
        result = self.nodes.run_job(
            ctx,
            node.host_id,
            "BackupTemplate",
            node_pb2.BackupTemplateRequest(
                operation_id=node_operation_id(ctx, "template", cache.global_id),
                source=node_pb2.DiskRef(
                    path=names.byid_path(cache.global_id), kind=node_pb2.DISK_KIND_SNAPSHOT
                ),
                destination=template.store.secondary,
                destination_dir=template.path,
                template=template,
                format=fmt,
                compression=request.options.compression,
            ),
            node_pb2.TemplateResult(),
            "writing the template",
        )
        written.update(bytes=result.bytes_written, host=node.host_id)
        return types_pb2.DataObject(
            template=types_pb2.Template(
                uuid=template.uuid,
                name=template.name,
                id=template.id,
                path=result.install_path,
                file_name=result.file_name,
                store=template.store,
                format=result.format,
                size_bytes=result.virtual_size_bytes,
                physical_size_bytes=result.physical_size_bytes,
                checksum=result.checksum,
                description=template.description,
                global_id=cache.global_id,
            )
        )

    def _volume_to_template(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        return self._template_from_primary(ctx, request, written)

    def _snapshot_to_template(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        return self._template_from_primary(ctx, request, written)

    def _template_from_primary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        """A template on secondary from a volume or snapshot; it stays cached on the pool."""
        kind, source = _part(request.source)
        template = request.destination.template
        validate.require(template, "uuid")
        validate.identifier(template.uuid, "template.uuid")
        pool = self.pools.get(source.store.primary.pool_uuid)
        api = self.pools.api(pool)
        ctx.stage("caching the template on the pool")
        if kind == "volume":
            volume = objects.require_volume(api, source)
            cache = self.templates.cache_from_volume(pool, volume, template.uuid)
        else:
            snap = objects.require_snapshot(api, source)
            cache = self.templates.cache_from_snapshot(pool, snap, template.uuid)
        try:
            return self._template_backup(ctx, request, pool, cache, written)
        except BaseException:
            # a template whose secondary copy failed must not linger as a cache snapshot
            with contextlib.suppress(errors.SpcsError):
                self.templates.drop(pool, types_pb2.Template(uuid=template.uuid))
            raise

    def _volume_to_secondary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, written: dict
    ) -> types_pb2.DataObject:
        source, destination = request.source.volume, request.destination.volume
        validate.require(destination, "path")
        uuid = destination.uuid or source.uuid
        validate.require(types_pb2.Volume(uuid=uuid), "uuid")
        pool = self.pools.get(source.store.primary.pool_uuid)
        api = self.pools.api(pool)
        volume = objects.require_volume(api, source)
        fmt, _ = self._output_format(request)
        ctx.stage("taking a point-in-time snapshot")
        temporary = names.temporary_snapshot_name(ctx.operation_id)
        tags = {"uuid": uuid, "cs": names.CS_TEMPORARY}
        try:
            gid = api.snapshot_create(volume.ref, name=temporary, tags=tags)
        except errors.AlreadyExists:
            gid = api.snapshot(temporary).global_id
        try:
            node = self.nodes.pick(pool, request.options.host_id)
            result = self.nodes.run_job(
                ctx,
                node.host_id,
                "CopyVolumeToSecondary",
                node_pb2.CopyVolumeToSecondaryRequest(
                    operation_id=node_operation_id(ctx, "export", gid),
                    source=node_pb2.DiskRef(
                        path=names.byid_path(gid), kind=node_pb2.DISK_KIND_SNAPSHOT
                    ),
                    volume_uuid=uuid,
                    destination=destination.store.secondary,
                    destination_dir=destination.path,
                    format=fmt,
                    compression=request.options.compression,
                ),
                node_pb2.BackupResult(),
                "copying to secondary",
            )
        finally:
            api.snapshot_delete(f"~{gid}")
        written.update(bytes=result.bytes_written, host=node.host_id)
        return types_pb2.DataObject(
            volume=types_pb2.Volume(
                uuid=uuid,
                path=result.path,
                store=destination.store,
                format=result.format,
                size_bytes=result.virtual_size_bytes,
            )
        )
