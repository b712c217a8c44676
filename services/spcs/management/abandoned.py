"""The abandoned-object report: StorPool objects tagged as CloudStack's that CloudStack no
longer knows, and the explicit delete of the ones an operator chooses.

An object of the pool's template with a `cs` tag is known when CloudStack names it: its path or
StorPool name is among the known paths, or its `uuid` tag among the known uuids (a template's
cache snapshots carry the template's uuid, a VM snapshot's the VM snapshot's). Java plugin
objects (anonymous, found by tags) are judged the same way. Objects a running spcs operation
made or fills (`spcs-op`, `spcs-filling`) are never reported nor deleted: spcs sweeps its own.
The report deletes nothing; the delete re-checks each object when it gets to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from spcs.common import errors, holds
from spcs.common.locks import Locks
from spcs.common.validate import shown
from spcs.management import objects
from spcs.management.inventory import Inventory
from spcs.management.state import PoolRecord
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import Attachment, StorPoolObject, StorPoolSnapshot
from spcs.v1 import lifecycle_pb2

log = logging.getLogger(__name__)

MAX_KNOWN = 5_000_000  # uuids and paths in one report: a region's worth, with room
MAX_DELETE = 1000
MAX_VALUE = 255


@dataclass(frozen=True)
class Report:
    objects: list[lifecycle_pb2.AbandonedObject]
    examined: int
    known: int


class Abandoned:
    def __init__(
        self,
        inventory: Inventory,
        locks: Locks,
        is_running: Callable[[str], bool],
    ) -> None:
        self.inventory = inventory
        self.pools = inventory.pools
        self.locks = locks
        self.is_running = is_running

    def report(self, requests: Iterable[lifecycle_pb2.ReportAbandonedObjectsRequest]) -> Report:
        pool_uuid, uuids, refs = _known(requests)
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        tagged = [o for o in (*_sorted(api.volumes()), *_sorted(api.snapshots())) if _ours(o, pool)]
        abandoned = [
            o
            for o in tagged
            if o.tags.get("uuid") not in uuids
            and f"~{o.global_id}" not in refs
            and o.name not in refs
            and self._in_use_by(o) is None
        ]
        now = time.time()
        reported = [
            lifecycle_pb2.AbandonedObject(
                object=message,
                age_seconds=max(0, int(now - message.create_time.seconds))
                if message.HasField("create_time")
                else 0,
            )
            for message in self.inventory.messages(api, pool.uuid, abandoned)
        ]
        log.info(
            "pool %s: %d of %d CloudStack objects are not known to CloudStack",
            pool.name,
            len(reported),
            len(tagged),
        )
        return Report(reported, len(tagged), len(uuids) + len(refs))

    def delete(self, pool_uuid: str, paths: Sequence[str]) -> list[lifecycle_pb2.DeletedObject]:
        if len(paths) > MAX_DELETE:
            raise errors.InvalidArgument(
                f"paths: {len(paths)} objects; delete at most {MAX_DELETE} in one call"
            )
        refs = [names.api_ref(path, "paths") for path in paths]
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        # one attachment list for the call, not one per object (StorPool refuses to delete an
        # object that got attached since anyway)
        attached = _attached_to(api.attachments(), self.inventory.hosts_by_client(pool.uuid))
        return [
            self._delete_one(api, pool, path, ref, attached)
            for path, ref in zip(paths, refs, strict=True)
        ]

    def _delete_one(
        self,
        api: StorPoolClient,
        pool: PoolRecord,
        path: str,
        ref: str,
        attached_to: dict[str, str],
    ) -> lifecycle_pb2.DeletedObject:
        def kept(why: str) -> lifecycle_pb2.DeletedObject:
            return lifecycle_pb2.DeletedObject(path=path, deleted=False, kept_because=why)

        found: StorPoolObject | None = api.volume_or_none(ref) or api.snapshot_or_none(ref)
        if found is None or (isinstance(found, StorPoolSnapshot) and found.deleted):
            return lifecycle_pb2.DeletedObject(path=path, deleted=False)
        if found.template != pool.template:
            return kept(f"it is not in pool {pool.name}'s StorPool template {pool.template}")
        if not found.tags.get("cs"):
            return kept("it has no cs tag: not CloudStack's; delete it in StorPool if unwanted")
        operation = self._in_use_by(found)
        if operation:
            return kept(f"the running operation operations/{operation} uses it")
        attached = attached_to.get(found.global_id) or attached_to.get(found.name)
        if attached:
            return kept(f"it is attached to {attached}: detach it first")
        try:
            with self.locks.hold(
                "DeleteAbandonedObjects", object=holds.storpool_object(found.global_id)
            ):
                if found.is_snapshot:
                    deleted = objects.delete_temporary(api, found.global_id)
                else:
                    deleted = api.volume_delete(found.ref)
        except errors.Conflict as conflict:
            return kept(f"{conflict.message}; retry later")
        except errors.NotFound:
            return lifecycle_pb2.DeletedObject(path=path, deleted=False)
        log.warning("deleted abandoned %s (%s) of pool %s", found.name, found.ref, pool.name)
        return lifecycle_pb2.DeletedObject(path=path, deleted=deleted)

    def _in_use_by(self, obj: StorPoolObject) -> str | None:
        for tag in (names.OPERATION_TAG, names.FILLING_TAG):
            operation = obj.tags.get(tag, "")
            if operation and self.is_running(operation):
                return operation
        return None


def _known(
    requests: Iterable[lifecycle_pb2.ReportAbandonedObjectsRequest],
) -> tuple[str, set[str], set[str]]:
    """The pool and what CloudStack knows, from the whole stream."""
    pool_uuid = ""
    uuids: set[str] = set()
    refs: set[str] = set()
    for n, request in enumerate(requests):
        if n == 0:
            pool_uuid = request.pool_uuid
        elif request.pool_uuid and request.pool_uuid != pool_uuid:
            raise errors.InvalidArgument(
                f"message {n + 1} names pool_uuid {shown(request.pool_uuid)}, the first named "
                f"{pool_uuid}: one report is about one pool"
            )
        for value in (*request.known_uuids, *request.known_paths):
            if len(value) > MAX_VALUE:
                raise errors.InvalidArgument(
                    f"message {n + 1}: {shown(value)} is longer than {MAX_VALUE} characters; "
                    "send CloudStack's uuids and paths"
                )
        uuids.update(request.known_uuids)
        refs.update(r for r in map(names.ref_or_none, request.known_paths) if r is not None)
        if len(uuids) + len(refs) > MAX_KNOWN:
            raise errors.InvalidArgument(
                f"more than {MAX_KNOWN} known uuids and paths in one report; report a pool "
                "with fewer objects per call"
            )
    if not pool_uuid:
        raise errors.InvalidArgument(
            "the request stream sent no message naming pool_uuid: the first message names the pool"
        )
    return pool_uuid, uuids, refs


def _attached_to(attachments: Iterable[Attachment], hosts: dict[int, str]) -> dict[str, str]:
    """global id (or name, where StorPool gives none) → `host-1 (client 1), client 7`."""
    clients: dict[str, list[int]] = {}
    for a in attachments:
        clients.setdefault(a.global_id or a.volume, []).append(a.client)
    return {
        key: ", ".join(
            f"{hosts[c]} (client {c})" if c in hosts else f"client {c}" for c in sorted(found)
        )
        for key, found in clients.items()
    }


def _ours(obj: StorPoolObject, pool: PoolRecord) -> bool:
    """In the pool's template, tagged as CloudStack's, and not a snapshot StorPool keeps only
    for its clones (it is gone for CloudStack already)."""
    if obj.template != pool.template or not obj.tags.get("cs"):
        return False
    return not (isinstance(obj, StorPoolSnapshot) and obj.deleted)


def _sorted(found: Sequence[StorPoolObject]) -> list[StorPoolObject]:
    return sorted(found, key=lambda o: o.name)
