"""What a pool holds in StorPool, for operators: its volumes and snapshots as StorPool describes
them now, whoever made them (spcs, the Java plugin, an administrator by hand).

A pool's objects are the ones in its StorPool template, the rule deleting a pool and the
stats of a whole pool use too. A listing costs one call each for volumes, snapshots, space and
attachments, however many objects there are; pages are cut from that answer by StorPool name,
so a page token is the last name shown and a page never repeats or skips an object that stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spcs.common import errors
from spcs.common.validate import shown
from spcs.management.nodes import NodeDirectory
from spcs.management.pools import Pools
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import Attachment, StorPoolObject, StorPoolSnapshot
from spcs.v1 import lifecycle_pb2

VOLUME = lifecycle_pb2.POOL_OBJECT_KIND_VOLUME
SNAPSHOT = lifecycle_pb2.POOL_OBJECT_KIND_SNAPSHOT
DEFAULT_PAGE = 1000
MAX_PAGE = 10000
_KIND_WORD = {VOLUME: "volume", SNAPSHOT: "snapshot"}


@dataclass(frozen=True)
class Page:
    objects: list[lifecycle_pb2.PoolObject]
    next_token: str


class Inventory:
    def __init__(self, pools: Pools, nodes: NodeDirectory) -> None:
        self.pools = pools
        self.nodes = nodes

    def page(
        self,
        pool_uuid: str,
        kind: lifecycle_pb2.PoolObjectKind.ValueType,
        size: int,
        token: str,
        cloudstack_kind: str = "",
    ) -> Page:
        kinds = _kinds(kind)
        size = _page_size(size)
        after = _token(token, kinds)
        if cloudstack_kind:
            names.tag_value(cloudstack_kind, "cloudstack_kind")
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        ordered = [
            (k, obj)
            for k in kinds
            for obj in sorted(_listed(api, k, pool.template), key=_name)
            if not cloudstack_kind or obj.tags.get("cs") == cloudstack_kind
        ]
        if after is not None:
            ordered = [(k, o) for k, o in ordered if (kinds.index(k), o.name) > after]
        page, rest = ordered[:size], ordered[size:]
        messages = self.messages(api, pool_uuid, [obj for _, obj in page])
        last = page[-1] if page and rest else None
        return Page(messages, f"{_KIND_WORD[last[0]]}/{last[1].name}" if last else "")

    def get(self, pool_uuid: str, ref: str) -> lifecycle_pb2.PoolObject:
        pool = self.pools.get(pool_uuid)
        api = self.pools.api(pool)
        found = _find(api, ref, pool.template)
        if not found:
            raise errors.NotFound(
                f"pool {pool.name} has no StorPool volume or snapshot {shown(ref)} in its "
                f"template {pool.template}; list them with `spcs ctl volumes {pool_uuid}` or "
                f"`spcs ctl snapshots {pool_uuid}`"
            )
        if len(found) > 1:
            paths = ", ".join(names.byid_path(o.global_id) for o in found)
            raise errors.FailedPrecondition(
                f"uuid {ref} is on {len(found)} objects of pool {pool.name} ({paths}); ask for "
                "one of them by its path"
            )
        (message,) = self.messages(api, pool_uuid, found)
        return message

    def messages(
        self, api: StorPoolClient, pool_uuid: str, objects: Sequence[StorPoolObject]
    ) -> list[lifecycle_pb2.PoolObject]:
        if not objects:
            return []
        used = api.volumes_space() if any(not o.is_snapshot for o in objects) else {}
        attached: dict[str, list[Attachment]] = {}
        for attachment in api.attachments():
            attached.setdefault(attachment.global_id or attachment.volume, []).append(attachment)
        hosts = self.hosts_by_client(pool_uuid)
        return [
            _message(obj, used, attached.get(obj.global_id, attached.get(obj.name, [])), hosts)
            for obj in objects
        ]

    def hosts_by_client(self, pool_uuid: str) -> dict[int, str]:
        """StorPool client id → host id; a host connected to the pool wins over one that is not
        (client ids are per StorPool cluster)."""

        def connected(host_id: str) -> bool:
            return pool_uuid in self.nodes.pools_of(host_id)

        found: dict[int, str] = {}
        for node in sorted(self.nodes.all(), key=lambda n: connected(n.host_id)):
            found[node.client_id] = node.host_id
        return found


def _kinds(
    kind: lifecycle_pb2.PoolObjectKind.ValueType,
) -> tuple[lifecycle_pb2.PoolObjectKind.ValueType, ...]:
    if kind == lifecycle_pb2.POOL_OBJECT_KIND_UNSPECIFIED:
        return (VOLUME, SNAPSHOT)
    if kind in _KIND_WORD:
        return (kind,)
    raise errors.InvalidArgument(
        f"kind {kind} is not a PoolObjectKind: use POOL_OBJECT_KIND_VOLUME, "
        "POOL_OBJECT_KIND_SNAPSHOT or leave it unset for both"
    )


def _page_size(size: int) -> int:
    if size < 0 or size > MAX_PAGE:
        raise errors.InvalidArgument(
            f"page_size {size} is out of range: use 1 to {MAX_PAGE}, or 0 for {DEFAULT_PAGE}"
        )
    return size or DEFAULT_PAGE


def _token(
    token: str, kinds: tuple[lifecycle_pb2.PoolObjectKind.ValueType, ...]
) -> tuple[int, str] | None:
    """(index of the kind, name) of the last object shown; None for the first page."""
    if not token:
        return None
    word, _, name = token.partition("/")
    kind = next((k for k, w in _KIND_WORD.items() if w == word), None)
    if kind is None or kind not in kinds or names.ref_or_none(name) != name:
        raise errors.InvalidArgument(
            f"page_token {shown(token)} is not one this listing gave: pass next_page_token "
            "of the previous answer, with the same pool_uuid and kind"
        )
    return kinds.index(kind), name


def _name(obj: StorPoolObject) -> str:
    return obj.name


def _listed(
    api: StorPoolClient, kind: lifecycle_pb2.PoolObjectKind.ValueType, template: str
) -> list[StorPoolObject]:
    objects: Sequence[StorPoolObject] = api.volumes() if kind == VOLUME else api.snapshots()
    return [obj for obj in objects if obj.template == template]


def _find(api: StorPoolClient, ref: str, template: str) -> list[StorPoolObject]:
    """The pool's objects `ref` names: one by path or name, any number by uuid tag."""
    api_ref = names.ref_or_none(ref)
    if api_ref is not None and (api_ref.startswith("~") or ref.startswith("/")):
        named = api.volume_or_none(api_ref) or api.snapshot_or_none(api_ref)
        return [named] if named is not None and named.template == template else []
    pool_objects = [*_listed(api, VOLUME, template), *_listed(api, SNAPSHOT, template)]
    by_name = [obj for obj in pool_objects if obj.name == ref]
    if by_name:
        return by_name
    return [obj for obj in pool_objects if obj.tags.get("uuid") == ref]


def _message(
    obj: StorPoolObject,
    used: dict[str, tuple[int, int]],
    attachments: Sequence[Attachment],
    hosts: dict[int, str],
) -> lifecycle_pb2.PoolObject:
    message = lifecycle_pb2.PoolObject(
        kind=SNAPSHOT if obj.is_snapshot else VOLUME,
        path=names.byid_path(obj.global_id),
        name=obj.name,
        global_id=obj.global_id,
        cloudstack_kind=obj.tags.get("cs", ""),
        uuid=obj.tags.get("uuid", ""),
        vm_uuid=obj.tags.get("cvm", ""),
        size_bytes=obj.size,
        parent=obj.parent,
        sp_template=obj.template,
        max_iops=obj.iops or 0,
        max_bandwidth_bytes_per_second=names.bandwidth_from_storpool(obj.bw),
        tags=obj.tags,
        attachments=[
            lifecycle_pb2.PoolObjectAttachment(
                client_id=a.client,
                host_id=hosts.get(a.client, ""),
                read_only=a.snapshot or a.rights != "rw",
            )
            for a in sorted(attachments, key=lambda a: a.client)
        ],
    )
    if isinstance(obj, StorPoolSnapshot):
        message.deleted = obj.deleted
        message.on_volume = "" if obj.on_volume in ("", "-") else obj.on_volume
        if obj.delete_at:
            message.delete_time.FromSeconds(obj.delete_at)
    elif obj.name in used:
        message.used_bytes = used[obj.name][1]
    if obj.created:
        message.create_time.FromSeconds(obj.created)
    return message
