"""Request validation: a missing or bad field becomes INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import re

from google.protobuf.message import Message

from spcs.common.errors import InvalidArgument

UUID_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SECTOR = 512


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


def identifier(value: str, field: str) -> str:
    """A CloudStack uuid or id: what we use as a key and put into StorPool tags."""
    if not UUID_LIKE.match(value or ""):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid id (1-128 characters of A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit)"
        )
    return value


def size(value: int, field: str) -> int:
    if value <= 0:
        raise InvalidArgument(f"{field} is required and must be > 0 bytes")
    if value % SECTOR:
        raise InvalidArgument(
            f"{field}={value} is not a multiple of 512 bytes; round it up to "
            f"{(value + SECTOR - 1) // SECTOR * SECTOR}"
        )
    return value
