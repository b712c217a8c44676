"""The template cache: a template is downloaded to a pool once, as a StorPool snapshot, and every
volume made from it afterwards is an instant copy-on-write clone of that snapshot.

Concurrent first uses of one template on one pool download it once: they queue on a per-template
lock (in job threads, never RPC threads) and the later ones find the snapshot made by the first.
Templates made from a volume or a snapshot get the cache snapshot straight away, so deploying
them on this pool needs no download either.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from spcs.common import errors, holds, validate
from spcs.common.locks import KeyedLocks
from spcs.common.operations import JobContext
from spcs.management import objects
from spcs.management.nodecalls import NodeCalls, node_operation_id
from spcs.management.pools import PoolRecord, Pools
from spcs.storpool import names
from spcs.storpool.api import StorPoolApi, Volume
from spcs.v1 import node_pb2, types_pb2

log = logging.getLogger(__name__)

UNKNOWN_TEMPLATE_SIZE = 1 << 30  # as the Java plugin: the node grows it to the virtual size


def cache_tags(template_uuid: str) -> dict[str, str]:
    return {"uuid": template_uuid, "cs": names.CS_TEMPLATE, "vc-policy": "no"}


class TemplateCache:
    def __init__(self, pools: Pools, nodes: NodeCalls, locks: KeyedLocks) -> None:
        self.pools = pools
        self.nodes = nodes
        self.locks = locks
        self._guard = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}

    def _flight(self, name: str) -> threading.Lock:
        with self._guard:
            return self._flights.setdefault(name, threading.Lock())

    def cached(self, pool: PoolRecord, template_uuid: str) -> Volume | None:
        api = self.pools.api(pool)
        snap = objects.find_template(api, pool.uuid, pool.template, uuid=template_uuid)
        if snap is not None:
            self.pools.cache_entry(pool.uuid, template_uuid, snap.name, snap.global_id, snap.size)
        return snap

    def ensure(
        self, ctx: JobContext, pool: PoolRecord, template: types_pb2.Template, host_id: str = ""
    ) -> tuple[Volume, int, str]:
        """The cache snapshot (downloading it if needed): (snapshot, bytes written, host)."""
        validate.require(template, "uuid")
        validate.identifier(template.uuid, "template.uuid")
        hit = self.cached(pool, template.uuid)
        if hit is not None:
            return hit, 0, ""
        name = names.template_cache_name(template.uuid, pool.uuid)
        ctx.queued("another download of this template")
        with self._flight(name):
            ctx.queued("")
            hit = self.cached(pool, template.uuid)
            if hit is not None:
                return hit, 0, ""
            return self._download(ctx, pool, template, host_id)

    def _download(
        self, ctx: JobContext, pool: PoolRecord, template: types_pb2.Template, host_id: str
    ) -> tuple[Volume, int, str]:
        if template.store.WhichOneof("store") != "secondary" or not template.path:
            raise errors.NotFound(
                f"template {template.uuid} is not cached on pool {pool.name} and no secondary "
                "store copy (store.secondary.url and path) was given to download it from"
            )
        api = self.pools.api(pool)
        temporary = names.template_download_name(template.uuid, pool.uuid)
        size = (template.size_bytes + 511) // 512 * 512 or UNKNOWN_TEMPLATE_SIZE
        ctx.stage("creating the download volume")
        try:
            gid = api.volume_create(
                name=temporary, size=size, template=pool.template, tags=cache_tags(template.uuid)
            )
            fresh = True
        except errors.AlreadyExists:  # left by an interrupted attempt: reuse, overwrite fully
            gid, fresh = api.volume(temporary).global_id, False
        try:
            request = node_pb2.DownloadTemplateRequest(
                operation_id=node_operation_id(ctx, "download-new" if fresh else "download", gid),
                source=template.store.secondary,
                source_path=template.path,
                source_file_name=template.file_name,
                source_format=template.format,
                destination_path=names.byid_path(gid),
                resize_to_virtual_size=True,
                target_is_zero=fresh,
            )
            result, host = self.nodes.run_job(
                ctx,
                pool,
                host_id,
                "DownloadTemplate",
                request,
                node_pb2.DownloadResult(),
                "downloading the template",
            )
            ctx.stage("snapshotting the downloaded template")
            snapshot, _ = self._snapshot(api, temporary, template.uuid, pool)
        except BaseException:
            api.volume_delete(temporary)
            raise
        api.volume_delete(temporary)
        log.info(
            "template %s cached on pool %s as %s (%d bytes written on %s)",
            template.uuid,
            pool.name,
            snapshot.ref,
            result.bytes_written,
            host,
        )
        return snapshot, result.bytes_written, host

    def _snapshot(
        self, api: StorPoolApi, source: str, template_uuid: str, pool: PoolRecord
    ) -> tuple[Volume, bool]:
        """The cache snapshot of `source`, and whether this call created it."""
        name = names.template_cache_name(template_uuid, pool.uuid)
        try:
            gid = api.snapshot_create(source, name=name, tags=cache_tags(template_uuid))
            snap, created = api.snapshot(f"~{gid}"), True
        except errors.AlreadyExists:
            snap, created = api.snapshot(name), False
        self.pools.cache_entry(pool.uuid, template_uuid, snap.name, snap.global_id, snap.size)
        return snap, created

    def cache_from_volume(
        self, pool: PoolRecord, volume: Volume, template_uuid: str
    ) -> tuple[Volume, bool]:
        """Snapshot a volume as the template's cache snapshot (point-in-time); (snapshot,
        whether this call created it)."""
        return self._snapshot(self.pools.api(pool), volume.ref, template_uuid, pool)

    def cache_from_snapshot(
        self, pool: PoolRecord, snapshot: Volume, template_uuid: str
    ) -> tuple[Volume, bool]:
        """StorPool cannot copy a snapshot directly: clone it into a volume, snapshot that."""
        api = self.pools.api(pool)
        hit = self.cached(pool, template_uuid)
        if hit is not None:
            return hit, False
        temporary = names.template_download_name(template_uuid, pool.uuid)
        with contextlib.suppress(errors.AlreadyExists):  # left by an interrupted attempt
            api.volume_create(
                name=temporary,
                parent=snapshot.ref,
                template=pool.template,
                tags=cache_tags(template_uuid),
            )
        try:
            return self._snapshot(api, temporary, template_uuid, pool)
        finally:
            api.volume_delete(temporary)

    def drop(self, pool: PoolRecord, template: types_pb2.Template) -> bool:
        """Delete a template's cache snapshot (template garbage collection); conflicts with the
        copies reading it (ABORTED)."""
        api = self.pools.api(pool)
        snap = objects.find_template(
            api, pool.uuid, pool.template, path=template.path, uuid=template.uuid
        )
        with self.locks.hold(
            "DeleteTemplate",
            template=holds.template_on(template.uuid or template.path, pool.uuid),
            cache=holds.storpool_object(snap.global_id) if snap is not None else None,
        ):
            # a cache snapshot with clones is only marked deleted: a replay must answer False
            deleted = snap is not None and api.snapshot_delete(snap.ref)
            if template.uuid:
                self.pools.drop_cache_entry(pool.uuid, template.uuid)
        if deleted and snap is not None:
            log.info("template cache %s deleted from pool %s", snap.ref, pool.name)
        return deleted

    def drop_all(self, pool: PoolRecord) -> int:
        """Every cache snapshot of the pool (the pool is being deleted)."""
        api = self.pools.api(pool)
        suffix = f"-{pool.uuid}"
        removed = 0
        for snap in api.snapshots():
            if snap.name.startswith("cs-tmpl-") and snap.name.endswith(suffix) and not snap.deleted:
                removed += int(api.snapshot_delete(snap.ref))
        for template_uuid, _, _ in self.pools.cache_entries(pool.uuid):
            self.pools.drop_cache_entry(pool.uuid, template_uuid)
        return removed
