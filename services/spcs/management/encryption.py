"""Encrypted (LUKS) volumes on the management side: which objects are encrypted, their sizes,
and the passphrases handed to a node.

A volume is encrypted when the caller says so (`encryption_format` LUKS, as CloudStack knows
from the volume's passphrase) or when StorPool's tag says so: spcs tags what it encrypts and
the snapshots and clones of it. In StorPool it is the guest's size plus the LUKS header, which
is where the payload starts (the Java plugin's +2 MiB).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from spcs.common import errors, secrets
from spcs.common.secrets import LUKS_HEADER_BYTES, Passphrase
from spcs.storpool import names
from spcs.storpool.records import StorPoolObject
from spcs.v1 import driver_pb2, node_pb2, types_pb2

LUKS = types_pb2.ENCRYPTION_FORMAT_LUKS
TAGS = {names.ENCRYPTION_TAG: names.LUKS}
Described = types_pb2.Volume | types_pb2.Snapshot
T = TypeVar("T")


def check_format(obj: Described, field: str) -> None:
    if obj.encryption_format not in (types_pb2.ENCRYPTION_FORMAT_UNSPECIFIED, LUKS):
        raise errors.InvalidArgument(
            f"{field}.encryption_format {obj.encryption_format} is not a known format; use "
            "ENCRYPTION_FORMAT_LUKS or leave it unset"
        )


def encrypted(obj: Described, found: StorPoolObject | None = None) -> bool:
    """What the caller says, else what StorPool's tags say."""
    return obj.encryption_format == LUKS or (found is not None and names.is_encrypted(found.tags))


def storpool_size(guest_size: int) -> int:
    return guest_size + LUKS_HEADER_BYTES


def guest_size(obj: StorPoolObject) -> int:
    """The size the guest sees (an encrypted object's payload)."""
    return obj.size - LUKS_HEADER_BYTES if names.is_encrypted(obj.tags) else obj.size


def take_key(obj: Described, field: str) -> Passphrase | None:
    """Move the passphrase out of a Volume or Snapshot of a request."""
    check_format(obj, field)
    return secrets.take(obj, "passphrase")


def require(key: Passphrase | None, field: str, what: str) -> Passphrase:
    if key is None:
        raise errors.InvalidArgument(
            f"{what} is encrypted (LUKS): {field}.passphrase is required (the volume's passphrase)"
        )
    return key


def for_node(key: Passphrase) -> node_pb2.Encryption:
    return node_pb2.Encryption(format=LUKS, passphrase=bytes(key.value))


@dataclass(frozen=True)
class CopyKeys:
    """The passphrases of a CopyData request, out of the request for the job's lifetime: the
    source's (to read an encrypted source) and the new volume's. CloudStack gives one volume
    passphrase to both sides of a copy, so either stands in for the other."""

    source: Passphrase | None = None
    destination: Passphrase | None = None

    @classmethod
    def take(cls, request: driver_pb2.CopyDataRequest) -> CopyKeys:
        keys = []
        for side, obj in (("source", request.source), ("destination", request.destination)):
            kind = obj.WhichOneof("object")
            part = obj.volume if kind == "volume" else obj.snapshot if kind == "snapshot" else None
            keys.append(take_key(part, f"{side}.{kind}") if part is not None else None)
        return cls(keys[0], keys[1])

    @property
    def any(self) -> Passphrase | None:
        return self.source or self.destination

    def wiped_after(self, run: Callable[[], T]) -> T:
        with secrets.held(self.source, self.destination):
            return run()
