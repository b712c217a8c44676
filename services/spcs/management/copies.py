"""CanCopy / CopyData: every copy the driver handles, each a long-running operation.

The combination of (source kind, source store, destination kind, destination store) selects a
copy; CanCopy answers true for exactly these, and `Copies.handlers` maps each to the function
that does it. Copies StorPool does itself (clones, migrations) move no bytes; the others run as
a job on a node, followed from here.

A copy reads its source under a shared hold (any number of clones, backups and exports of one
snapshot run together) and writes its destination under an exclusive one. What a copy may
remove is only what it created itself: a failed or cancelled copy never deletes its source or
an object the caller already had (docs/contract.md has the table).

On secondary storage a destination's `path` is the directory to write into (CloudStack's
`snapshots/<account>/<volume>`, `volumes/<account>/<volume>`, `template/tmpl/<account>/<id>`);
the file is named after the object's uuid, and the result carries the file's path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.longrunning import operations_pb2
from google.protobuf.message import Message

from spcs.common import errors, holds, validate
from spcs.common.contract import Contract
from spcs.common.operations import JobContext, OperationRegistry, fingerprint
from spcs.common.secrets import Passphrase
from spcs.management import encryption, objects
from spcs.management.encryption import CopyKeys
from spcs.management.nodecalls import NodeCalls, node_operation_id
from spcs.management.owned import Owned, owning
from spcs.management.pools import Pools
from spcs.management.snapshots import Snapshots
from spcs.management.state import PoolRecord
from spcs.management.templates import TemplateCache
from spcs.management.volumes import Volumes, volume_key
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolSnapshot, StorPoolVolume
from spcs.v1 import driver_pb2, node_pb2, strategies_pb2, types_pb2

log = logging.getLogger(__name__)

KIND = "spcs.v1.PrimaryDataStoreDriver/CopyData"
BACKUP_KIND = "spcs.v1.SnapshotStrategy/BackupSnapshot"


@dataclass(frozen=True)
class CopyRule:
    """A copy kind and what its request needs beyond CopyData's own contract (checked when
    the call arrives, before the job starts)."""

    kind: str
    needs: Contract = field(default_factory=Contract)


_NEW_VOLUME = ("destination.volume.uuid",)
_TEMPLATE_OUT = Contract(
    ids=("destination.template.uuid",), required=("destination.template.path",)
)
# (source object, source store, destination object, destination store) → copy
COPIES: dict[tuple[str, str, str, str], CopyRule] = {
    ("template", "secondary", "template", "primary"): CopyRule(
        "template-to-primary", Contract(ids=("source.template.uuid",))
    ),
    ("template", "primary", "volume", "primary"): CopyRule(
        "template-to-volume",
        Contract(ids=_NEW_VOLUME, one_of=(("source.template.path", "source.template.uuid"),)),
    ),
    ("template", "secondary", "volume", "primary"): CopyRule(
        "template-to-volume", Contract(ids=("source.template.uuid", *_NEW_VOLUME))
    ),
    # direct download: the template's URL instead of a secondary store
    ("template", "direct_download", "template", "primary"): CopyRule(
        "template-to-primary",
        Contract(
            ids=("source.template.uuid",), required=("source.template.store.direct_download.url",)
        ),
    ),
    ("template", "direct_download", "volume", "primary"): CopyRule(
        "template-to-volume",
        Contract(
            ids=("source.template.uuid", *_NEW_VOLUME),
            required=("source.template.store.direct_download.url",),
        ),
    ),
    ("snapshot", "primary", "snapshot", "secondary"): CopyRule(
        "snapshot-to-secondary",
        Contract(
            required=("destination.snapshot.path",),
            id_of=(("destination.snapshot.uuid", "source.snapshot.uuid"),),
        ),
    ),
    ("snapshot", "primary", "volume", "primary"): CopyRule(
        "snapshot-to-volume", Contract(ids=_NEW_VOLUME)
    ),
    ("snapshot", "secondary", "volume", "primary"): CopyRule(
        "secondary-snapshot-to-volume",
        Contract(required=("source.snapshot.path",), ids=_NEW_VOLUME),
    ),
    ("snapshot", "primary", "template", "secondary"): CopyRule(
        "snapshot-to-template", _TEMPLATE_OUT
    ),
    ("volume", "primary", "template", "secondary"): CopyRule("volume-to-template", _TEMPLATE_OUT),
    ("volume", "primary", "volume", "secondary"): CopyRule(
        "volume-to-secondary",
        Contract(
            required=("destination.volume.path",),
            id_of=(("destination.volume.uuid", "source.volume.uuid"),),
        ),
    ),
    ("volume", "secondary", "volume", "primary"): CopyRule(
        "volume-from-secondary", Contract(required=("source.volume.path",), ids=_NEW_VOLUME)
    ),
    ("volume", "primary", "volume", "primary"): CopyRule("volume-to-pool"),
}
COPY_KINDS = tuple(sorted({rule.kind for rule in COPIES.values()}))


@dataclass(frozen=True)
class Copied:
    """What a copy handler made: the destination object, bytes the node wrote, and where."""

    result: types_pb2.DataObject
    bytes_written: int = 0
    host_id: str = ""


@dataclass(frozen=True)
class Backup:
    """A snapshot backup to secondary storage (from CopyData or SnapshotStrategy)."""

    pool: PoolRecord
    snapshot: StorPoolSnapshot
    uuid: str
    url: str
    file_path: str
    format: types_pb2.ImageFormat.ValueType
    compression: types_pb2.Compression.ValueType
    host_id: str = ""
    # an encrypted snapshot is backed up encrypted, with the volume's passphrase
    encrypted: bool = False
    key: Passphrase | None = None


Handler = Callable[[JobContext, driver_pb2.CopyDataRequest, CopyKeys], Copied]
# The object a DataObject holds.
Part = types_pb2.Volume | types_pb2.Snapshot | types_pb2.Template
_Request = TypeVar("_Request", bound=Message)


def _part(obj: types_pb2.DataObject) -> tuple[str, Part]:
    kind = obj.WhichOneof("object")
    if kind is None:
        raise errors.InvalidArgument("a data object (volume, snapshot or template) is required")
    if kind == "volume":
        return kind, obj.volume
    if kind == "snapshot":
        return kind, obj.snapshot
    return kind, obj.template


def _arguments(request: _Request) -> _Request:
    """A copy of the request without its operation_id: what its fingerprint covers."""
    args = type(request)()
    args.CopyFrom(request)
    args.ClearField("operation_id")
    return args


def _store(inner: Part) -> tuple[str, str]:
    """('primary', pool uuid) or ('secondary', url)."""
    which = inner.store.WhichOneof("store")
    if which == "primary":
        return which, inner.store.primary.pool_uuid
    if which == "secondary":
        return which, inner.store.secondary.url
    if which == "direct_download":
        return which, inner.store.direct_download.url
    raise errors.InvalidArgument("every object of a copy needs its store (primary or secondary)")


def classify(source: types_pb2.DataObject, destination: types_pb2.DataObject) -> CopyRule | None:
    s_kind, s_inner = _part(source)
    d_kind, d_inner = _part(destination)
    s_store, s_where = _store(s_inner)
    d_store, d_where = _store(d_inner)
    rule = COPIES.get((s_kind, s_store, d_kind, d_store))
    if rule is not None and rule.kind == "volume-to-pool" and s_where == d_where:
        return None  # a copy within one pool is not a CloudStack operation
    return rule


def _filled(
    api: StorPoolClient, pool: PoolRecord, ref: str, uuid: str, written: int, host: str
) -> Copied:
    """A volume a node has filled, as StorPool now describes it."""
    volume = objects.volume_message(api.volume(ref), pool.uuid, uuid)
    return Copied(types_pb2.DataObject(volume=volume), written, host)


def _copy_result(copy: str, done: Copied) -> driver_pb2.CopyDataResult:
    return driver_pb2.CopyDataResult(
        result=done.result, kind=copy, bytes_written=done.bytes_written, host_id=done.host_id
    )


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
        self.handlers: dict[str, Handler] = {
            "template-to-primary": self._template_to_primary,
            "template-to-volume": self._template_to_volume,
            "snapshot-to-secondary": self._snapshot_to_secondary,
            "snapshot-to-volume": self._snapshot_to_volume,
            "secondary-snapshot-to-volume": self._file_into_new_volume,
            "snapshot-to-template": self._template_from_primary,
            "volume-to-template": self._template_from_primary,
            "volume-to-secondary": self._volume_to_secondary,
            "volume-from-secondary": self._file_into_new_volume,
            "volume-to-pool": self._volume_to_pool,
        }

    def can_copy(self, request: driver_pb2.CanCopyRequest) -> driver_pb2.CanCopyResponse:
        rule = classify(request.source, request.destination)
        for obj in (request.source, request.destination):
            _, inner = _part(obj)
            store, where = _store(inner)
            if store == "primary" and self.pools.find(where) is None:
                return driver_pb2.CanCopyResponse(
                    can_copy=False, reason=f"pool {where} is not a pool of this service"
                )
        if rule is None:
            return driver_pb2.CanCopyResponse(can_copy=False, reason=self._unsupported(request))
        return driver_pb2.CanCopyResponse(can_copy=True, reason=rule.kind)

    @staticmethod
    def _unsupported(request: driver_pb2.CanCopyRequest | driver_pb2.CopyDataRequest) -> str:
        s_kind, s_inner = _part(request.source)
        d_kind, d_inner = _part(request.destination)
        return (
            f"copying a {s_kind} on {_store(s_inner)[0]} storage to a {d_kind} on "
            f"{_store(d_inner)[0]} storage is not handled by spcs"
        )

    # ---- starting -------------------------------------------------------------------------

    def start(self, request: driver_pb2.CopyDataRequest) -> operations_pb2.Operation:
        rule = classify(request.source, request.destination)
        if rule is None:
            raise errors.InvalidArgument(self._unsupported(request) + " (CanCopy answers false)")
        copy = rule.kind
        pools = self._check_pools(request)
        if not (copy == "snapshot-to-secondary" and pools[0].bypass_secondary):
            # (a pool that keeps snapshots on primary writes no file: no path is needed)
            rule.needs.check(request)
        handler = self.handlers[copy]
        destination = self._destination_key(request)
        # the passphrases leave the request: its fingerprint and the job keep none of them
        keys = CopyKeys.take(request)
        return self._start(
            request,
            KIND,
            f"{copy} {destination}",
            holds.holds(copy, source=self._source_key(request.source), destination=destination),
            lambda ctx: _copy_result(copy, keys.wiped_after(lambda: handler(ctx, request, keys))),
            copy,
        )

    def start_backup(
        self, request: strategies_pb2.BackupSnapshotRequest
    ) -> operations_pb2.Operation:
        """SnapshotStrategy.BackupSnapshot: the snapshot-to-secondary copy with a file path."""
        validate.identifier(request.snapshot.uuid or "x", "snapshot.uuid")
        pool = self.pools.get(request.pool.pool_uuid)
        key = encryption.take_key(request.snapshot, "snapshot")
        snap = objects.require_snapshot(self.pools.api(pool), request.snapshot)
        backup = Backup(
            pool=pool,
            snapshot=snap,
            uuid=request.snapshot.uuid,
            url=request.destination.url,
            file_path=request.destination_path,
            format=request.format or types_pb2.IMAGE_FORMAT_QCOW2,
            compression=request.compression,
            encrypted=encryption.encrypted(request.snapshot, snap),
            key=key,
        )
        return self._start(
            request,
            BACKUP_KIND,
            request.destination_path,
            holds.holds(
                "snapshot-to-secondary",
                source=holds.storpool_object(snap.global_id),
                destination=holds.secondary_file(backup.url, backup.file_path),
            ),
            lambda ctx: _copy_result(
                "snapshot-to-secondary",
                CopyKeys(key).wiped_after(lambda: self.backup_snapshot(ctx, backup)),
            ),
            "snapshot-to-secondary",
        )

    def _start(
        self,
        request: driver_pb2.CopyDataRequest | strategies_pb2.BackupSnapshotRequest,
        kind: str,
        target: str,
        taken: tuple[holds.Hold, ...],
        run: Callable[[JobContext], driver_pb2.CopyDataResult],
        copy: str,
    ) -> operations_pb2.Operation:
        return self.registry.start(
            request.operation_id,
            kind=kind,
            fingerprint=fingerprint(_arguments(request)),
            target=target,
            runner=run,
            holds=taken,
            metric_kind=copy,
        )

    def _source_key(self, source: types_pb2.DataObject) -> str | None:
        """The hold key of a StorPool source (read while the copy runs: no resize, revert or
        delete meanwhile); resolving it here makes a missing source fail the call, not the job."""
        kind, inner = _part(source)
        store, where = _store(inner)
        if store != "primary" or (kind == "template" and not inner.path):
            return None
        api = self.pools.api(self.pools.get(where))
        if kind == "volume":
            return holds.storpool_object(objects.require_volume(api, source.volume).global_id)
        if kind == "snapshot":
            return holds.storpool_object(objects.require_snapshot(api, source.snapshot).global_id)
        snap = api.snapshot_or_none(names.api_ref(inner.path, "source.template.path"))
        if snap is None:
            raise errors.NotFound(f"cached template {inner.path} does not exist in pool {where}")
        return holds.storpool_object(snap.global_id)

    @staticmethod
    def _destination_key(request: driver_pb2.CopyDataRequest) -> str:
        """The hold key of what a copy writes: the new volume, the cached template, or the file
        on secondary storage."""
        kind, inner = _part(request.destination)
        store, where = _store(inner)
        if kind == "volume" and store == "primary":
            return volume_key(request.destination.volume)
        if kind == "template":
            return holds.template_on(inner.uuid or inner.path, where)
        _, source = _part(request.source)
        uuid = inner.uuid or source.uuid
        return holds.secondary_file(where, f"{inner.path.rstrip('/')}/{uuid}")

    def _check_pools(self, request: driver_pb2.CopyDataRequest) -> list[PoolRecord]:
        """The copy's pools, source first: unknown pools fail the call itself, not the job."""
        pools = []
        for obj in (request.source, request.destination):
            _, inner = _part(obj)
            store, where = _store(inner)
            if store == "primary":
                pools.append(self.pools.get(where))
        return pools

    # ---- secondary → StorPool -------------------------------------------------------------

    def _template_to_primary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        source, destination = request.source.template, request.destination.template
        pool = self.pools.usable(destination.store.primary.pool_uuid)
        snap, count, host = self.templates.ensure(ctx, pool, source, request.options.host_id)
        template = types_pb2.Template(
            uuid=destination.uuid or source.uuid,
            name=destination.name or source.name,
            id=destination.id or source.id,
            path=names.byid_path(snap.global_id),
            store=destination.store,
            format=types_pb2.IMAGE_FORMAT_RAW,
            size_bytes=snap.size,
            global_id=snap.global_id,
        )
        return Copied(types_pb2.DataObject(template=template), count, host)

    def _template_to_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        source, volume = request.source.template, request.destination.volume
        pool = self.pools.usable(volume.store.primary.pool_uuid)
        count, host = 0, ""
        if source.store.WhichOneof("store") == "primary" and source.path:
            snap = self.pools.api(pool).snapshot_or_none(names.api_ref(source.path))
            if snap is None:
                raise errors.NotFound(
                    f"cached template {source.path} does not exist in pool {pool.name}; copy "
                    "the template to primary storage again"
                )
        else:
            snap, count, host = self.templates.ensure(ctx, pool, source, request.options.host_id)
            # from here on the cache snapshot is this copy's source: no delete meanwhile
            ctx.hold(
                holds.holds("template-to-volume", source=holds.storpool_object(snap.global_id))
            )
        if encryption.encrypted(volume):
            # an encrypted ROOT volume: the template's data written encrypted (no clone)
            key = encryption.require(keys.any, "destination.volume", f"volume {volume.uuid}")
            made = self._encrypt_into_new_volume(ctx, pool, request, snap, key)
            return Copied(made.result, made.bytes_written + count, made.host_id or host)
        ctx.stage("cloning")
        clone = self.volumes.clone(pool, volume, snap)
        return Copied(
            types_pb2.DataObject(volume=objects.volume_message(clone, pool.uuid, volume.uuid)),
            count,
            host,
        )

    def _encrypt_into_new_volume(
        self,
        ctx: JobContext,
        pool: PoolRecord,
        request: driver_pb2.CopyDataRequest,
        snap: StorPoolSnapshot,
        key: Passphrase,
    ) -> Copied:
        """A new LUKS volume holding a plain snapshot's data (the node writes the header and
        every byte of the payload); the volume this copy made goes when the copy fails."""
        volume = request.destination.volume
        api = self.pools.api(pool)
        size = encryption.storpool_size(max(volume.size_bytes, snap.size))
        made, _ = self.volumes.create_for_copy(pool, volume, size, ctx.operation_id, encrypted=True)
        filling = bool(made.tags.get(names.FILLING_TAG))
        owned = Owned(made, f"volume {made.ref}", lambda: api.volume_delete(made.ref), filling)
        with owning(owned) as target:
            result, host = self.nodes.run_job(
                ctx,
                pool,
                request.options.host_id,
                lambda s: s.EncryptVolume,
                node_pb2.EncryptVolumeRequest(
                    operation_id=node_operation_id(ctx, "encrypt", target.global_id),
                    source=node_pb2.DiskRef(
                        path=names.byid_path(snap.global_id), kind=node_pb2.DISK_KIND_SNAPSHOT
                    ),
                    destination_path=names.byid_path(target.global_id),
                    encryption=encryption.for_node(key),
                ),
                node_pb2.DownloadResult(),
                "encrypting into the volume",
            )
        if filling:
            api.volume_update(target.ref, tags={names.FILLING_TAG: ""})
        return _filled(api, pool, target.ref, volume.uuid, result.bytes_written, host)

    def _file_into_new_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        """A snapshot backup or a volume file on secondary storage, into a new volume."""
        _, source = _part(request.source)
        volume = request.destination.volume
        pool = self.pools.usable(volume.store.primary.pool_uuid)
        api = self.pools.api(pool)
        size = (max(source.size_bytes, volume.size_bytes, 512) + 511) // 512 * 512
        # an encrypted source stays encrypted (the node re-encrypts it with the passphrase;
        # it also finds encrypted images nobody said were, and then says so)
        luks = encryption.encrypted(volume) or (
            isinstance(source, types_pb2.Volume | types_pb2.Snapshot)
            and encryption.encrypted(source)
        )
        key = keys.any
        if luks:
            key = encryption.require(key, "destination.volume", f"volume {volume.uuid}")
            size = encryption.storpool_size(size)
        made, created = self.volumes.create_for_copy(
            pool, volume, size, ctx.operation_id, encrypted=luks
        )
        # a half-written volume this copy made must not look like the result; a volume the
        # caller had is left to the caller
        filling = bool(made.tags.get(names.FILLING_TAG))
        owned = Owned(made, f"volume {made.ref}", lambda: api.volume_delete(made.ref), filling)
        with owning(owned) as target:
            result, host = self.nodes.run_job(
                ctx,
                pool,
                request.options.host_id,
                lambda s: s.DownloadVolume,
                node_pb2.DownloadVolumeRequest(
                    operation_id=node_operation_id(ctx, "download", target.global_id),
                    source=source.store.secondary,
                    source_path=source.path,
                    source_format=source.format,
                    destination_path=names.byid_path(target.global_id),
                    resize_to_virtual_size=True,
                    target_is_zero=created,
                    source_passphrase=bytes(key.value) if key is not None else b"",
                    encryption=encryption.for_node(key) if luks and key is not None else None,
                ),
                node_pb2.DownloadResult(),
                "copying into StorPool",
            )
        tags = {names.FILLING_TAG: ""} if filling else {}
        if result.encryption_format == encryption.LUKS:
            tags.update(encryption.TAGS)
        if tags:
            api.volume_update(target.ref, tags=tags)
        return _filled(api, pool, target.ref, volume.uuid, result.bytes_written, host)

    # ---- within StorPool ------------------------------------------------------------------

    def _snapshot_to_volume(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        source, volume = request.source.snapshot, request.destination.volume
        source_pool = self.pools.get(source.store.primary.pool_uuid)
        pool = self.pools.usable(volume.store.primary.pool_uuid)
        self.volumes.check_same_cluster(source_pool, pool)
        snap = objects.require_snapshot(self.pools.api(source_pool), source)
        if encryption.encrypted(volume) and not encryption.encrypted(source, snap):
            # an encrypted volume from a plain snapshot: written encrypted; a clone of an
            # encrypted snapshot is encrypted already (its header comes along)
            key = encryption.require(keys.any, "destination.volume", f"volume {volume.uuid}")
            return self._encrypt_into_new_volume(ctx, pool, request, snap, key)
        ctx.stage("cloning")
        clone = self.volumes.clone(pool, volume, snap)
        return Copied(
            types_pb2.DataObject(volume=objects.volume_message(clone, pool.uuid, volume.uuid))
        )

    def _volume_to_pool(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        source, destination = request.source.volume, request.destination.volume
        src_pool = self.pools.get(source.store.primary.pool_uuid)
        dst_pool = self.pools.usable(destination.store.primary.pool_uuid)
        self.volumes.check_same_cluster(src_pool, dst_pool)
        ctx.stage("migrating")
        moved = self.volumes.migrate_locked(src_pool, source, dst_pool, request.options.vm_running)
        return Copied(types_pb2.DataObject(volume=moved))

    # ---- StorPool → secondary -------------------------------------------------------------

    @staticmethod
    def _output_format(request: driver_pb2.CopyDataRequest) -> types_pb2.ImageFormat.ValueType:
        return request.options.format or types_pb2.IMAGE_FORMAT_QCOW2

    def backup_snapshot(self, ctx: JobContext, backup: Backup) -> Copied:
        # The snapshot is the caller's: a failed or cancelled backup leaves it as it was (the
        # node removes its partial file).
        snap = backup.snapshot
        result, host = self.nodes.run_job(
            ctx,
            backup.pool,
            backup.host_id,
            lambda s: s.BackupSnapshot,
            node_pb2.NodeBackupSnapshotRequest(
                operation_id=node_operation_id(ctx, "backup", snap.global_id),
                snapshot_path=names.byid_path(snap.global_id),
                destination=types_pb2.SecondaryStore(url=backup.url),
                destination_path=backup.file_path,
                format=backup.format,
                compression=backup.compression,
                encryption=self._export_encryption(backup.encrypted, backup.key, snap.ref),
            ),
            node_pb2.BackupResult(),
            "backing up the snapshot",
        )
        snapshot = types_pb2.Snapshot(
            uuid=backup.uuid,
            path=result.path,
            store=types_pb2.DataStore(secondary=types_pb2.SecondaryStore(url=backup.url)),
            format=result.format,
            size_bytes=result.virtual_size_bytes,
            physical_size_bytes=result.physical_size_bytes,
            global_id=snap.global_id,
            encryption_format=result.encryption_format,
        )
        return Copied(types_pb2.DataObject(snapshot=snapshot), result.bytes_written, host)

    @staticmethod
    def _export_encryption(
        encrypted: bool, key: Passphrase | None, what: str
    ) -> node_pb2.Encryption | None:
        """An encrypted object is written to secondary storage encrypted, as the Java agent
        does (a LUKS-encrypted QCOW2 with the volume's passphrase)."""
        if not encrypted:
            return None
        return encryption.for_node(encryption.require(key, "source", f"{what}"))

    def _snapshot_to_secondary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        source, destination = request.source.snapshot, request.destination.snapshot
        pool = self.pools.get(source.store.primary.pool_uuid)
        snap = objects.require_snapshot(self.pools.api(pool), source)
        if pool.bypass_secondary:
            # the pool keeps snapshots on primary only: the result stays the StorPool snapshot
            kept = objects.snapshot_message(snap, pool.uuid, destination.uuid or source.uuid)
            return Copied(types_pb2.DataObject(snapshot=kept))
        uuid = destination.uuid or source.uuid
        backup = Backup(
            pool=pool,
            snapshot=snap,
            uuid=uuid,
            url=destination.store.secondary.url,
            file_path=f"{destination.path.rstrip('/')}/{uuid}",
            format=self._output_format(request),
            compression=request.options.compression,
            host_id=request.options.host_id,
            encrypted=encryption.encrypted(source, snap),
            key=keys.any,
        )
        return self.backup_snapshot(ctx, backup)

    def _template_backup(
        self,
        ctx: JobContext,
        request: driver_pb2.CopyDataRequest,
        pool: PoolRecord,
        cache: StorPoolSnapshot,
    ) -> Copied:
        template = request.destination.template
        result, host = self.nodes.run_job(
            ctx,
            pool,
            request.options.host_id,
            lambda s: s.BackupTemplate,
            node_pb2.BackupTemplateRequest(
                operation_id=node_operation_id(ctx, "template", cache.global_id),
                source=node_pb2.DiskRef(
                    path=names.byid_path(cache.global_id), kind=node_pb2.DISK_KIND_SNAPSHOT
                ),
                destination=template.store.secondary,
                destination_dir=template.path,
                template=template,
                format=self._output_format(request),
                compression=request.options.compression,
            ),
            node_pb2.TemplateResult(),
            "writing the template",
        )
        written = types_pb2.Template(
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
        return Copied(types_pb2.DataObject(template=written), result.bytes_written, host)

    def _template_from_primary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        """A template on secondary from a volume or snapshot; it stays cached on the pool."""
        kind, source = _part(request.source)
        template = request.destination.template
        pool = self.pools.get(source.store.primary.pool_uuid)
        api = self.pools.api(pool)
        found = (
            objects.require_volume(api, request.source.volume)
            if kind == "volume"
            else objects.require_snapshot(api, request.source.snapshot)
        )
        if encryption.encrypted(
            request.source.volume if kind == "volume" else request.source.snapshot, found
        ):
            raise errors.FailedPrecondition(
                f"{kind} {found.ref} is encrypted (LUKS): spcs makes no template of it, since "
                "a template is shared and has no passphrase; make the template from an "
                "unencrypted copy"
            )
        ctx.stage("caching the template on the pool")
        if isinstance(found, StorPoolVolume):
            cache, created = self.templates.cache_from_volume(pool, found, template.uuid)
        else:
            cache, created = self.templates.cache_from_snapshot(ctx, pool, found, template.uuid)
        # a cache snapshot this copy made for a template that did not get written must not
        # linger; one that was there before stays
        drop = types_pb2.Template(uuid=template.uuid)
        owned = Owned(cache, f"cache {cache.ref}", lambda: self.templates.drop(pool, drop), created)
        with owning(owned):
            return self._template_backup(ctx, request, pool, cache)

    def _volume_to_secondary(
        self, ctx: JobContext, request: driver_pb2.CopyDataRequest, keys: CopyKeys
    ) -> Copied:
        source, destination = request.source.volume, request.destination.volume
        uuid = destination.uuid or source.uuid
        pool = self.pools.get(source.store.primary.pool_uuid)
        api = self.pools.api(pool)
        volume = objects.require_volume(api, source)
        ctx.stage("taking a point-in-time snapshot")
        temporary = names.temporary_snapshot_name(ctx.operation_id)
        tags = {"uuid": uuid, "cs": names.CS_TEMPORARY, names.OPERATION_TAG: ctx.operation_id}
        gid = objects.temporary_snapshot(api, volume.ref, temporary, tags)
        point_in_time = Owned(
            gid, f"snapshot ~{gid}", lambda: objects.delete_temporary(api, gid), scratch=True
        )
        with owning(point_in_time):
            result, host = self.nodes.run_job(
                ctx,
                pool,
                request.options.host_id,
                lambda s: s.CopyVolumeToSecondary,
                node_pb2.CopyVolumeToSecondaryRequest(
                    operation_id=node_operation_id(ctx, "export", gid),
                    source=node_pb2.DiskRef(
                        path=names.byid_path(gid), kind=node_pb2.DISK_KIND_SNAPSHOT
                    ),
                    volume_uuid=uuid,
                    destination=destination.store.secondary,
                    destination_dir=destination.path,
                    format=self._output_format(request),
                    compression=request.options.compression,
                    encryption=self._export_encryption(
                        encryption.encrypted(source, volume), keys.any, volume.ref
                    ),
                ),
                node_pb2.BackupResult(),
                "copying to secondary",
            )
        exported = types_pb2.Volume(
            uuid=uuid,
            path=result.path,
            store=destination.store,
            format=result.format,
            size_bytes=result.virtual_size_bytes,
            encryption_format=result.encryption_format,
        )
        return Copied(types_pb2.DataObject(volume=exported), result.bytes_written, host)
