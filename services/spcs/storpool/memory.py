"""An in-memory StorPool for fast tests: `MemoryStorPool`, a `StorPoolClient` without HTTP.

It answers what `spcs.storpool.api.StorPoolApi` answers against the StorPool API emulator
(`spcs.emulator`): the same records, the same typed errors (`spcs.storpool.errors`, same
`sp_name`, messages "StorPool: <what>: <desc> (<name>)" with the facade's <what>), and the
plain `errors.InvalidArgument` the official bindings' client-side checks cause (names, sizes,
tags, limits, client ids). It models what the emulator models and the facade exposes: volumes
and snapshots (one namespace, `~<cluster id>.<base36 n>` refs), parents and ``baseOn``
clones (through a transient snapshot ``*<source>@<n>``), templates (capacity-checked), tags
(an update merges, ``""`` removes a key), iops/bw limits (``"-"`` = unlimited), renames,
``shrinkOk``, reverts, snapshots that are marked ``deleted`` while they still have children,
bound and dated snapshots, group snapshots, attachments per client, the volume space
(`space`, a `SpaceCache` kept true like the facade's), the cluster id and client states.
There are no data bytes and no devices; "allocated bytes" are a number per object, changed
only by `write` (and carried along by snapshots, clones, reverts and shrinks as the
emulator's sparse data files carry them).

The behaviour suite ``tests/storpool/test_client_behaviour.py`` runs against this and against
`StorPoolApi` + emulator, which keeps the two in step; the emulator is the reference.

Test controls (not part of `StorPoolClient`):

* ``calls``: a `Counter` of StorPool API commands this client sent, by the emulator's command
  names (``VolumeCreate``, ``VolumesReassignWait``...), counted like the emulator's
  `request_counts()`: a request the bindings refuse client-side is not sent, so not counted;
  one StorPool refuses is. Clear it with ``calls.clear()``.
* ``fail_next(command, error, desc=..., transient=..., times=...)``: the next call(s) of that
  command answer StorPool error `error` (``busy``, ``objectDoesNotExist``...) and change
  nothing; ``transient=True``: StorPool kept answering a transient error until the facade's
  retries ran out (`errors.Unavailable`).
* ``mark_open(client, ref, snapshot=..., open=...)``: as `Emulator.mark_open`: a process on
  that client holds the attachment open, so a non-forced detach is ``busy``.
* ``write(ref, nbytes)``: the first `nbytes` of a volume now hold data; allocated bytes (as
  VolumesSpace's ``spaceUsed`` and the templates' capacity checks count them) are that in
  whole ``block_size`` blocks, as the emulator's data files on a 4 KiB-block filesystem.
* ``set_client_running(client, running)``: configure a client (or stop/start one);
  `client_running` answers it. Attach/detach only need the client to be configured.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spcs.common import errors
from spcs.common.validate import MAX_SIZE, MAX_SIZE_TEXT
from spcs.storpool import errors as sp_errors
from spcs.storpool import names, rules
from spcs.storpool.records import (
    RUNNING,
    Attachment,
    Location,
    StorPoolSnapshot,
    StorPoolVolume,
    TemplateStatus,
)
from spcs.storpool.rules import MAX_ATTACHMENT_POS, MAX_CLIENT_ID, SECTOR_SIZE, UNLIMITED
from spcs.storpool.space import SpaceCache, VolumeSpace

if TYPE_CHECKING:
    from spcs.storpool.client import StorPoolClient

# The StorPool API commands this client sends (the names `calls` and `fail_next` use).
COMMANDS = frozenset(
    {
        "AttachmentsList",
        "LocationsList",
        "ServicesList",
        "Snapshot",
        "SnapshotDelete",
        "SnapshotExport",
        "SnapshotFromRemote",
        "SnapshotReconcile",
        "SnapshotUnexport",
        "SnapshotUpdate",
        "SnapshotsList",
        "Volume",
        "VolumeCreate",
        "VolumeDelete",
        "VolumeRevert",
        "VolumeSnapshot",
        "VolumeTemplateDescribe",
        "VolumeTemplatesStatus",
        "VolumeUpdate",
        "VolumesGroupSnapshot",
        "VolumesList",
        "VolumesReassign",
        "VolumesReassignWait",
        "VolumesSpace",
    }
)

DEFAULT_REPLICATION = 3

# The server's checks (what StorPool, and so the emulator, answers invalidParam for) and its
# error answers are `spcs.storpool.rules`, the emulator's own definitions; the typed errors
# and messages the facade makes of those answers are `spcs.storpool.errors.answered`.

# ---- the bindings' client-side checks (storpool.sptypes 7.3.0): patterns and names --------

_B_VOLUME_NAME = r"^\#?[A-Za-z0-9_\-.:]+$"
_B_VOLUME_REF = r"^\#?[A-Za-z0-9_\-.:]+$|^~[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$"
_B_SNAPSHOT_NAME = r"^\*?[A-Za-z0-9_\-.:@]+$"
_B_SNAPSHOT_REF = r"^\*?[A-Za-z0-9_\-.:@]+$|^~[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$"
_B_TEMPLATE_NAME = r"^[A-Za-z0-9_\-]+$"
_B_GROUP_NAME = r"^[A-Za-z0-9_\-]+$"
_B_TAG_NAME = r"^[A-Za-z0-9_\-.:]+$"
_B_TAG_VALUE = r"^[A-Za-z0-9_\-.:]*$"
_B_NAMES = ("list", "status")
_B_TAGS = "{VolumeTagName: VolumeTagValue}"
_B_REASSIGN = "[Either(VolumeReassignDesc, SnapshotReassignDesc)]"


class _Refused(Exception):
    """The bindings refused the request client-side: it never reaches StorPool."""


# ---- bindings-side validators --------------------------------------------------------------


def _b_name(
    arg: str, value: object, pattern: str, blacklist: tuple[str, ...] = _B_NAMES, size: int = 200
) -> str:
    if value is None:
        raise _Refused(f"No {arg} specified")
    name = str(value)
    if not re.match(pattern, name):
        raise _Refused(f'Invalid {arg} "{name}". Must match {pattern}')
    if name in blacklist:
        raise _Refused(f"{arg} must not be in {list(blacklist)}")
    if len(name) >= size:
        raise _Refused(f"{arg} is too long. Max allowed is {size - 1}")
    return name


def _b_size(arg: str, value: Any) -> int:
    try:
        size = int(value)
    except ValueError:
        raise _Refused(f"Non-numeric {arg}: {value}") from None
    except TypeError as error:
        raise _Refused(str(error)) from None
    if size < 1:
        raise _Refused(f"Invalid {arg} {size}. Must be positive")
    if size % SECTOR_SIZE:
        raise _Refused(f"Invalid {arg} {size}. Must be a multiple of {SECTOR_SIZE}")
    return size


def _b_limit(arg: str, value: Any) -> int | str:
    if value == UNLIMITED:
        return UNLIMITED
    try:
        limit = int(value)
    except ValueError:
        raise _Refused(f"Non-numeric {arg}: {value}") from None
    except TypeError as error:
        raise _Refused(str(error)) from None
    if limit < 0:
        raise _Refused(f"Ivalid {arg}. Must be at least 0")  # sic, the bindings' text
    return limit


def _b_int_range(arg: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _Refused(f"Invalid {arg}. Must be an integer") from None
    except TypeError as error:
        raise _Refused(str(error)) from None
    if not low <= number <= high:
        raise _Refused(f"Invalid {arg}. Must be between {low} and {high}")
    return number


def _b_int(value: Any) -> int:
    try:
        return int(value)
    except (ValueError, TypeError) as error:
        raise _Refused(str(error)) from None


def _b_tags(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _Refused(f"{_B_TAGS}: 'tags' must be a mapping")
    out: dict[str, str] = {}
    first: _Refused | None = None
    for key, val in value.items():
        try:
            name = _b_name("VolumeTagName", key, _B_TAG_NAME, ())
            out[name] = _b_name("VolumeTagValue", val, _B_TAG_VALUE, ())
        except _Refused as refused:
            first = first or refused
    if first is not None:
        raise _Refused(f"{_B_TAGS}: {first}")
    return out


class _Desc:
    """A request body as a bindings JsonObject checks it: known fields only, in the order the
    type declares them, the first failure reported as "<Type>: <reason>"."""

    def __init__(self, name: str, body: Mapping[str, Any]) -> None:
        self.name, self.body = name, body
        self.out: dict[str, Any] = {}
        self.first: _Refused | None = None

    def check(self, key: str, validator: Callable[[Any], Any]) -> None:
        value = self.body.get(key)
        if value is None:
            return
        try:
            self.out[key] = validator(value)
        except _Refused as refused:
            self.first = self.first or refused

    def policy(self) -> None:
        """VolumePolicyDesc's fields, which come first in every type derived from it."""
        for key in ("placeAll", "placeTail", "placeHead"):
            self.check(
                key, lambda v: _b_name("PlacementGroupName", v, _B_GROUP_NAME, ("list",), 128)
            )
        self.check("replication", lambda v: _b_int_range("Replication", v, 1, 3))
        self.check("bw", lambda v: _b_limit("Bandwidth", v))
        self.check("iops", lambda v: _b_limit("IOPS", v))
        self.check("reuseServer", bool)
        self.check("tags", _b_tags)

    def done(self) -> dict[str, Any]:
        if self.first is not None:
            raise _Refused(f"{self.name}: {self.first}")
        return self.out


def _b_volume_ref(ref: object) -> str:
    return _b_name("VolumeNameOrGlobalId", ref, _B_VOLUME_REF)


def _b_snapshot_ref(ref: object) -> str:
    return _b_name("SnapshotNameOrGlobalId", ref, _B_SNAPSHOT_REF)


def _b_reassign(items: list[dict[str, Any]]) -> None:
    """VolumeReassignDesc / SnapshotReassignDesc: any failure is "does not match any type"."""
    for item in items:
        try:
            if "volume" in item:
                _b_volume_ref(item["volume"])
            else:
                _b_snapshot_ref(item["snapshot"])
            for key in ("ro", "rw", "detach"):
                value = item.get(key)
                if isinstance(value, list):
                    for cid in value:
                        _b_int_range("ClientID", cid, 1, MAX_CLIENT_ID)
        except _Refused:
            raise _Refused(f"{_B_REASSIGN}: The value does not match any type") from None


def _b_reassign_wait(items: list[dict[str, Any]], timeout: object) -> int:
    """VolumesReassignWaitDesc: the reassign list, then attachTimeout."""
    try:
        _b_reassign(items)
        return _b_int(timeout)
    except _Refused as refused:
        raise _Refused(f"VolumesReassignWaitDesc: {refused}") from None


def _limit(value: int | str) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---- the model -------------------------------------------------------------------------------


@dataclass
class _Template:
    id: int
    name: str
    capacity: int
    group: str
    replication: int | str = DEFAULT_REPLICATION
    size: int | str = UNLIMITED
    bw: int | str = UNLIMITED
    iops: int | str = UNLIMITED


@dataclass
class _Object:
    """A volume or a snapshot (a frozen volume), as the emulator keeps both."""

    gid: str
    vid: int
    snapshot: bool
    name: str | None  # None: anonymous, reachable as ~gid only
    size: int
    template: str
    parent: str | None  # gid of the parent snapshot
    iops: int | str
    bw: int | str
    policy: dict[str, Any]  # placement, replication, reuseServer: kept, not shown
    tags: dict[str, str] = field(default_factory=dict)
    data: int = 0  # bytes from offset 0 that hold data (what `write` wrote, or copies)
    on_volume: str | None = None
    bound: bool = False
    deleted: bool = False
    transient: bool = False
    delete_date: int | None = None
    created: int = 0
    exports: set[str] = field(default_factory=set)  # location names that may read it
    remote_location: str | None = None  # a copy of a snapshot of that location

    @property
    def ref(self) -> str:
        return self.name if self.name is not None else f"~{self.gid}"

    @property
    def kind(self) -> str:
        return "snapshot" if self.snapshot else "volume"


@dataclass
class _Attachment:
    client: int
    gid: str
    rights: str
    pos: int
    open: bool = False


@dataclass
class _Fault:
    name: str
    desc: str
    transient: bool


class MemoryStorPool:
    """An in-memory StorPool cluster behind the `StorPoolClient` interface. Thread-safe.

    Args:
        templates: template name -> capacity in bytes (None: `default_capacity`), or names;
            as the emulator's ``templates=``, each with replication 3 and no default size.
        clients: the configured client ids (all running), or client id -> running.
        cluster_id: ``<location>.<subcluster>``; global ids are ``<cluster_id>.<base36 n>``.
        endpoint: what `endpoint` says (the facade's ``host:port``).
        default_capacity: the capacity of templates configured without one.
        block_size: allocation unit of written data (the emulator's: its filesystem's block).
        placement_group: the placement group templates and volumes use.
        clock: seconds since the epoch, for snapshots' targetDeleteDate.
        location_name: its StorPool location's name (default: the location id, the first
            part of `cluster_id`).
        locations: the registry of the locations it can exchange snapshots with (shared by
            those clients); None = one of its own. A snapshot from another location arrives
            at once: nothing here moves bytes, so there is no recovery to wait for.
    """

    def __init__(
        self,
        *,
        templates: Mapping[str, int | None] | Iterable[str] | None = None,
        clients: Mapping[int, bool] | Iterable[int] = (),
        cluster_id: str = "emu.a",
        endpoint: str = "memory",
        default_capacity: int = 1 << 40,
        block_size: int = 4096,
        placement_group: str = "default",
        clock: Callable[[], float] = time.time,
        location_name: str | None = None,
        locations: dict[str, MemoryStorPool] | None = None,
    ) -> None:
        if not rules.CLUSTER_ID_RE.fullmatch(cluster_id):
            raise ValueError(f"cluster id {cluster_id!r} must look like <location>.<subcluster>")
        self.endpoint = endpoint
        self.cluster_id = cluster_id
        self._join(cluster_id.split(".", 1)[0], location_name, locations)
        self.calls: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._clock = clock
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self._block = block_size
        self._placement_group = placement_group
        if templates is None:
            templates = {}
        elif not isinstance(templates, Mapping):
            templates = dict.fromkeys(templates)
        self._templates: dict[str, _Template] = {}
        for number, (name, capacity) in enumerate(templates.items(), start=1):
            if not rules.TEMPLATE_NAME_RE.fullmatch(name) or name == "list":
                raise ValueError(f"invalid template name {name!r}")
            if capacity is not None and capacity < 0:
                raise ValueError(f"capacity of template {name} must be >= 0")
            self._templates[name] = _Template(
                number, name, default_capacity if capacity is None else capacity, placement_group
            )
        if not isinstance(clients, Mapping):
            clients = dict.fromkeys(clients, True)
        self._clients: dict[int, bool] = {}
        for cid, running in clients.items():
            self.set_client_running(cid, running)
        self._objects: dict[str, _Object] = {}  # by gid, in creation (vid) order
        self._names: dict[str, str] = {}  # name -> gid
        self._attachments: list[_Attachment] = []
        self._next_vid = 1
        self._faults: dict[str, list[_Fault]] = {}
        self.space = SpaceCache(self._rows)

    def _join(
        self, location_id: str, name: str | None, locations: dict[str, MemoryStorPool] | None
    ) -> None:
        self.location_id = location_id
        self.location_name = name or location_id
        self.location_registry = locations if locations is not None else {}
        if self.location_name in self.location_registry:
            raise ValueError(f"location {self.location_name} is in the registry already")
        self.location_registry[self.location_name] = self

    # ---- test controls ----------------------------------------------------------------------

    def fail_next(
        self,
        command: str,
        error: str,
        *,
        desc: str | None = None,
        transient: bool = False,
        times: int = 1,
    ) -> None:
        """The next `times` requests of `command` answer StorPool error `error` and change
        nothing (transient: as if StorPool kept answering it until the retries ran out)."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(sorted(COMMANDS))}")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = _Fault(error, desc or f"{error} (injected by the test)", transient)
        with self._lock:
            self._faults.setdefault(command, []).extend([fault] * times)

    def mark_open(
        self, client: int, ref: str, *, snapshot: bool = False, open: bool = True
    ) -> None:
        """Pretend a process on `client` holds the attachment open (or stop pretending)."""
        with self._lock:
            obj = self._resolve_for_test(ref, snapshot=snapshot)
            att = self._attachment(client, obj.gid)
            if att is None:
                raise ValueError(f"{obj.kind} {obj.ref} is not attached to client {client}")
            att.open = open

    def write(self, ref: str, nbytes: int) -> None:
        """The first `nbytes` of volume `ref` now hold data: its allocated bytes grow to that."""
        with self._lock:
            obj = self._resolve_for_test(ref, snapshot=False)
            if not 0 <= nbytes <= obj.size:
                raise ValueError(f"volume {obj.ref} is {obj.size} bytes; can not write {nbytes}")
            obj.data = max(obj.data, nbytes)

    def set_client_running(self, client: int, running: bool = True) -> None:
        """Configure `client` (if new) and set whether its StorPool client service runs."""
        if isinstance(client, bool) or not 1 <= client <= MAX_CLIENT_ID:
            raise ValueError(f"client id {client!r} must be between 1 and {MAX_CLIENT_ID}")
        with self._lock:
            self._clients[client] = running

    def _resolve_for_test(self, ref: str, *, snapshot: bool) -> _Object:
        try:
            key = "snapshot" if snapshot else "volume"
            return self._checked_resolve(ref, key, snapshot=snapshot)
        except rules.ApiError as answer:
            raise ValueError(answer.descr) from None

    # ---- the call machinery -------------------------------------------------------------------

    @contextmanager
    def _call(self, what: str) -> Iterator[Callable[[str], None]]:
        """One facade call, yielding `send(command)` for each API request it makes; bindings
        refusals and StorPool answers become the facade's errors."""
        with self._lock:
            try:
                yield self._send
            except _Refused as refused:
                raise errors.InvalidArgument(f"{what}: {refused}") from None
            except rules.ApiError as answer:
                raise self._domain_error(what, answer) from None

    def _send(self, command: str) -> None:
        """A request reaches StorPool: count it, answer an injected fault, expire snapshots."""
        self.calls[command] += 1
        pending = self._faults.get(command)
        if pending:
            fault = pending.pop(0)
            raise rules.ApiError(fault.name, fault.desc, transient=fault.transient)
        self._expire_snapshots()

    def _domain_error(self, what: str, answer: rules.ApiError) -> errors.SpcsError:
        if answer.transient:
            return sp_errors.kept_transient(self.endpoint, what, answer.name, answer.descr)
        return sp_errors.answered(self.endpoint, what, answer.name, answer.descr, 500)

    # ---- model helpers ------------------------------------------------------------------------

    def _resolve(self, ref: str, *, snapshot: bool) -> _Object:
        kind = "snapshot" if snapshot else "volume"
        gid = rules.global_id_of_ref(ref) or self._names.get(ref)
        obj = self._objects.get(gid) if gid is not None else None
        if obj is None or obj.snapshot != snapshot:
            raise rules.not_found(f"{kind} {ref}")
        return obj

    def _checked_resolve(self, ref: object, what: str, *, snapshot: bool) -> _Object:
        """`_resolve` of a ref the bindings did not check: checked as the server does first."""
        return self._resolve(rules.object_ref(ref, what, snapshot=snapshot), snapshot=snapshot)

    def _template(self, name: str) -> _Template:
        tmpl = self._templates.get(name)
        if tmpl is None:
            raise rules.not_found(f"template {name}")
        return tmpl

    def _check_name_free(self, name: str | None) -> None:
        if name is not None and name in self._names:
            raise rules.exists(f"an object named {name}")

    def _check_client(self, cid: int) -> None:
        if cid not in self._clients:
            raise rules.invalid(f"No such client registered: {cid}")

    def _check_space(self, template: str) -> None:
        tmpl = self._templates.get(template) if template else None
        if tmpl is not None and self._template_used(template) >= tmpl.capacity:
            raise rules.no_space(f"template {template} is full ({tmpl.capacity} bytes)")

    def _template_used(self, template: str) -> int:
        return sum(self._allocated(o) for o in self._objects.values() if o.template == template)

    def _allocated(self, obj: _Object) -> int:
        """Allocated bytes: the data in whole blocks of the emulator's data filesystem."""
        return -(-obj.data // self._block) * self._block

    def _new_gid(self) -> tuple[str, int]:
        vid = self._next_vid
        self._next_vid += 1
        return f"{self.cluster_id}.{rules.base36(vid)}", vid

    def _add(self, obj: _Object) -> None:
        obj.created = obj.created or int(self._clock())
        self._objects[obj.gid] = obj
        if obj.name is not None:
            self._names[obj.name] = obj.gid

    def _remove(self, obj: _Object) -> None:
        del self._objects[obj.gid]
        if obj.name is not None:
            self._names.pop(obj.name, None)

    def _rename(self, obj: _Object, new: str | None) -> None:
        if new == obj.name:
            return
        self._check_name_free(new)
        if obj.name is not None:
            self._names.pop(obj.name, None)
        obj.name = new
        if new is not None:
            self._names[new] = obj.gid

    def _children(self, gid: str) -> bool:
        return any(o.parent == gid for o in self._objects.values())

    def _attachments_of(self, gid: str) -> list[_Attachment]:
        return [a for a in self._attachments if a.gid == gid]

    def _attachment(self, client: int, gid: str) -> _Attachment | None:
        for att in self._attachments:
            if att.client == client and att.gid == gid:
                return att
        return None

    def _ref_of(self, gid: str | None) -> str:
        obj = self._objects.get(gid) if gid else None
        return obj.ref if obj is not None else ""

    def _collect_snapshots(self) -> None:
        """Deleted, bound and transient snapshots go away once childless and detached."""
        while True:
            parents = {o.parent for o in self._objects.values()}
            attached = {a.gid for a in self._attachments}
            doomed = [
                o
                for o in self._objects.values()
                if o.snapshot
                and (o.deleted or o.bound or o.transient)
                and o.gid not in parents
                and o.gid not in attached
            ]
            if not doomed:
                return
            for obj in doomed:
                self._remove(obj)

    def _delete_snapshot(self, snap: _Object) -> None:
        if self._children(snap.gid):
            snap.deleted = True
            return
        self._remove(snap)
        self._collect_snapshots()

    def _expire_snapshots(self) -> None:
        now = int(self._clock())
        attached = {a.gid for a in self._attachments}
        due = [
            o
            for o in self._objects.values()
            if o.snapshot and o.delete_date and o.delete_date <= now and o.gid not in attached
        ]
        for snap in due:
            if snap.gid in self._objects:  # not gone with an earlier one
                snap.delete_date = None
                self._delete_snapshot(snap)

    def _delete_date(self, body: Mapping[str, Any]) -> tuple[bool, int | None]:
        now = int(self._clock())
        if "targetDeleteDate" in body and "deleteAfter" in body:
            raise rules.invalid("give targetDeleteDate or deleteAfter, not both")
        if "targetDeleteDate" in body:
            date = rules.integer(body["targetDeleteDate"], "targetDeleteDate")
            if date and date < now:
                raise rules.invalid("targetDeleteDate can not be in the past")
            return True, date or None
        if "deleteAfter" in body:
            after = rules.integer(body["deleteAfter"], "deleteAfter")
            if after < 0:
                raise rules.invalid("deleteAfter must be >= 0")
            return True, now + after if after else None
        return False, None

    def _policy(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The policy fields of a request, checked as the server does."""
        out: dict[str, Any] = {}
        for key in ("placeAll", "placeTail", "placeHead"):
            if key in body:
                group = rules.placement_group_name(body[key], key)
                if group != self._placement_group:
                    raise rules.not_found(f"placement group {group}")
                out[key] = group
        if "replication" in body:
            out["replication"] = rules.replication(body["replication"])
        for key in ("bw", "iops"):
            if key in body:
                out[key] = rules.limit(body[key], key)
        if "reuseServer" in body:
            out["reuseServer"] = rules.boolean(body["reuseServer"], "reuseServer")
        return out

    def _of_template(self, tmpl: _Template, *, for_new: bool) -> dict[str, Any]:
        out: dict[str, Any] = {key: tmpl.group for key in ("placeAll", "placeTail", "placeHead")}
        if isinstance(tmpl.replication, int):
            out["replication"] = tmpl.replication
        elif for_new:
            out["replication"] = DEFAULT_REPLICATION
        if for_new or tmpl.bw != UNLIMITED:
            out["bw"] = tmpl.bw
        if for_new or tmpl.iops != UNLIMITED:
            out["iops"] = tmpl.iops
        return out

    @staticmethod
    def _of_object(obj: _Object) -> dict[str, Any]:
        return {**obj.policy, "bw": obj.bw, "iops": obj.iops}

    def _defaults(self) -> dict[str, Any]:
        return {
            "placeAll": self._placement_group,
            "placeTail": self._placement_group,
            "placeHead": self._placement_group,
            "replication": DEFAULT_REPLICATION,
            "bw": UNLIMITED,
            "iops": UNLIMITED,
        }

    @staticmethod
    def _apply(obj: _Object, fields: Mapping[str, Any]) -> None:
        for key, value in fields.items():
            if key == "bw":
                obj.bw = value
            elif key == "iops":
                obj.iops = value
            else:
                obj.policy[key] = value

    def _new_object(
        self, *, snapshot: bool, name: str | None, size: int, template: str, fields: dict[str, Any]
    ) -> _Object:
        gid, vid = self._new_gid()
        obj = _Object(
            gid=gid,
            vid=vid,
            snapshot=snapshot,
            name=name,
            size=size,
            template=template,
            parent=None,
            iops=UNLIMITED,
            bw=UNLIMITED,
            policy={},
        )
        self._apply(obj, fields)
        return obj

    def _take_snapshot(
        self,
        vol: _Object,
        name: str | None,
        tags: dict[str, str],
        *,
        bind: bool = False,
        delete_date: int | None = None,
    ) -> _Object:
        snap = self._new_object(
            snapshot=True,
            name=name,
            size=vol.size,
            template=vol.template,
            fields=self._of_object(vol),
        )
        snap.parent, snap.tags, snap.data = vol.parent, tags, vol.data
        snap.on_volume, snap.bound, snap.delete_date = vol.gid, bind, delete_date
        self._add(snap)
        vol.parent = snap.gid
        return snap

    # ---- records ------------------------------------------------------------------------------

    def _record_fields(self, obj: _Object) -> dict[str, Any]:
        """The fields volume and snapshot records share."""
        return {
            "name": obj.ref,
            "global_id": obj.gid,
            "size": obj.size,
            "parent": self._ref_of(obj.parent),
            "template": obj.template,
            "iops": _limit(obj.iops),
            "bw": _limit(obj.bw),
            "tags": dict(obj.tags),
            "created": obj.created,
        }

    def _volume_record(self, obj: _Object) -> StorPoolVolume:
        return StorPoolVolume(**self._record_fields(obj))

    def _snapshot_record(self, obj: _Object) -> StorPoolSnapshot:
        origin = self._objects.get(obj.on_volume) if obj.on_volume else None
        return StorPoolSnapshot(
            **self._record_fields(obj),
            deleted=obj.deleted,
            on_volume=origin.ref if origin is not None and not origin.snapshot else "-",
            delete_at=obj.delete_date or 0,
        )

    def _listed(self, *, snapshot: bool) -> list[_Object]:
        return sorted(
            (o for o in self._objects.values() if o.snapshot == snapshot), key=lambda o: o.vid
        )

    # ---- volumes ------------------------------------------------------------------------------

    def volume(self, ref: str) -> StorPoolVolume:
        with self._call(f"volume {ref}") as send:
            _b_volume_ref(ref)
            send("Volume")
            return self._volume_record(self._resolve(ref, snapshot=False))

    def volume_or_none(self, ref: str) -> StorPoolVolume | None:
        try:
            return self.volume(ref)
        except errors.NotFound:
            return None

    def volumes(self) -> list[StorPoolVolume]:
        with self._call("list volumes") as send:
            send("VolumesList")
            return [self._volume_record(o) for o in self._listed(snapshot=False)]

    def volume_create(
        self,
        *,
        name: str,
        size: int | None = None,
        template: str | None = None,
        parent: str | None = None,
        base_on: str | None = None,
        iops: int | None = None,
        bw: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        what = f"create volume {name}"
        _check_size(what, size)
        request = {
            "name": name,
            "size": size,
            "template": template,
            "parent": parent,
            "baseOn": base_on,
            "iops": iops,
            "bw": bw,
            "tags": dict(tags or {}) or None,
        }
        with self._call(what) as send:
            desc = _Desc("VolumeCreateDesc", request)
            desc.policy()
            desc.check("name", lambda v: _b_name("VolumeName", v, _B_VOLUME_NAME))
            desc.check("size", lambda v: _b_size("Size", v))
            desc.check("parent", _b_snapshot_ref)
            desc.check(
                "template", lambda v: _b_name("VolumeTemplateName", v, _B_TEMPLATE_NAME, ("list",))
            )
            desc.check("baseOn", _b_volume_ref)
            body = desc.done()
            send("VolumeCreate")
            return self._create(body)

    def _create(self, b: dict[str, Any]) -> str:
        new_name = rules.optional_new_name(b.get("name"), "volume name")
        self._check_name_free(new_name)
        tmpl = self._template(rules.template_name(b["template"])) if "template" in b else None
        parent, base = self._create_source(b)
        source = parent or base
        fields = self._create_fields(b, tmpl, source)
        template = tmpl.name if tmpl is not None else (source.template if source else "")
        size = self._create_size(b, tmpl, source)
        tags = rules.tags(b.get("tags", {}))
        self._check_space(template)

        if base is not None:
            parent = self._transient_snapshot(base)
        vol = self._new_object(
            snapshot=False, name=new_name, size=size, template=template, fields=fields
        )
        vol.tags = tags
        if parent is not None:
            vol.parent, vol.data = parent.gid, parent.data
        self._add(vol)
        return vol.gid

    def _create_source(self, b: dict[str, Any]) -> tuple[_Object | None, _Object | None]:
        """(parent snapshot, baseOn volume) of a create; at most one of them."""
        if "parent" in b and "baseOn" in b:
            raise rules.invalid("give parent or baseOn, not both")
        if "baseOn" in b:
            base = self._checked_resolve(b["baseOn"], "baseOn", snapshot=False)
            return None, base
        if "parent" not in b:
            return None, None
        parent = self._checked_resolve(b["parent"], "parent", snapshot=True)
        if parent.deleted:
            raise rules.invalid(f"snapshot {parent.ref} is being deleted")
        if parent.transient:
            raise rules.invalid(f"snapshot {parent.ref} is transient")
        return parent, None

    def _create_fields(
        self, b: dict[str, Any], tmpl: _Template | None, source: _Object | None
    ) -> dict[str, Any]:
        """Policy and limits of a new volume: its template's, else its source's, else the
        defaults, then what the request sets."""
        if tmpl is not None:
            fields = self._of_template(tmpl, for_new=True)
        elif source is not None:
            fields = self._of_object(source)
        else:
            fields = self._defaults()
        fields.update(self._policy(b))
        return fields

    @staticmethod
    def _create_size(b: dict[str, Any], tmpl: _Template | None, source: _Object | None) -> int:
        defaults = [v.size for v in (tmpl, source) if v is not None and isinstance(v.size, int)]
        if "size" in b:
            size = rules.size(b["size"])
        elif defaults:
            size = max(defaults)
        else:
            raise rules.invalid("size is required (no template size or parent to take it from)")
        if source is not None and size < source.size:
            raise rules.invalid(
                f"size {size} is smaller than the size of {source.ref} ({source.size})"
            )
        return size

    def _transient_snapshot(self, base: _Object) -> _Object:
        snap = self._new_object(
            snapshot=True,
            name=None,
            size=base.size,
            template=base.template,
            fields=self._of_object(base),
        )
        stem = re.sub(r"[^A-Za-z0-9_.:-]", "", base.ref)[:180] or "volume"
        name = f"*{stem}@{rules.base36(snap.vid)}"
        while name in self._names:
            name += "x"
        snap.name, snap.parent, snap.data = name, base.parent, base.data
        snap.on_volume, snap.transient = base.gid, True
        self._add(snap)
        return snap

    def volume_update(self, ref: str, **changes: Any) -> None:
        what = f"update volume {ref}"
        _check_size(what, changes.get("size"))
        request = {k: v for k, v in changes.items() if v is not None}
        with self._call(what) as send:
            _b_volume_ref(ref)
            desc = _Desc("VolumeUpdateDesc", request)
            desc.policy()
            desc.check("rename", lambda v: _b_name("VolumeName", v, _B_VOLUME_NAME))
            desc.check("size", lambda v: _b_size("Size", v))
            desc.check("sizeAdd", lambda v: _b_size("SizeAdd", v))
            desc.check(
                "template", lambda v: _b_name("VolumeTemplateName", v, _B_TEMPLATE_NAME, ("list",))
            )
            desc.check("shrinkOk", bool)
            body = desc.done()
            send("VolumeUpdate")
            self._update(ref, body)
        if "rename" in request:  # its row is looked up again under the new name
            self.space.change(ref, gone=True)
            return
        size, template = request.get("size"), request.get("template")
        self.space.change(
            ref,
            size=size if isinstance(size, int) else None,
            template=template if isinstance(template, str) else None,
        )

    def _update(self, ref: str, b: dict[str, Any]) -> None:
        vol = self._resolve(ref, snapshot=False)
        fields: dict[str, Any] = {}
        tmpl = None
        if "template" in b:
            tmpl = self._template(rules.template_name(b["template"]))
            fields.update(self._of_template(tmpl, for_new=False))
        fields.update(self._policy(b))
        if "size" in b and "sizeAdd" in b:
            raise rules.invalid("give size or sizeAdd, not both")
        size = vol.size
        if "size" in b:
            size = rules.size(b["size"])
        elif "sizeAdd" in b:
            size = rules.at_most_max_size(vol.size + rules.size(b["sizeAdd"], "sizeAdd"))
        if size < vol.size and not rules.boolean(b.get("shrinkOk", False), "shrinkOk"):
            raise rules.invalid(
                f"shrinking {vol.ref} from {vol.size} to {size} bytes requires shrinkOk"
            )
        tags = rules.tags(b["tags"]) if "tags" in b else None
        new_name = rules.optional_new_name(b["rename"], "rename") if "rename" in b else vol.name
        if size > vol.size:
            self._check_space(tmpl.name if tmpl else vol.template)
        if new_name != vol.name:
            self._check_name_free(new_name)

        self._rename(vol, new_name)
        if tmpl is not None:
            vol.template = tmpl.name
        self._apply(vol, fields)
        if tags is not None:
            vol.tags = rules.merge_tags(vol.tags, tags)
        vol.size, vol.data = size, min(vol.data, size)

    def volume_delete(self, ref: str) -> bool:
        names.url_ref(ref, f"delete volume {ref!r}")  # as the facade, before any call
        what = f"delete volume {ref}"
        try:
            with self._call(what) as send:
                send("VolumeDelete")
                vol = self._checked_resolve(ref, "volume name", snapshot=False)
                self._attachments = [a for a in self._attachments if a.gid != vol.gid]
                self._remove(vol)
                self._collect_snapshots()
        except errors.NotFound:
            self.space.change(ref, gone=True)
            return False
        self.space.change(ref, gone=True)
        return True

    def volume_revert(self, ref: str, snapshot_ref: str) -> None:
        with self._call(f"revert volume {ref} to {snapshot_ref}") as send:
            _b_volume_ref(ref)
            desc = _Desc("VolumeRevertDesc", {"toSnapshot": snapshot_ref})
            desc.check("toSnapshot", _b_snapshot_ref)
            desc.done()
            send("VolumeRevert")
            vol = self._resolve(ref, snapshot=False)
            snap = self._resolve(snapshot_ref, snapshot=True)
            if snap.deleted:
                raise rules.invalid(f"snapshot {snap.ref} is being deleted")
            if self._attachments_of(vol.gid):
                raise rules.busy(f"volume {vol.ref} is attached; detach it before reverting")
            self._check_space(vol.template)
            vol.parent, vol.data = snap.gid, min(snap.data, vol.size)
            self._collect_snapshots()

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self, ref: str) -> StorPoolSnapshot:
        with self._call(f"snapshot {ref}") as send:
            _b_snapshot_ref(ref)
            send("Snapshot")
            return self._snapshot_record(self._resolve(ref, snapshot=True))

    def snapshot_or_none(self, ref: str) -> StorPoolSnapshot | None:
        try:
            snap = self.snapshot(ref)
        except errors.NotFound:
            return None
        return None if snap.deleted else snap

    def snapshots(self) -> list[StorPoolSnapshot]:
        with self._call("list snapshots") as send:
            send("SnapshotsList")
            return [self._snapshot_record(o) for o in self._listed(snapshot=True)]

    def snapshot_create(
        self,
        volume_ref: str,
        *,
        name: str,
        tags: Mapping[str, str] | None = None,
        delete_after: int = 0,
    ) -> str:
        request: dict[str, Any] = {"name": name}
        if tags:
            request["tags"] = dict(tags)
        if delete_after:
            request["deleteAfter"] = delete_after
        with self._call(f"snapshot volume {volume_ref} as {name}") as send:
            _b_volume_ref(volume_ref)
            desc = _Desc("VolumeSnapshotDesc", request)
            desc.check("name", lambda v: _b_name("VolumeName", v, _B_VOLUME_NAME))
            desc.check("tags", _b_tags)
            b = desc.done()
            send("VolumeSnapshot")
            vol = self._resolve(volume_ref, snapshot=False)
            new_name = rules.check_snapshot_name(
                rules.optional_new_name(b.get("name"), "snapshot name"), "snapshot name"
            )
            self._check_name_free(new_name)
            snap_tags = rules.tags(b.get("tags", {}))
            _, date = self._delete_date(request)
            self._check_space(vol.template)
            return self._take_snapshot(vol, new_name, snap_tags, delete_date=date).gid

    def snapshot_update(self, ref: str, **changes: Any) -> None:
        names.url_ref(ref, f"update snapshot {ref!r}")  # as the facade, before any call
        b = {k: v for k, v in changes.items() if v is not None}
        with self._call(f"update snapshot {ref}") as send:
            send("SnapshotUpdate")
            snap = self._checked_resolve(ref, "snapshot name", snapshot=True)
            fields: dict[str, Any] = {}
            tmpl = None
            if "template" in b:
                tmpl = self._template(rules.template_name(b["template"]))
                fields.update(self._of_template(tmpl, for_new=False))
            fields.update(self._policy(b))
            tags = rules.tags(b["tags"]) if "tags" in b else None
            bind = rules.boolean(b["bind"], "bind") if "bind" in b else None
            date_given, date = self._delete_date(b)
            if "rename" in b:
                new_name = rules.check_snapshot_name(
                    rules.optional_new_name(b["rename"], "rename"), "rename"
                )
                self._rename(snap, new_name)
            if tmpl is not None:
                snap.template = tmpl.name
            self._apply(snap, fields)
            if tags is not None:
                snap.tags = rules.merge_tags(snap.tags, tags)
            if bind is not None:
                snap.bound = bind
            if date_given:
                snap.delete_date = date
            self._collect_snapshots()

    def snapshot_delete(self, ref: str) -> bool:
        try:
            self.detach_all(ref, snapshot=True)
            with self._call(f"delete snapshot {ref}") as send:
                _b_snapshot_ref(ref)
                send("SnapshotDelete")
                snap = self._resolve(ref, snapshot=True)
                atts = self._attachments_of(snap.gid)
                if atts:
                    clients = ", ".join(str(a.client) for a in atts)
                    raise rules.busy(f"snapshot {snap.ref} is attached to client(s) {clients}")
                if snap.exports:
                    raise rules.invalid(
                        f"snapshot {snap.ref} is still exported to location(s) "
                        f"{', '.join(sorted(snap.exports))}; unexport it first"
                    )
                self._delete_snapshot(snap)
        except errors.NotFound:
            return False
        return True

    def group_snapshot(
        self, volumes: Iterable[tuple[str, str]], tags: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "volumes": [{"volume": ref, "name": name} for ref, name in volumes],
            "tags": dict(tags),
        }
        with self._call("group snapshot") as send:
            first: _Refused | None = None
            for spec in request["volumes"]:
                try:
                    item = _Desc("GroupSnapshotSpec", spec)
                    item.check("volume", _b_volume_ref)
                    item.check("name", lambda v: _b_name("SnapshotName", v, _B_SNAPSHOT_NAME))
                    item.done()
                except _Refused as refused:
                    first = first or _Refused(f"[GroupSnapshotSpec]: {refused}")
            desc = _Desc("GroupSnapshotsSpec", request)
            if first is not None:
                desc.first = first
            desc.check("tags", _b_tags)
            desc.done()
            send("VolumesGroupSnapshot")
            return self._group_snapshot(request["volumes"], request["tags"])

    def _group_snapshot(
        self, specs: list[dict[str, Any]], tags: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        if not specs:
            raise rules.invalid("volumes must be a non-empty list")
        common = rules.tags(dict(tags))
        plan: list[tuple[_Object, str | None]] = []
        names: set[str] = set()
        for spec in specs:
            vol = self._checked_resolve(spec["volume"], "volume", snapshot=False)
            if any(v.gid == vol.gid for v, _ in plan):
                raise rules.invalid(f"volume {vol.ref} is listed twice")
            name = rules.optional_new_name(spec.get("name"), "snapshot name", snapshot=True)
            self._check_name_free(name)
            if name is not None:
                if name in names:
                    raise rules.exists(f"an object named {name}")
                names.add(name)
            plan.append((vol, name))
        for vol, _ in plan:
            self._check_space(vol.template)
        results = []
        for vol, name in plan:
            snap = self._take_snapshot(vol, name, dict(common))
            results.append(
                {
                    "volume": vol.ref,
                    "volumeGlobalId": vol.gid,
                    "snapshot": snap.ref,
                    "snapshotGlobalId": snap.gid,
                    "remoteId": snap.gid,
                }
            )
        return results

    # ---- other locations ----------------------------------------------------------------------

    def locations(self) -> list[Location]:
        with self._call("list StorPool locations") as send:
            send("LocationsList")
            members = sorted(self.location_registry.values(), key=lambda m: m.location_name)
            return [Location(m.location_id, m.location_name) for m in members]

    def _remote(self, location: str) -> MemoryStorPool:
        remote = self.location_registry.get(location)
        if remote is None:
            raise rules.not_found(f"location {location}")
        return remote

    def snapshot_export(self, ref: str, location: str) -> None:
        with self._call(f"export snapshot {ref} to location {location}") as send:
            _b_snapshot_ref(ref)
            send("SnapshotExport")
            snap = self._resolve(ref, snapshot=True)
            if self._remote(location) is self:
                raise rules.invalid(f"location {location} is this location")
            snap.exports.add(location)

    def snapshot_unexport(self, ref: str, location: str | None) -> None:
        with self._call(f"unexport snapshot {ref} from {location or 'every location'}") as send:
            _b_snapshot_ref(ref)
            send("SnapshotUnexport")
            exports = self._resolve(ref, snapshot=True).exports
            if location is None:
                exports.clear()
            else:
                exports.discard(location)

    def snapshot_from_remote(
        self, location: str, global_id: str, *, template: str, tags: Mapping[str, str]
    ) -> str:
        what = f"copy snapshot {global_id} from location {location}"
        # the remote's state is read before this one's lock is taken: two clients copying
        # towards each other must not wait for each other's lock
        source = None
        remote = self.location_registry.get(location)
        if remote is not None and remote is not self:
            with remote._lock:
                found = remote._objects.get(global_id)
                if found is not None and found.snapshot and self.location_name in found.exports:
                    source = (found.size, found.data, found.created)
        with self._call(what) as send:
            send("SnapshotFromRemote")
            self._remote(location)
            if source is None:
                raise rules.not_found(
                    f"snapshot {global_id} of location {location} exported to location "
                    f"{self.location_name}"
                )
            if global_id in self._objects:
                raise rules.exists(f"an object with global id {global_id}")
            size, data, created = source
            tmpl = self._template(rules.template_name(template))
            snap = self._new_object(
                snapshot=True,
                name=None,
                size=size,
                template=tmpl.name,
                fields=self._of_template(tmpl, for_new=True),
            )
            snap.gid, snap.data, snap.created = global_id, data, created
            snap.tags, snap.remote_location = rules.tags(dict(tags)), location
            self._add(snap)
            return global_id

    def snapshot_reconcile(self, ref: str) -> None:
        with self._call(f"reconcile snapshot {ref}") as send:
            _b_snapshot_ref(ref)
            send("SnapshotReconcile")
            if self._resolve(ref, snapshot=True).remote_location is None:
                raise rules.invalid(f"snapshot {ref} is not a snapshot from a remote location")

    # ---- attachments --------------------------------------------------------------------------

    def attachments(self) -> list[Attachment]:
        with self._call("list attachments") as send:
            send("AttachmentsList")
            rows = []
            for att in sorted(self._attachments, key=lambda a: (a.client, a.pos)):
                obj = self._objects[att.gid]
                rights = "ro" if obj.snapshot else att.rights
                rows.append(Attachment(obj.ref, obj.snapshot, att.client, rights, obj.gid))
            return rows

    def attach(
        self, ref: str, client_id: int, *, read_only: bool, snapshot: bool, timeout: int
    ) -> None:
        key = "snapshot" if snapshot else "volume"
        mode = "ro" if read_only or snapshot else "rw"
        with self._call(f"attach {key} {ref} to client {client_id}") as send:
            attach_timeout = _b_reassign_wait([{key: ref, mode: [client_id]}], timeout)
            send("VolumesReassignWait")
            if attach_timeout < 0:
                raise rules.invalid("attachTimeout must be >= 0")
            self._reassign(ref, snapshot=snapshot, attach={int(client_id): mode})

    def detach(self, ref: str, client_id: int, *, snapshot: bool, force: bool) -> None:
        key = "snapshot" if snapshot else "volume"
        with self._call(f"detach {key} {ref} from client {client_id}") as send:
            _b_reassign_wait([{key: ref, "detach": [client_id]}], 0)
            send("VolumesReassignWait")
            self._reassign(ref, snapshot=snapshot, detach=[int(client_id)], force=bool(force))

    def detach_all(self, ref: str, *, snapshot: bool) -> None:
        key = "snapshot" if snapshot else "volume"
        with self._call(f"detach {key} {ref} from all clients") as send:
            _b_reassign([{key: ref, "detach": "all"}])
            send("VolumesReassign")
            self._reassign(ref, snapshot=snapshot, detach="all", force=True)

    def _reassign(
        self,
        ref: str,
        *,
        snapshot: bool,
        attach: Mapping[int, str] | None = None,
        detach: Sequence[int] | str = (),
        force: bool = False,
    ) -> None:
        obj = self._checked_resolve(ref, "snapshot" if snapshot else "volume", snapshot=snapshot)
        attach = dict(attach or {})
        for cid in attach:
            self._check_client(cid)
        if attach and obj.snapshot and (obj.deleted or obj.transient):
            raise rules.invalid(f"snapshot {obj.ref} can not be attached (deleted or transient)")
        leaving = self._leaving(obj, attach, detach)
        if not force:
            self._check_not_open(obj, leaving)
        for cid in leaving:
            att = self._attachment(cid, obj.gid)
            if att is not None:
                self._attachments.remove(att)
        self._attach_to(obj, attach)

    def _leaving(
        self, obj: _Object, attach: Mapping[int, str], detach: Sequence[int] | str
    ) -> list[int]:
        """The clients a reassign detaches `obj` from (not those it attaches it to again)."""
        attached = [a.client for a in self._attachments_of(obj.gid)]
        if isinstance(detach, str):  # "all"
            wanted = attached
        else:
            wanted = list(detach)
            for cid in wanted:
                self._check_client(cid)
        return [c for c in attached if c in wanted and c not in attach]

    def _check_not_open(self, obj: _Object, leaving: Iterable[int]) -> None:
        for cid in leaving:
            att = self._attachment(cid, obj.gid)
            if att is not None and att.open:
                raise rules.busy(f"'{obj.ref}' is open at client {cid}")

    def _attach_to(self, obj: _Object, attach: Mapping[int, str]) -> None:
        for cid, rights in attach.items():
            att = self._attachment(cid, obj.gid)
            if att is not None:
                att.rights = rights
                continue
            used = {a.pos for a in self._attachments if a.client == cid}
            pos = next((p for p in range(MAX_ATTACHMENT_POS + 1) if p not in used), None)
            if pos is None:
                raise rules.invalid(f"too many attachments on client {cid}")
            self._attachments.append(_Attachment(cid, obj.gid, rights, pos))

    # ---- templates, clients, space ------------------------------------------------------------

    def template(self, name: str) -> dict[str, Any]:
        with self._call(f"template {name}") as send:
            _b_name("VolumeTemplateName", name, _B_TEMPLATE_NAME, ("list",))
            send("VolumeTemplateDescribe")
            tmpl = self._template(name)
            return {
                "id": tmpl.id,
                "name": tmpl.name,
                "parentName": "",
                "placeAll": tmpl.group,
                "placeTail": tmpl.group,
                "placeHead": tmpl.group,
                "replication": tmpl.replication,
                "size": tmpl.size,
                "bw": tmpl.bw,
                "iops": tmpl.iops,
            }

    def template_status(self, name: str) -> TemplateStatus:
        with self._call("template status") as send:
            send("VolumeTemplatesStatus")
            tmpl = self._templates.get(name)
            if tmpl is None:
                raise errors.NotFound(f"StorPool template {name} does not exist at {self.endpoint}")
            members = [o for o in self._objects.values() if o.template == name]
            return TemplateStatus(
                name,
                tmpl.capacity,
                max(0, tmpl.capacity - sum(self._allocated(o) for o in members)),
                sum(1 for o in members if not o.snapshot),
                sum(1 for o in members if o.snapshot),
            )

    def volumes_space(self) -> dict[str, tuple[int, int]]:
        """name → (size, spaceUsed) for every volume (one VolumesSpace call, uncached)."""
        return {row.name: (row.size, row.used) for row in self._rows()}

    def snapshots_space(self) -> list[VolumeSpace]:
        with self._call("snapshot space") as send:
            send("SnapshotsSpace")
            return [self._space_row(o) for o in self._listed(snapshot=True)]

    def _space_row(self, o: _Object) -> VolumeSpace:
        return VolumeSpace(
            o.ref,
            o.gid,
            o.template,
            o.size,
            self._allocated(o),
            _limit(o.iops),
            _limit(o.bw),
            o.tags.get("cs", ""),
        )

    def _rows(self) -> list[VolumeSpace]:
        with self._call("volume space") as send:
            send("VolumesSpace")
            return [self._space_row(o) for o in self._listed(snapshot=False)]

    def for_probes(self) -> MemoryStorPool:
        return self

    def local_cluster_id(self) -> str | None:
        """The cluster id its own volumes' (else snapshots') global ids show; None when empty."""
        for query, snapshot in (("VolumesList", False), ("SnapshotsList", True)):
            with self._call(f"{query} (to learn the cluster id)") as send:
                send(query)
                if self._listed(snapshot=snapshot):
                    return self.cluster_id
        return None

    def client_running(self, client_id: int) -> bool:
        return self.client_statuses().get(client_id) == RUNNING

    def client_statuses(self) -> dict[int, str]:
        with self._call("list services") as send:
            send("ServicesList")
            return {cid: RUNNING if up else "down" for cid, up in self._clients.items()}


def _check_size(what: str, size: object) -> None:
    """The facade never sends a size above the maximum."""
    if isinstance(size, int) and size > MAX_SIZE:
        raise errors.InvalidArgument(
            f"{what}: size {size} is larger than the maximum StorPool volume size, {MAX_SIZE_TEXT}"
        )


if TYPE_CHECKING:

    def _is_a_client(pool: MemoryStorPool) -> StorPoolClient:
        return pool  # mypy checks that MemoryStorPool satisfies StorPoolClient structurally
