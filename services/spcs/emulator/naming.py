"""Name, tag, size and id rules, as StorPool's bindings define them (sptypes.py 7.3.0).

Defined once in `spcs.storpool.rules` (shared with the in-memory fake,
`spcs.storpool.memory`) and re-exported here under the emulator's names. Every check raises
`ApiError(invalidParam)` with a human-readable reason, so a handler can validate a whole request
before it changes anything.

Only the multi-location rules (`location_name`, `global_id` as a request field) are the
emulator's own: the in-memory fake has no locations.
"""

from __future__ import annotations

from typing import Any

from spcs.emulator.errors import invalid
from spcs.storpool.rules import (
    CLUSTER_ID_RE,
    GLOBAL_ID_RE,
    GLOBAL_ID_REF_RE,
    MAX_ATTACHMENT_POS,
    MAX_CLIENT_ID,
    MAX_SIZE,
    NAME_BLACKLIST,
    NAME_MAX,
    OBJECT_SIZE,
    PLACEMENT_GROUP_NAME_MAX,
    PLACEMENT_GROUP_NAME_RE,
    SECTOR_SIZE,
    SNAPSHOT_NAME_RE,
    TAG_KEY_RE,
    TAG_VALUE_RE,
    TEMPLATE_NAME_RE,
    UNLIMITED,
    VOLUME_NAME_RE,
    at_most_max_size,
    base36,
    boolean,
    check_snapshot_name,
    client_id,
    cluster_id,
    global_id_of_ref,
    integer,
    limit,
    merge_tags,
    object_ref,
    objects_count,
    optional_new_name,
    placement_group_name,
    replication,
    size,
    snapshot_name,
    tags,
    template_name,
    volume_name,
)

# RemoteLocationName (sptypes.py): the volume-name pattern, shorter than 64 characters.
LOCATION_NAME_MAX = 63


def location_name(value: Any, what: str = "location name") -> str:
    """A location's human-readable name (a RemoteLocationName)."""
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string")
    if not VOLUME_NAME_RE.fullmatch(value):
        raise invalid(f'invalid {what} "{value}", must match {VOLUME_NAME_RE.pattern}')
    if len(value) > LOCATION_NAME_MAX:
        raise invalid(f"{what} is too long, at most {LOCATION_NAME_MAX} characters")
    if value == "list":
        raise invalid(f'{what} must not be "list"')
    return value


def global_id(value: Any, what: str = "global id") -> str:
    """A GlobalVolumeId: ``<location>.<subcluster>.<id>``."""
    if not isinstance(value, str) or not GLOBAL_ID_RE.fullmatch(value):
        raise invalid(f"invalid {what} {value!r}, must look like <location>.<cluster>.<id>")
    return value


__all__ = [
    "CLUSTER_ID_RE",
    "GLOBAL_ID_RE",
    "GLOBAL_ID_REF_RE",
    "LOCATION_NAME_MAX",
    "MAX_ATTACHMENT_POS",
    "MAX_CLIENT_ID",
    "MAX_SIZE",
    "NAME_BLACKLIST",
    "NAME_MAX",
    "OBJECT_SIZE",
    "PLACEMENT_GROUP_NAME_MAX",
    "PLACEMENT_GROUP_NAME_RE",
    "SECTOR_SIZE",
    "SNAPSHOT_NAME_RE",
    "TAG_KEY_RE",
    "TAG_VALUE_RE",
    "TEMPLATE_NAME_RE",
    "UNLIMITED",
    "VOLUME_NAME_RE",
    "at_most_max_size",
    "base36",
    "boolean",
    "check_snapshot_name",
    "client_id",
    "cluster_id",
    "global_id",
    "global_id_of_ref",
    "integer",
    "limit",
    "location_name",
    "merge_tags",
    "object_ref",
    "objects_count",
    "optional_new_name",
    "placement_group_name",
    "replication",
    "size",
    "snapshot_name",
    "tags",
    "template_name",
    "volume_name",
]
