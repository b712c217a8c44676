"""StorPool naming and tagging: the one place that knows how CloudStack objects map to StorPool.

Objects spcs creates get deterministic names derived from CloudStack uuids, so a replayed
create meets `objectExists` and is checked instead of duplicated (anonymous objects, as the
Java plugin makes them, cannot be made idempotent without a racy tag lookup). CloudStack
is always handed `/dev/storpool-byid/<globalId>` paths, exactly like the Java plugin, so
objects the Java plugin created (anonymous, `~<globalId>`, found by tags) keep working.

Tags are the Java plugin's (`uuid`, `cvm`, `cs`, `vc-policy`, `qc`, `disk`); an empty value
removes a tag.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from spcs.common.errors import InvalidArgument
from spcs.common.validate import shown

BYID_DIR = "/dev/storpool-byid"
NAME_DIR = "/dev/storpool"
GLOBAL_ID = re.compile(r"^[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$")
NAME = re.compile(r"^#?[A-Za-z0-9_\-.:]+$")
SNAPSHOT_NAME = re.compile(r"^\*?[A-Za-z0-9_\-.:@]+$")
TAG_VALUE = re.compile(r"^[A-Za-z0-9_\-.:]*$")
# What an object reference may hold where it becomes part of a URL path (a name, `~<gid>`, a
# snapshot name's `*`/`@`): anything else could address another object ("a?b" is "a").
URL_REF = re.compile(r"^[~#*]?[A-Za-z0-9_\-.:@]+$")
MAX_NAME = 199

# The `cs` tag: what kind of CloudStack object a StorPool object is (Java plugin values).
CS_VOLUME = "volume"
CS_SNAPSHOT = "snapshot"
CS_TEMPLATE = "template"
CS_GROUP = "group"
CS_TEMPORARY = "temporary"
CS_DELAY_DELETE = "delayDelete"  # the backup snapshot a volume delete leaves behind
CS_PROBE = "check-volume-is-on-host"  # a probe volume (spcs's lives for one call)
# On a volume a copy job creates and fills: the job's operation id, removed once the copy is
# complete. A failed copy deletes the volume only when it still carries it (the job made it).
FILLING_TAG = "spcs-filling"
# On a temporary object a job makes for itself (a download volume, a point-in-time snapshot):
# the job's operation id, so a sweep removes it only once that operation runs nowhere.
OPERATION_TAG = "spcs-op"
# On a LUKS-encrypted volume and the snapshots spcs takes of it: "luks". Clones and copies of
# them carry it too; objects the Java plugin encrypted lack it (the caller says so).
ENCRYPTION_TAG = "spcs-enc"
LUKS = "luks"


def is_encrypted(tags: Mapping[str, str]) -> bool:
    return tags.get(ENCRYPTION_TAG) == LUKS


_PREFIX = "cs"


def _name(kind: str, *parts: str) -> str:
    name = "-".join((_PREFIX, kind, *parts))
    if len(name) > MAX_NAME or not NAME.match(name):
        raise InvalidArgument(f"cannot name a StorPool object after {parts!r}: invalid characters")
    return name


def probe_volume_name(pool_uuid: str) -> str:
    """The probe volume that tells which cluster a pool's endpoint is (deleted at once)."""
    return _name("probe", pool_uuid)


def volume_name(volume_uuid: str) -> str:
    return _name("vol", volume_uuid)


def migrated_volume_name(volume_uuid: str, pool_uuid: str) -> str:
    """A volume's copy on another pool (the source keeps its name until CloudStack deletes it)."""
    return _name("vol", volume_uuid, "on", pool_uuid)


def snapshot_name(snapshot_uuid: str) -> str:
    return _name("snap", snapshot_uuid)


def delay_delete_name(volume_global_id: str) -> str:
    """The backup snapshot a delete of the volume with this global id takes first: named
    after the volume, so a retried delete finds the backup the first attempt took."""
    return _name("deldel", volume_global_id)


def template_cache_name(template_uuid: str, pool_uuid: str) -> str:
    """The StorPool snapshot that caches a template on one pool."""
    return _name("tmpl", template_uuid, pool_uuid)


def dropped_template_name(global_id: str) -> str:
    """What a dropped template cache snapshot is renamed to before it is deleted: one with
    clones is only marked deleted and would keep its name, so the template could not be cached
    on the pool again until its last clone went."""
    return _name("tmplgone", global_id)


def dropped_temporary_name(global_id: str) -> str:
    """What a temporary snapshot is renamed to before it is deleted: one with children (the
    volume it was taken of) is only marked deleted and would keep its name, so a retry of the
    same operation could not take its temporary again."""
    return _name("tmpgone", global_id)


def template_download_name(template_uuid: str, pool_uuid: str) -> str:
    """The temporary volume a template is downloaded into before it becomes the cache snapshot."""
    return _name("tmpldl", template_uuid, pool_uuid)


def vm_snapshot_name(vm_snapshot_uuid: str, volume_uuid: str) -> str:
    return _name("vmsnap", vm_snapshot_uuid, volume_uuid)


def temporary_snapshot_name(operation_id: str) -> str:
    """A point-in-time snapshot taken for one copy and removed after it."""
    return _name("tmpsnap", operation_id)


def temporary_volume_name(operation_id: str) -> str:
    return _name("tmpvol", operation_id)


def byid_path(global_id: str) -> str:
    return f"{BYID_DIR}/{global_id}"


def api_ref(path_or_name: str, field: str = "path") -> str:
    """The API name of an object from a CloudStack path or a name.

    `/dev/storpool-byid/<gid>` → `~<gid>`; `/dev/storpool/<name>` → `<name>`; `~<gid>` and plain
    names pass through. Anything else is INVALID_ARGUMENT naming the request `field`.
    """
    ref = ref_or_none(path_or_name)
    if ref is None:
        raise InvalidArgument(
            f"{field} {shown(path_or_name)} is not a StorPool device path: expected "
            f"{BYID_DIR}/<globalId>, {NAME_DIR}/<name> or a StorPool name"
        )
    return ref


def ref_or_none(path_or_name: str) -> str | None:
    """Like api_ref, but None for anything that is not StorPool's (other adaptors' paths)."""
    text = (path_or_name or "").strip()
    for prefix, to_ref in ((BYID_DIR + "/", lambda rest: "~" + rest), (NAME_DIR + "/", str)):
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            if prefix == BYID_DIR + "/":
                return to_ref(rest) if GLOBAL_ID.match(rest) else None
            return rest if (NAME.match(rest) or SNAPSHOT_NAME.match(rest)) else None
    if text.startswith("~"):
        return text if GLOBAL_ID.match(text[1:]) else None
    if text.startswith("/"):
        return None
    if text and len(text) <= MAX_NAME and (NAME.match(text) or SNAPSHOT_NAME.match(text)):
        return text
    return None


def global_id_of(ref: str) -> str | None:
    return ref[1:] if ref.startswith("~") and GLOBAL_ID.match(ref[1:]) else None


def tag_value(value: str, what: str) -> str:
    """CloudStack values go into tags; StorPool tag values allow only [A-Za-z0-9_.:-]."""
    if not TAG_VALUE.match(value) or len(value) > MAX_NAME:
        raise InvalidArgument(
            f"{what} {shown(value)} cannot be stored as a StorPool tag: use only "
            "A-Z a-z 0-9 . _ : -"
        )
    return value


def volume_tags(
    uuid: str,
    *,
    vm_uuid: str = "",
    cs: str = CS_VOLUME,
    vc_policy: str = "",
    qos_class: str = "",
    device_id: int | None = None,
) -> dict[str, str]:
    """Tags exactly as the Java plugin writes them on create (empty ones left out)."""
    tags = {"uuid": tag_value(uuid, "uuid"), "cs": cs}
    optional: Mapping[str, str] = {
        "cvm": vm_uuid,
        "vc-policy": vc_policy,
        "qc": qos_class,
        "disk": "" if device_id is None else str(device_id),
    }
    for key, value in optional.items():
        if value:
            tags[key] = tag_value(value, key)
    return tags


def bandwidth_to_storpool(bytes_per_second: int) -> int:
    """StorPool's `bw` is documented as a limit in KB (per second); round up so a limit is never
    tighter than asked."""
    return (bytes_per_second + 1023) // 1024


def bandwidth_from_storpool(limit: int | None) -> int:
    """StorPool's `bw` (KB per second) as bytes per second; 0 for no limit."""
    return (limit or 0) * 1024


def url_ref(ref: str, what: str) -> str:
    """`ref`, checked to be safe as a part of an API URL path (INVALID_ARGUMENT if not)."""
    if not URL_REF.match(ref):
        raise InvalidArgument(f"StorPool: {what}: not a valid object name or ~globalId")
    return ref
