"""Fields marked `secret` in the contract, and the volume passphrases they carry.

A passphrase leaves its request as soon as a handler has read it: `take` moves it out of the
message into a `Passphrase` (one bytearray, wiped when the work is done), so the request a job
keeps, its fingerprint and its log line hold none of it. What Python cannot promise: the bytes
object gRPC decoded the field into lingers, unwiped, until it is freed; everything spcs itself
keeps is wiped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from spcs.common import errors
from spcs.v1 import types_pb2

# Where a LUKS volume's payload starts (cryptsetup's and the data mover's layout): what an
# encrypted volume is larger than the size its guest sees.
LUKS_HEADER_BYTES = 2 << 20


class Passphrase:
    """A passphrase spcs holds: never printed, wiped by `wipe` (or leaving `held`)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self._value = bytearray(value)

    @property
    def value(self) -> bytearray:
        """The bytes, for the data mover (which takes a bytearray and wipes its own copy)."""
        if not self._value:
            raise errors.Internal("a passphrase was used after it was wiped")
        return self._value

    def wipe(self) -> None:
        self._value[:] = bytes(len(self._value))
        self._value.clear()

    def __repr__(self) -> str:
        return "Passphrase(<redacted>)"


def take(message: Message, field: str) -> Passphrase | None:
    """Move the passphrase out of `message` (None when it carries none)."""
    value = getattr(message, field)
    if not value:
        return None
    message.ClearField(field)
    return Passphrase(value)


@contextmanager
def held(*passphrases: Passphrase | None) -> Iterator[None]:
    """Wipe the passphrases when the block ends, however it ends."""
    try:
        yield
    finally:
        for passphrase in passphrases:
            if passphrase is not None:
                passphrase.wipe()


def secret_fields(message: Message) -> Iterator[tuple[Message, FieldDescriptor]]:
    """Every set field marked `secret` in `message` and the messages inside it."""
    for field, value in message.ListFields():
        if field.GetOptions().Extensions[types_pb2.secret]:
            yield message, field
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in value if field.is_repeated else (value,):
                yield from secret_fields(item)


def without_secrets(message: Message) -> Message:
    """A copy of `message` with every secret field cleared (for fingerprints)."""
    copy = type(message)()
    copy.CopyFrom(message)
    for holder, field in list(secret_fields(copy)):
        holder.ClearField(field.name)
    return copy
