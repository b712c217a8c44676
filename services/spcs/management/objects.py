"""Finding the StorPool object behind a CloudStack object, and describing it back.

A CloudStack object is found by its path (`/dev/storpool-byid/<gid>`, what CloudStack stores),
else by the name spcs gives it, else by its `uuid` tag — the last is how objects the Java
plugin created (anonymous, `~gid`) are found when only a uuid is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from spcs.common import errors
from spcs.management import encryption
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolObject, StorPoolSnapshot, StorPoolVolume
from spcs.v1 import types_pb2

Found = TypeVar("Found", bound=StorPoolObject)


def _by_tag(
    objects: Sequence[Found], uuid: str, kinds: tuple[str, ...], sp_template: str = ""
) -> Found | None:
    for obj in objects:
        if (
            obj.tags.get("uuid") == uuid
            and obj.tags.get("cs") in kinds
            and not (isinstance(obj, StorPoolSnapshot) and obj.deleted)
            and (not sp_template or obj.template == sp_template)
        ):
            return obj
    return None


def find_volume(
    api: StorPoolClient, *, path: str = "", uuid: str = "", field: str = "volume.path"
) -> StorPoolVolume | None:
    if path:
        return api.volume_or_none(names.api_ref(path, field))
    if not uuid:
        raise errors.InvalidArgument("the volume needs a path or a uuid")
    found = api.volume_or_none(names.volume_name(uuid))
    return found or _by_tag(api.volumes(), uuid, (names.CS_VOLUME,))


def find_snapshot(
    api: StorPoolClient, *, path: str = "", uuid: str = "", field: str = "snapshot.path"
) -> StorPoolSnapshot | None:
    if path:
        return api.snapshot_or_none(names.api_ref(path, field))
    if not uuid:
        raise errors.InvalidArgument("the snapshot needs a path or a uuid")
    found = api.snapshot_or_none(names.snapshot_name(uuid))
    return found or _by_tag(api.snapshots(), uuid, (names.CS_SNAPSHOT, names.CS_GROUP))


def find_template(
    api: StorPoolClient, pool_uuid: str, sp_template: str, *, path: str = "", uuid: str = ""
) -> StorPoolSnapshot | None:
    """A template's cache snapshot on a pool: by path, by spcs's name, or by its `uuid` tag
    in the pool's StorPool template (the Java plugin's cache snapshots are anonymous)."""
    if path:
        return api.snapshot_or_none(names.api_ref(path, "template.path"))
    if not uuid:
        raise errors.InvalidArgument("the template needs a path or a uuid")
    found = api.snapshot_or_none(names.template_cache_name(uuid, pool_uuid))
    return found or _by_tag(api.snapshots(), uuid, (names.CS_TEMPLATE,), sp_template)


def require_volume(
    api: StorPoolClient, volume: types_pb2.Volume, field: str = "volume.path"
) -> StorPoolVolume:
    found = find_volume(api, path=volume.path, uuid=volume.uuid, field=field)
    if found is None:
        raise errors.NotFound(
            f"volume {volume.path or volume.uuid} does not exist in StorPool at {api.endpoint}"
        )
    return found


def require_snapshot(
    api: StorPoolClient, snapshot: types_pb2.Snapshot, field: str = "snapshot.path"
) -> StorPoolSnapshot:
    found = find_snapshot(api, path=snapshot.path, uuid=snapshot.uuid, field=field)
    if found is None:
        raise errors.NotFound(
            f"snapshot {snapshot.path or snapshot.uuid} does not exist in StorPool at "
            f"{api.endpoint}"
        )
    return found


def _encryption_of(obj: StorPoolObject) -> types_pb2.EncryptionFormat.ValueType:
    if names.is_encrypted(obj.tags):
        return encryption.LUKS
    return types_pb2.ENCRYPTION_FORMAT_UNSPECIFIED


def volume_message(
    obj: StorPoolVolume, pool_uuid: str, uuid: str = "", used: int = 0
) -> types_pb2.Volume:
    return types_pb2.Volume(
        uuid=uuid or obj.tags.get("uuid", ""),
        path=names.byid_path(obj.global_id),
        size_bytes=encryption.guest_size(obj),
        store=types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool_uuid)),
        format=types_pb2.IMAGE_FORMAT_RAW,
        encryption_format=_encryption_of(obj),
        vm_uuid=obj.tags.get("cvm", ""),
        max_iops=obj.iops or 0,
        sp_template=obj.template,
        qos_class=obj.tags.get("qc", ""),
        vc_policy=obj.tags.get("vc-policy", ""),
        global_id=obj.global_id,
        used_bytes=used,
    )


def snapshot_message(obj: StorPoolSnapshot, pool_uuid: str, uuid: str = "") -> types_pb2.Snapshot:
    return types_pb2.Snapshot(
        uuid=uuid or obj.tags.get("uuid", ""),
        path=names.byid_path(obj.global_id),
        vm_uuid=obj.tags.get("cvm", ""),
        size_bytes=encryption.guest_size(obj),
        encryption_format=_encryption_of(obj),
        global_id=obj.global_id,
        format=types_pb2.IMAGE_FORMAT_RAW,
        store=types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool_uuid)),
    )


def delete_temporary(api: StorPoolClient, global_id: str) -> bool:
    """Delete a temporary snapshot, renaming it first (`names.dropped_temporary_name`)."""
    api.snapshot_update(f"~{global_id}", rename=names.dropped_temporary_name(global_id))
    return api.snapshot_delete(f"~{global_id}")


def temporary_snapshot(
    api: StorPoolClient, volume_ref: str, name: str, tags: dict[str, str]
) -> str:
    """A point-in-time snapshot named `name`, taken now (the global id). One an earlier
    attempt of the same operation left holds older data: it is removed first (renamed away
    when StorPool only marked it deleted, since it has children)."""
    try:
        return api.snapshot_create(volume_ref, name=name, tags=tags)
    except errors.AlreadyExists:
        found = api.snapshot(name)
    if found.deleted:
        api.snapshot_update(found.ref, rename=names.dropped_temporary_name(found.global_id))
    else:
        delete_temporary(api, found.global_id)
    return api.snapshot_create(volume_ref, name=name, tags=tags)
