"""The template cache: a template is downloaded to a pool once, as a StorPool snapshot, and every
volume made from it afterwards is an instant copy-on-write clone of that snapshot.

Concurrent first uses of one template on one pool download it once, whichever replica runs
them: they queue on a hold of the download (in job threads, never RPC threads; a lease when the
replicas share a database) and the later ones find the snapshot made by the first.
Templates made from a volume or a snapshot get the cache snapshot straight away, so deploying
them on this pool needs no download either.
"""

from __future__ import annotations

import logging

from spcs.common import errors, holds
from spcs.common.locks import Locks
from spcs.common.operations import JobContext
from spcs.management import objects
from spcs.management.nodecalls import NodeCalls, node_operation_id
from spcs.management.owned import Owned, owning
from spcs.management.pools import Pools
from spcs.management.state import CacheEntry, PoolRecord
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolSnapshot, StorPoolVolume
from spcs.v1 import node_pb2, types_pb2

log = logging.getLogger(__name__)

UNKNOWN_TEMPLATE_SIZE = 1 << 30  # as the Java plugin: the node grows it to the virtual size


def cache_tags(template_uuid: str) -> dict[str, str]:
    return {"uuid": template_uuid, "cs": names.CS_TEMPLATE, "vc-policy": "no"}


class TemplateCache:
    def __init__(self, pools: Pools, nodes: NodeCalls, locks: Locks) -> None:
        self.pools = pools
        self.nodes = nodes
        self.locks = locks

    def cached(self, pool: PoolRecord, template_uuid: str) -> StorPoolSnapshot | None:
        api = self.pools.api(pool)
        snap = objects.find_template(api, pool.uuid, pool.template, uuid=template_uuid)
        if snap is not None:
            self.pools.store.put_cache_entry(
                pool.uuid, CacheEntry(template_uuid, snap.name, snap.global_id, snap.size)
            )
        return snap

    def ensure(
        self, ctx: JobContext, pool: PoolRecord, template: types_pb2.Template, host_id: str = ""
    ) -> tuple[StorPoolSnapshot, int, str]:
        """The cache snapshot (downloading it if needed): (snapshot, bytes written, host).
        The copy's contract checked the template's uuid."""
        hit = self.cached(pool, template.uuid)
        if hit is not None:
            return hit, 0, ""
        ctx.queued("another download of this template")
        # one download at a time on any replica: the later ones find the snapshot it made
        release = self.locks.waiting(
            holds.holds(
                "TemplateDownload", download=holds.template_download(template.uuid, pool.uuid)
            ),
            f"download of template {template.uuid} ({ctx.operation_id})",
            ctx.check_cancelled,
        )
        try:
            ctx.queued("")
            hit = self.cached(pool, template.uuid)
            if hit is not None:
                return hit, 0, ""
            return self._download(ctx, pool, template, host_id)
        finally:
            release()

    def _download(
        self, ctx: JobContext, pool: PoolRecord, template: types_pb2.Template, host_id: str
    ) -> tuple[StorPoolSnapshot, int, str]:
        direct = template.store.WhichOneof("store") == "direct_download"
        if not direct and (template.store.WhichOneof("store") != "secondary" or not template.path):
            raise errors.NotFound(
                f"template {template.uuid} is not cached on pool {pool.name} and no secondary "
                "store copy (store.secondary.url and path) or URL (store.direct_download) was "
                "given to download it from"
            )
        api = self.pools.api(pool)
        temporary = names.template_download_name(template.uuid, pool.uuid)
        size = (template.size_bytes + 511) // 512 * 512 or UNKNOWN_TEMPLATE_SIZE
        ctx.stage("creating the download volume")
        try:
            gid = api.volume_create(
                name=temporary,
                size=size,
                template=pool.template,
                tags={**cache_tags(template.uuid), names.OPERATION_TAG: ctx.operation_id},
            )
            fresh = True
        except errors.AlreadyExists:  # left by an interrupted attempt: reuse, overwrite fully
            gid, fresh = api.volume(temporary).global_id, False
            # now this operation's, so that a sweep does not take it for its old one's
            api.volume_update(f"~{gid}", tags={names.OPERATION_TAG: ctx.operation_id})
        download = Owned(
            gid, f"volume {temporary}", lambda: api.volume_delete(temporary), scratch=True
        )
        with owning(download):
            step = node_operation_id(ctx, "download-new" if fresh else "download", gid)
            result, host = self._fill(ctx, pool, template, host_id, step, gid, fresh)
            ctx.stage("snapshotting the downloaded template")
            snapshot, _ = self._snapshot(api, temporary, template.uuid, pool)
        log.info(
            "template %s cached on pool %s as %s (%d bytes written on %s)",
            template.uuid,
            pool.name,
            snapshot.ref,
            result.bytes_written,
            host,
        )
        return snapshot, result.bytes_written, host

    def _fill(
        self,
        ctx: JobContext,
        pool: PoolRecord,
        template: types_pb2.Template,
        host_id: str,
        step: str,
        gid: str,
        fresh: bool,
    ) -> tuple[node_pb2.DownloadResult, str]:
        """A node writes the template into the download volume: from secondary storage, or
        straight from its URL (direct download)."""
        if template.store.WhichOneof("store") == "direct_download":
            return self.nodes.run_job(
                ctx,
                pool,
                host_id,
                lambda s: s.DirectDownloadTemplate,
                node_pb2.DirectDownloadTemplateRequest(
                    operation_id=step,
                    source=template.store.direct_download,
                    source_format=template.format,
                    destination_path=names.byid_path(gid),
                    target_is_zero=fresh,
                ),
                node_pb2.DownloadResult(),
                "downloading the template from its URL",
            )
        return self.nodes.run_job(
            ctx,
            pool,
            host_id,
            lambda s: s.DownloadTemplate,
            node_pb2.DownloadTemplateRequest(
                operation_id=step,
                source=template.store.secondary,
                source_path=template.path,
                source_file_name=template.file_name,
                source_format=template.format,
                destination_path=names.byid_path(gid),
                resize_to_virtual_size=True,
                target_is_zero=fresh,
            ),
            node_pb2.DownloadResult(),
            "downloading the template",
        )

    def _snapshot(
        self, api: StorPoolClient, source: str, template_uuid: str, pool: PoolRecord
    ) -> tuple[StorPoolSnapshot, bool]:
        """The cache snapshot of `source`, and whether this call created it."""
        name = names.template_cache_name(template_uuid, pool.uuid)
        try:
            gid = api.snapshot_create(source, name=name, tags=cache_tags(template_uuid))
            snap, created = api.snapshot(f"~{gid}"), True
        except errors.AlreadyExists:
            snap, created = api.snapshot(name), False
        self.pools.store.put_cache_entry(
            pool.uuid, CacheEntry(template_uuid, snap.name, snap.global_id, snap.size)
        )
        return snap, created

    def cache_from_volume(
        self, pool: PoolRecord, volume: StorPoolVolume, template_uuid: str
    ) -> tuple[StorPoolSnapshot, bool]:
        """Snapshot a volume as the template's cache snapshot (point-in-time); (snapshot,
        whether this call created it)."""
        return self._snapshot(self.pools.api(pool), volume.ref, template_uuid, pool)

    def cache_from_snapshot(
        self,
        ctx: JobContext,
        pool: PoolRecord,
        snapshot: StorPoolSnapshot,
        template_uuid: str,
    ) -> tuple[StorPoolSnapshot, bool]:
        """StorPool cannot copy a snapshot directly: clone it into a volume (tagged with the
        operation, so a sweep knows whose it is), snapshot that. The clone has the download's
        name, so it waits for a download of the template to the pool, as a download does."""
        hit = self.cached(pool, template_uuid)
        if hit is not None:
            return hit, False
        release = self.locks.waiting(
            holds.holds(
                "TemplateDownload", download=holds.template_download(template_uuid, pool.uuid)
            ),
            f"template {template_uuid} from a snapshot ({ctx.operation_id})",
            ctx.check_cancelled,
        )
        try:
            hit = self.cached(pool, template_uuid)
            if hit is not None:
                return hit, False
            return self._clone_and_snapshot(ctx, pool, snapshot, template_uuid)
        finally:
            release()

    def _clone_and_snapshot(
        self, ctx: JobContext, pool: PoolRecord, snapshot: StorPoolSnapshot, template_uuid: str
    ) -> tuple[StorPoolSnapshot, bool]:
        api = self.pools.api(pool)
        temporary = names.template_download_name(template_uuid, pool.uuid)
        tags = {**cache_tags(template_uuid), names.OPERATION_TAG: ctx.operation_id}
        try:
            api.volume_create(
                name=temporary, parent=snapshot.ref, template=pool.template, tags=tags
            )
        except errors.AlreadyExists:  # left by an interrupted job: not a clone of this snapshot
            api.volume_delete(temporary)
            api.volume_create(
                name=temporary, parent=snapshot.ref, template=pool.template, tags=tags
            )
        clone = Owned(
            temporary, f"volume {temporary}", lambda: api.volume_delete(temporary), scratch=True
        )
        with owning(clone):
            return self._snapshot(api, temporary, template_uuid, pool)

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
            deleted = snap is not None and self._delete_cache(api, snap)
            if template.uuid:
                self.pools.store.drop_cache_entry(pool.uuid, template.uuid)
        if deleted and snap is not None:
            log.info("template cache %s deleted from pool %s", snap.ref, pool.name)
        return deleted

    @staticmethod
    def _delete_cache(api: StorPoolClient, snap: StorPoolSnapshot) -> bool:
        if not snap.anonymous:
            # free the name for the template's next cache (see names.dropped_template_name)
            api.snapshot_update(snap.ref, rename=names.dropped_template_name(snap.global_id))
        return api.snapshot_delete(snap.ref)

    def drop_all(self, pool: PoolRecord) -> int:
        """Every cache snapshot of the pool (the pool is being deleted): those spcs named, and
        those the store recorded by global id (a Java-plugin cache, found by its tags)."""
        api = self.pools.api(pool)
        suffix = f"-{pool.uuid}"
        removed: set[str] = set()
        named = [
            s
            for s in api.snapshots()
            if s.name.startswith("cs-tmpl-") and s.name.endswith(suffix) and not s.deleted
        ]
        for snap in named:
            if api.snapshot_delete(snap.ref):
                removed.add(snap.global_id)
        for entry in self.pools.store.cache_entries(pool.uuid):
            if entry.global_id not in removed:
                recorded = api.snapshot_or_none(f"~{entry.global_id}")
                if recorded is not None and api.snapshot_delete(recorded.ref):
                    removed.add(recorded.global_id)
            self.pools.store.drop_cache_entry(pool.uuid, entry.template_uuid)
        return len(removed)
