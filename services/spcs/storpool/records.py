"""What StorPool answers about its objects, as spcs uses it.

These are StorPool's objects, not CloudStack's: a `StorPoolVolume` or `StorPoolSnapshot` is
what `VolumesList`/`SnapshotsList` describe, never the `spcs.v1.types_pb2.Volume` of the
contract (`spcs.management.objects` translates between the two).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RUNNING = "running"  # a StorPool service's status (ServicesList) when it runs


@dataclass(frozen=True)
class StorPoolObject:
    """A StorPool volume or snapshot: the fields both kinds have."""

    name: str
    global_id: str
    size: int
    parent: str
    template: str
    iops: int | None
    bw: int | None
    tags: dict[str, str]
    # creationTimestamp (UNIX seconds, 0 = not said); not part of equality: it is bookkeeping
    created: int = field(default=0, compare=False)

    @property
    def ref(self) -> str:
        """How the API addresses it whatever its name: `~<global id>`."""
        return "~" + self.global_id

    @property
    def anonymous(self) -> bool:
        return self.name.startswith("~")

    @property
    def is_snapshot(self) -> bool:
        return False


@dataclass(frozen=True)
class StorPoolVolume(StorPoolObject):
    pass


@dataclass(frozen=True)
class StorPoolSnapshot(StorPoolObject):
    deleted: bool = False
    on_volume: str = ""
    # targetDeleteDate: when StorPool deletes it by itself (UNIX seconds, 0 = never)
    delete_at: int = field(default=0, compare=False)
    # recoveringFromRemote: a copy from another StorPool location whose data is still arriving
    recovering: bool = field(default=False, compare=False)

    @property
    def is_snapshot(self) -> bool:
        return True


@dataclass(frozen=True)
class Attachment:
    volume: str
    snapshot: bool
    client: int
    rights: str
    global_id: str


@dataclass(frozen=True)
class Location:
    """A StorPool location (LocationsList): `id` is the first part of its clusters' ids and
    global ids, `name` what SnapshotExport and SnapshotFromRemote call it."""

    id: str
    name: str


@dataclass(frozen=True)
class TemplateStatus:
    name: str
    capacity: int
    free: int
    volumes: int
    snapshots: int
