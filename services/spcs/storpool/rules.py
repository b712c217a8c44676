"""StorPool's server-side rules: the error envelope, and what the server answers invalidParam for.

One definition shared by the StorPool API emulator (`spcs.emulator`, which re-exports these as
`spcs.emulator.errors` and `spcs.emulator.naming`) and the in-memory fake
(`spcs.storpool.memory`). It imports nothing but the standard library, so the fake uses it
without loading the emulator's server machinery (importing any `spcs.emulator` module runs the
package's ``__init__``, which loads the whole emulator).

Errors: the real API answers ``{"error": {"name", "descr", "transient"}}``. The names below are
the ones real clients branch on (storpool-api.md §1.6); ``notAuthorized`` and ``internalError``
are emulator-specific, because the material does not say what the real server answers for a bad
token or a bug.

Names, tags, sizes and ids follow StorPool's bindings (sptypes.py 7.3.0). Every check raises
`ApiError(invalidParam)` with a human-readable reason, so a handler can validate a whole request
before it changes anything. (What the bindings refuse client-side, before sending, is another
layer: `spcs.storpool.memory` models it.)
"""

from __future__ import annotations

import re
from typing import Any

# ---- the error envelope --------------------------------------------------------------------

OBJECT_DOES_NOT_EXIST = "objectDoesNotExist"
OBJECT_EXISTS = "objectExists"
BUSY = "busy"
INVALID_PARAM = "invalidParam"
INSUFFICIENT_RESOURCES = "insufficientResources"
# Emulator-specific names (no source documents the real ones).
NOT_AUTHORIZED = "notAuthorized"
INTERNAL_ERROR = "internalError"


class ApiError(Exception):
    """An error that becomes a StorPool error envelope on the wire."""

    def __init__(self, name: str, descr: str, *, transient: bool = False) -> None:
        super().__init__(f"{name}: {descr}")
        self.name = name
        self.descr = descr
        self.transient = transient

    def envelope(self) -> dict[str, Any]:
        return {"error": {"name": self.name, "descr": self.descr, "transient": self.transient}}


def not_found(what: str) -> ApiError:
    return ApiError(OBJECT_DOES_NOT_EXIST, f"{what} does not exist")


def exists(what: str) -> ApiError:
    return ApiError(OBJECT_EXISTS, f"{what} already exists")


def busy(descr: str) -> ApiError:
    return ApiError(BUSY, descr)


def invalid(descr: str) -> ApiError:
    return ApiError(INVALID_PARAM, descr)


def no_space(descr: str) -> ApiError:
    return ApiError(INSUFFICIENT_RESOURCES, descr)


# ---- names, tags, sizes and ids ------------------------------------------------------------

SECTOR_SIZE = 512
NAME_MAX = 199  # the bindings reject len >= 200
PLACEMENT_GROUP_NAME_MAX = 127
MAX_CLIENT_ID = 4095
MAX_ATTACHMENT_POS = 1023
OBJECT_SIZE = 32 * 1024 * 1024  # StorPool stores volumes in 32 MiB objects
# The largest volume, snapshot or template size accepted. StorPool documents no maximum (the
# bindings' `Size` has no upper bound), so this is an emulator choice, the same limit spcs
# enforces (`spcs.common.validate.MAX_SIZE`, 100 PiB: the capacity CloudStack's StorPool
# plugin reports for a pool). Larger sizes are `invalidParam`, like any other bad size.
MAX_SIZE = 100 << 50

VOLUME_NAME_RE = re.compile(r"^#?[A-Za-z0-9_\-.:]+$")
SNAPSHOT_NAME_RE = re.compile(r"^\*?[A-Za-z0-9_\-.:@]+$")
GLOBAL_ID_REF_RE = re.compile(r"^~([a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+)$")
GLOBAL_ID_RE = re.compile(r"^[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$")
CLUSTER_ID_RE = re.compile(r"^[a-z0-9]+\.[a-z0-9]+$")
TEMPLATE_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
PLACEMENT_GROUP_NAME_RE = TEMPLATE_NAME_RE
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_\-.:]+$")
TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_\-.:]*$")
NAME_BLACKLIST = frozenset({"list", "status"})
UNLIMITED = "-"


def _check_name(value: Any, what: str, regex: re.Pattern[str], max_len: int) -> str:
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string")
    if not regex.fullmatch(value):
        raise invalid(f'invalid {what} "{value}", must match {regex.pattern}')
    if len(value) > max_len:
        raise invalid(f"{what} is too long, at most {max_len} characters")
    return value


def volume_name(value: Any, what: str = "volume name") -> str:
    name = _check_name(value, what, VOLUME_NAME_RE, NAME_MAX)
    if name in NAME_BLACKLIST:
        raise invalid(f'{what} must not be "{name}"')
    return name


def snapshot_name(value: Any, what: str = "snapshot name") -> str:
    name = _check_name(value, what, SNAPSHOT_NAME_RE, NAME_MAX)
    if name in NAME_BLACKLIST:
        raise invalid(f'{what} must not be "{name}"')
    return name


def template_name(value: Any, what: str = "template name") -> str:
    name = _check_name(value, what, TEMPLATE_NAME_RE, NAME_MAX)
    if name == "list":
        raise invalid(f'{what} must not be "list"')
    return name


def placement_group_name(value: Any, what: str = "placement group name") -> str:
    name = _check_name(value, what, PLACEMENT_GROUP_NAME_RE, PLACEMENT_GROUP_NAME_MAX)
    if name == "list":
        raise invalid(f'{what} must not be "list"')
    return name


def global_id_of_ref(ref: str) -> str | None:
    """The global id in a ``~<gid>`` reference, or None for a plain name."""
    m = GLOBAL_ID_REF_RE.fullmatch(ref)
    return m.group(1) if m else None


def object_ref(value: Any, what: str, *, snapshot: bool) -> str:
    """A ``*NameOrGlobalId``: a volume/snapshot name or ``~<gid>``."""
    if isinstance(value, str) and global_id_of_ref(value) is not None:
        return value
    return snapshot_name(value, what) if snapshot else volume_name(value, what)


def optional_new_name(value: Any, what: str, *, snapshot: bool = False) -> str | None:
    """A name for a new object; absent, None or "" mean anonymous."""
    if value is None or value == "":
        return None
    return snapshot_name(value, what) if snapshot else volume_name(value, what)


def check_snapshot_name(name: str | None, what: str = "snapshot name") -> str | None:
    """Snapshots are created and renamed with VolumeName rules, but listed as SnapshotNames:
    only names valid as both (no leading ``#``) can be shown, so only those are accepted."""
    if name is not None and not SNAPSHOT_NAME_RE.fullmatch(name):
        raise invalid(f'invalid {what} "{name}", a snapshot name can not start with "#"')
    return name


def size(value: Any, what: str = "size") -> int:
    if isinstance(value, bool):
        raise invalid(f"{what} must be an integer")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise invalid(f"{what} must be an integer")
    if value < 1:
        raise invalid(f"invalid {what} {value}, must be positive")
    if value % SECTOR_SIZE:
        raise invalid(f"invalid {what} {value}, must be a multiple of {SECTOR_SIZE}")
    return at_most_max_size(value, what)


def at_most_max_size(value: int, what: str = "size") -> int:
    if value > MAX_SIZE:
        raise invalid(
            f"invalid {what} {value}, must be at most {MAX_SIZE} (100 PiB, the maximum volume size)"
        )
    return value


def limit(value: Any, what: str) -> int | str:
    """A bandwidth or IOPS limit: an integer >= 0 or "-" (unlimited)."""
    if value == UNLIMITED:
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f'{what} must be an integer >= 0 or "-"')
    return value


def replication(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3:
        raise invalid("replication must be 1, 2 or 3")
    return value


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{what} must be true or false")
    return value


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{what} must be an integer")
    return value


def client_id(value: Any) -> int:
    """A client id; os-brick sends SP_OURID as a numeric string, so accept that too."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"invalid client id {value!r}, must be an integer")
    if not 1 <= value <= MAX_CLIENT_ID:
        raise invalid(f"invalid client id {value}, must be between 1 and {MAX_CLIENT_ID}")
    return value


def tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise invalid("tags must be an object")
    out: dict[str, str] = {}
    for key, val in value.items():
        _check_name(key, "tag name", TAG_KEY_RE, NAME_MAX)
        if val is None:
            continue  # null = absent (Java clients)
        _check_name(val, f'value of tag "{key}"', TAG_VALUE_RE, NAME_MAX)
        out[key] = val
    return out


def merge_tags(current: dict[str, str], update: dict[str, str]) -> dict[str, str]:
    """Tag update = merge; an empty value deletes the key (an emulator choice, see
    `spcs.emulator`)."""
    merged = dict(current)
    for key, val in update.items():
        if val == "":
            merged.pop(key, None)
        else:
            merged[key] = val
    return merged


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def cluster_id(value: str) -> str:
    if not CLUSTER_ID_RE.fullmatch(value):
        raise ValueError(f"cluster id {value!r} must look like <location>.<subcluster>, [a-z0-9]+")
    return value


def objects_count(nbytes: int) -> int:
    return -(-nbytes // OBJECT_SIZE)
