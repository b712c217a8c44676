"""The emulated cluster's objects: placement groups, templates, volumes/snapshots, attachments.

A snapshot is a frozen volume, as in StorPool itself (``VolumeFreeze`` turns one
into the other), so both are `Volume` records told apart by ``snapshot``.
Objects reference each other by global id, so renames never leave dangling names.
The whole `State` is plain data: it round-trips through JSON for persistence.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, TypeVar

Limit = int | str  # an integer or "-" (unlimited / unset)


@dataclass
class PlacementGroup:
    id: int
    name: str


@dataclass
class Template:
    id: int
    name: str
    place_all: str
    place_tail: str
    place_head: str
    replication: Limit = "-"
    size: Limit = "-"
    bw: Limit = "-"
    iops: Limit = "-"
    parent: str | None = None  # global id of the snapshot new volumes are based on
    reuse_server: bool | None = None
    # Client-data bytes this template may hold; None = the data filesystem's size.
    capacity: int | None = None


@dataclass
class Volume:
    gid: str
    vid: int
    snapshot: bool
    name: str | None  # None = anonymous, reachable as ~gid only
    size: int
    replication: int
    place_all: str
    place_tail: str
    place_head: str
    template: str  # template name or ""
    parent: str | None  # global id of the parent snapshot
    bw: Limit
    iops: Limit
    created: int
    tags: dict[str, str] = field(default_factory=dict)
    reuse_server: bool | None = None
    # Snapshot-only fields.
    on_volume: str | None = None  # global id of the volume it was taken of
    auto_name: bool = False
    bound: bool = False
    deleted: bool = False
    transient: bool = False
    target_delete_date: int | None = None
    # Multi-location fields (snapshots only): the location names it is exported to, the
    # location a snapshot copied from remote came from, and whether its bytes are still being
    # fetched from there (recoveringFromRemote).
    exports: list[str] = field(default_factory=list)
    remote_location: str | None = None
    recovering: bool = False

    @property
    def ref(self) -> str:
        """The name the API shows: the name, or ``~<gid>`` for anonymous objects."""
        return self.name if self.name is not None else f"~{self.gid}"

    @property
    def kind(self) -> str:
        return "snapshot" if self.snapshot else "volume"


@dataclass
class Attachment:
    client: int
    gid: str
    rights: str  # "rw" | "ro"
    pos: int
    loop: str | None = None  # /dev/loopN backing the device in loop mode
    marked_open: bool = False  # set through the admin endpoint


@dataclass
class State:
    cluster_id: str
    generation: int = 0
    next_vid: int = 1
    next_template_id: int = 1
    next_pg_id: int = 1
    placement_groups: dict[str, PlacementGroup] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict, which deep-copies every value (it was most of the
        # emulator's time per call with a few hundred volumes): the records are flat
        return {
            "cluster_id": self.cluster_id,
            "generation": self.generation,
            "next_vid": self.next_vid,
            "next_template_id": self.next_template_id,
            "next_pg_id": self.next_pg_id,
            "placement_groups": {k: _plain(v) for k, v in self.placement_groups.items()},
            "templates": {k: _plain(v) for k, v in self.templates.items()},
            "volumes": {k: _plain(v) for k, v in self.volumes.items()},
            "attachments": [_plain(a) for a in self.attachments],
        }

    def copy(self) -> State:
        """An independent copy (what a change works on until it commits): each record cloned
        with its dicts (tags), an eighth of the time of a round trip through plain data."""
        return State(
            cluster_id=self.cluster_id,
            generation=self.generation,
            next_vid=self.next_vid,
            next_template_id=self.next_template_id,
            next_pg_id=self.next_pg_id,
            placement_groups={k: _clone(v) for k, v in self.placement_groups.items()},
            templates={k: _clone(v) for k, v in self.templates.items()},
            volumes={k: _clone(v) for k, v in self.volumes.items()},
            attachments=[_clone(a) for a in self.attachments],
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(
            cluster_id=data["cluster_id"],
            generation=data["generation"],
            next_vid=data["next_vid"],
            next_template_id=data["next_template_id"],
            next_pg_id=data["next_pg_id"],
            placement_groups={k: PlacementGroup(**v) for k, v in data["placement_groups"].items()},
            templates={k: Template(**v) for k, v in data["templates"].items()},
            volumes={k: Volume(**v) for k, v in data["volumes"].items()},
            attachments=[Attachment(**a) for a in data["attachments"]],
        )

    # Lookups used by every operation.

    def by_name(self, name: str) -> Volume | None:
        for vol in self.volumes.values():
            if vol.name == name:
                return vol
        return None

    def children(self, gid: str) -> list[Volume]:
        return [v for v in self.volumes.values() if v.parent == gid]

    def attachments_of(self, gid: str) -> list[Attachment]:
        return [a for a in self.attachments if a.gid == gid]

    def attachment(self, client: int, gid: str) -> Attachment | None:
        for att in self.attachments:
            if att.client == client and att.gid == gid:
                return att
        return None


R = TypeVar("R")


@functools.cache
def _container_fields(cls: type) -> tuple[str, ...]:
    return tuple(
        f.name for f in dataclasses.fields(cls) if str(f.type).startswith(("dict[", "list["))
    )


def _clone(record: R) -> R:
    """A record of the same class with the same fields, each dict or list among them (tags,
    exports) copied."""
    cls: type = type(record)
    twin: R = object.__new__(cls)
    fields = twin.__dict__
    fields.update(record.__dict__)
    for name in _container_fields(cls):
        if fields[name] is not None:
            fields[name] = fields[name].copy()
    return twin


def _plain(record: object) -> dict[str, Any]:
    """A record's fields, each dict or list among them copied: nothing shared with `record`."""
    return {k: v.copy() if isinstance(v, dict | list) else v for k, v in vars(record).items()}
