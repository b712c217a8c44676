"""Request validation: a missing or bad field becomes INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import re

from google.protobuf.message import Message

from spcs.common.errors import InvalidArgument

UUID_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SECTOR = 512
# The largest volume spcs asks StorPool for. Neither StorPool's bindings (7.3.0: `Size` is "a
# positive integer divisible by 512", no upper bound) nor its public documentation state a
# maximum, so this is a conservative choice: 100 PiB is the capacity CloudStack's StorPool
# plugin reports for every StorPool pool (`StorPoolStoragePool.getCapacity()` in
# apache/cloudstack), so no volume of a StorPool pool can be larger in CloudStack's eyes; it
# is far below 2^63 (Java's long, QEMU's and Linux's signed 64-bit offsets) and below 2^60.
MAX_SIZE = 100 << 50
MAX_SIZE_TEXT = f"{MAX_SIZE} bytes (100 PiB)"


def field_value(message: Message, dotted: str) -> object:
    value: object = message
    for part in dotted.split("."):
        assert isinstance(value, Message)
        field = value.DESCRIPTOR.fields_by_name[part]
        if field.message_type is not None and not field.is_repeated and not value.HasField(part):
            return None
        value = getattr(value, part)
    return value


def require(message: Message, *fields: str) -> None:
    """Every dotted field must be set (non-empty string, non-zero number, present message)."""
    for dotted in fields:
        value = field_value(message, dotted)
        if (
            value is None
            or value == ""
            or value == 0
            or (
                hasattr(value, "__len__")
                and not isinstance(value, (str, Message))
                and not len(value)
            )
        ):
            raise InvalidArgument(f"{dotted} is required")


def shown(value: str, limit: int = 80) -> str:
    """A caller's value as an error message quotes it: at most `limit` characters of it."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def identifier(value: str, field: str) -> str:
    """A CloudStack uuid or id: what we use as a key and put into StorPool tags."""
    if not UUID_LIKE.match(value or ""):
        raise InvalidArgument(
            f"{field} {shown(value)} is not a valid id (1-128 characters of A-Z a-z 0-9 . _ : "
            "-, starting with a letter or digit)"
        )
    return value


def size_at_most_max(value: int, field: str) -> int:
    """A size (0 allowed: "not given") no larger than StorPool's maximum volume size."""
    if value > MAX_SIZE:
        raise InvalidArgument(
            f"{field}={value} is larger than the maximum StorPool volume size, "
            f"{MAX_SIZE_TEXT}; ask for at most that"
        )
    return value


def size(value: int, field: str) -> int:
    if value <= 0:
        raise InvalidArgument(f"{field} is required and must be > 0 bytes")
    size_at_most_max(value, field)
    if value % SECTOR:
        raise InvalidArgument(
            f"{field}={value} is not a multiple of 512 bytes; round it up to "
            f"{(value + SECTOR - 1) // SECTOR * SECTOR}"
        )
    return value
