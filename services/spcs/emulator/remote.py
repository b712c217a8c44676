"""Snapshots across locations: LocationsList, SnapshotExport/Unexport, ExportsList,
SnapshotsRemoteList, SnapshotFromRemote, SnapshotReconcile.

A location's cluster lets another location fetch one of its snapshots by exporting it there
(``SnapshotExport``). The other location lists what it may fetch (``SnapshotsRemoteList``) and
makes a local copy that keeps the snapshot's global id (``SnapshotFromRemote``); the copy's
bytes arrive in the background while it shows ``recoveringFromRemote`` (`spcs.emulator.transfer`),
and ``SnapshotReconcile`` resumes a transfer that stopped. This is how CloudStack copies a
snapshot to another zone (storpool-api.md §2.7).

Emulator-specific choices (the material documents the bodies, not the behaviour):

* Locations are the emulators that share one `spcs.emulator.bridge.Bridge`; a stopped one is
  known but unreachable. Requests name locations by name (a RemoteLocationName), never by id.
* An exported snapshot can not be deleted (``invalidParam``, "still exported"); one due to go
  by itself (bound or transient and childless, or past its ``targetDeleteDate``) waits until it
  is unexported. A snapshot still recovering can not be attached, cloned, reverted to, made a
  template's parent or exported (``invalidParam``); deleting it stops its transfer.
* ``SnapshotUnexport`` of a location the snapshot is not exported to is ok; of a location the
  bridge does not know (and the snapshot is not exported to), ``objectDoesNotExist``. Without
  ``force`` it is refused while a reachable location still recovers the snapshot from here.
* A location's own name as the target or source is ``invalidParam``; an unreachable source is
  ``busy`` (not transient: it does not come back by retrying at once).
* ``SnapshotFromRemote``: the copy keeps the source's ``creationTimestamp``; its tags are the
  request's; placement, replication and limits come from ``template`` (else the defaults of a
  VolumeCreate without one) and the request's fields. ``SnapshotReconcile`` checks the source
  as ``SnapshotFromRemote`` does, then starts the transfer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from spcs.emulator import guards, naming, policy
from spcs.emulator.body import Body
from spcs.emulator.bridge import Location
from spcs.emulator.cluster import Cluster, Txn
from spcs.emulator.errors import OBJECT_DOES_NOT_EXIST, ApiError, busy, exists, invalid, not_found
from spcs.emulator.model import State, Volume
from spcs.emulator.volumes import check_name_free

log = logging.getLogger(__name__)

_POLICY_FIELDS = ("placeAll", "placeTail", "placeHead", "replication")


# Locations.


def locations(cluster: Cluster) -> dict[str, Any]:
    """Every location on the bridge, this one included (CloudStack finds its own by id)."""
    return {
        "locations": [
            {"id": loc.id, "name": loc.name, "sendBufferSize": 0, "recvBufferSize": 0}
            for loc in cluster.bridge.locations()
        ]
    }


def _location(cluster: Cluster, name: str, what: str) -> Location:
    """Another known location, by name."""
    loc = cluster.bridge.find(name)
    if loc is None:
        raise not_found(f"location {name}")
    if loc.name == cluster.location_name:
        raise invalid(f"{what} {name} is this location")
    return loc


def _reachable(cluster: Cluster, name: str, what: str) -> Cluster:
    loc = _location(cluster, name, what)
    if loc.cluster is None:
        raise busy(f"location {name} is not reachable")
    return loc.cluster


# Exports (the source side).


def export(cluster: Cluster, txn: Txn, body: Any) -> dict[str, Any]:
    b = Body(body)
    ref = naming.object_ref(b.require("snapshot"), "snapshot", snapshot=True)
    name = naming.location_name(b.require("location"), "location")
    _location(cluster, name, "location")
    snap = cluster.resolve(txn.state, ref, snapshot=True)
    guards.check_recovered(snap)
    if snap.deleted:
        raise invalid(f"snapshot {snap.ref} is being deleted")
    if name not in snap.exports:
        snap.exports.append(name)
        log.info("snapshot %s exported to location %s", snap.ref, name)
    return txn.ok()


def unexport(cluster: Cluster, body: Any) -> dict[str, Any]:
    b = Body(body)
    ref = naming.object_ref(b.require("snapshot"), "snapshot", snapshot=True)
    name = naming.location_name(b.get("location"), "location") if "location" in b else None
    every = naming.boolean(b.get("all", False), "all")
    force = naming.boolean(b.get("force", False), "force")
    if (name is None) != every:
        raise invalid('give exactly one of "location" and "all": true')
    with cluster.read() as state:
        found = cluster.resolve(state, ref, snapshot=True)
        shown, gid, exported = found.ref, found.gid, list(found.exports)
    if name is not None and name not in exported and cluster.bridge.find(name) is None:
        raise not_found(f"location {name}")
    targets = exported if every else [n for n in exported if n == name]
    if not force:
        # asked before the change: never another location's lock inside this one's
        _check_not_fetched(cluster, shown, gid, targets)
    with cluster.change() as txn:
        snap = txn.state.volumes.get(gid)
        if snap is None:
            raise not_found(f"snapshot {shown}")
        snap.exports = [n for n in snap.exports if n not in targets]
        for target in targets:
            log.info("snapshot %s unexported from location %s", snap.ref, target)
        cluster.collect_snapshots(txn)  # one that only waited for this goes now
        return txn.ok()


def _check_not_fetched(cluster: Cluster, shown: str, gid: str, names: list[str]) -> None:
    """Refuse while a reachable location still recovers the snapshot from here."""
    for name in names:
        loc = cluster.bridge.find(name)
        if loc is None or loc.cluster is None:
            continue  # an unreachable location can not say; its transfer is stopped anyway
        with loc.cluster.read() as state:
            copy = state.volumes.get(gid)
            fetching = (
                copy is not None
                and copy.recovering
                and copy.remote_location == cluster.location_name
            )
        if fetching:
            raise invalid(
                f"snapshot {shown} is still recovering in location {name}; wait until it is "
                "done there, or unexport with force"
            )


def exports_list(cluster: Cluster) -> dict[str, Any]:
    with cluster.read() as state:
        snaps = sorted(
            (v for v in state.volumes.values() if v.snapshot and v.exports), key=lambda v: v.vid
        )
        return {
            "exports": [
                {"snapshot": v.ref, "location": name, "globalId": v.gid, "backingUp": False}
                for v in snaps
                for name in v.exports
            ]
        }


# Remote snapshots (the destination side).


def remote_list(cluster: Cluster) -> dict[str, Any]:
    """What reachable locations export to this one (RemoteSnapshot)."""
    here = cluster.location_name
    out: list[dict[str, Any]] = []
    for loc in cluster.bridge.locations():
        if loc.cluster is None or loc.name == here:
            continue
        with loc.cluster.read() as state:
            snaps = sorted(
                (v for v in state.volumes.values() if v.snapshot and here in v.exports),
                key=lambda v: v.vid,
            )
            out += [_remote_snapshot_view(state, v, loc.name) for v in snaps]
    with cluster.read() as state:
        for entry in out:
            local = state.volumes.get(entry["remoteId"])
            if local is not None and local.snapshot:
                entry["localSnapshot"] = local.ref
    return {"snapshots": out}


def _remote_snapshot_view(state: State, snap: Volume, location: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": snap.ref,
        "location": location,
        "creationTimestamp": snap.created,
        "size": snap.size,
        "remoteId": snap.gid,
        "tags": dict(snap.tags),
    }
    origin = state.volumes.get(snap.on_volume) if snap.on_volume else None
    if origin is not None and not origin.snapshot:
        out["onVolume"] = origin.ref
    return out


@dataclass(frozen=True)
class _Source:
    size: int
    created: int


def _fetchable(cluster: Cluster, name: str, gid: str) -> _Source:
    """The snapshot `gid` of location `name`, if this location may fetch it now."""
    source = _reachable(cluster, name, "remoteLocation")
    here = cluster.location_name
    with source.read() as state:
        snap = state.volumes.get(gid)
        if snap is None or not snap.snapshot:
            raise ApiError(
                OBJECT_DOES_NOT_EXIST, f"snapshot ~{gid} does not exist in location {name}"
            )
        if here not in snap.exports:
            raise ApiError(
                OBJECT_DOES_NOT_EXIST,
                f"snapshot ~{gid} of location {name} is not exported to location {here}",
            )
        if snap.recovering:
            raise invalid(f"snapshot ~{gid} is still recovering in location {name}")
        return _Source(snap.size, snap.created)


@dataclass(frozen=True)
class _FromRemote:
    """A validated SnapshotFromRemote body (SnapshotFromRemoteDesc)."""

    location: str
    gid: str
    name: str | None
    template: str | None
    policy: Body
    export: bool
    tags: dict[str, str]

    @classmethod
    def parse(cls, body: Any) -> _FromRemote:
        b = Body(body)
        name = naming.optional_new_name(b.get("name"), "name")
        for key in ("placeAll", "placeTail", "placeHead"):
            if key in b:
                naming.placement_group_name(b.get(key), key)
        if "replication" in b:
            naming.replication(b.get("replication"))
        return cls(
            location=naming.location_name(b.require("remoteLocation"), "remoteLocation"),
            gid=naming.global_id(b.require("remoteId"), "remoteId"),
            name=naming.check_snapshot_name(name, "name"),
            template=naming.template_name(b.get("template")) if "template" in b else None,
            # only the desc's policy fields: no bw/iops/reuseServer here
            policy=Body({k: b.get(k) for k in _POLICY_FIELDS if k in b}),
            export=naming.boolean(b.get("export", False), "export"),
            tags=naming.tags(b.get("tags", {})),
        )


def from_remote(cluster: Cluster, body: Any) -> dict[str, Any]:
    """``SnapshotFromRemote``: a local copy of a remote snapshot, fetched in the background.

    The real reply's shape is not documented (the bindings type it ApiOk); the emulator answers
    ``{"ok", "generation", "name", "globalId", "snapshotGlobalId"}`` with ``name`` the new
    snapshot's name or ``~<gid>``, and both ids the remote snapshot's global id, which the copy
    keeps.
    """
    req = _FromRemote.parse(body)
    # the source is read before this location's change: never its lock inside ours
    source = _fetchable(cluster, req.location, req.gid)
    with cluster.change() as txn:
        snap = _create_copy(cluster, txn, req, source)
        gid, location = snap.gid, req.location
        txn.after_commit(lambda: cluster.transfers.start(gid, location))
        return txn.ok(name=snap.ref, globalId=gid, snapshotGlobalId=gid)


def _create_copy(cluster: Cluster, txn: Txn, req: _FromRemote, source: _Source) -> Volume:
    state = txn.state
    known = state.volumes.get(req.gid)
    if known is not None:
        raise exists(f"{known.kind} {known.ref} with global id {req.gid}")
    check_name_free(state, req.name)
    tmpl = cluster.template(state, req.template) if req.template is not None else None
    if tmpl is not None:
        fields = policy.of_template(tmpl, for_new=True)
    else:
        fields = policy.defaults(cluster.default_placement_group)
    fields.update(policy.read(state, req.policy))
    template = tmpl.name if tmpl is not None else ""
    cluster.check_space(state, template)
    snap = Volume(
        gid=req.gid,
        vid=cluster.new_vid(state),
        snapshot=True,
        name=req.name,
        size=source.size,
        template=template,
        parent=None,
        created=source.created,
        tags=req.tags,
        auto_name=req.name is None,
        exports=[req.location] if req.export else [],
        remote_location=req.location,
        recovering=True,
        **fields,
    )
    cluster.new_data_file(txn, snap.gid, snap.size)  # sparse; the transfer fills it
    state.volumes[snap.gid] = snap
    log.info("snapshot %s (%s) copied from location %s", snap.ref, snap.gid, req.location)
    return snap


def reconcile(cluster: Cluster, ref: str) -> dict[str, Any]:
    """``SnapshotReconcile/<snapshot>``: resume the transfer of a snapshot still recovering."""
    with cluster.read() as state:
        snap = cluster.resolve(state, ref, snapshot=True)
        shown, gid, source, recovering = snap.ref, snap.gid, snap.remote_location, snap.recovering
        reply = {"ok": True, "generation": state.generation}
    if source is None:
        raise invalid(f"snapshot {shown} was not copied from a remote location")
    if not recovering or cluster.transfers.is_running(gid):
        return reply
    _fetchable(cluster, source, gid)
    cluster.transfers.start(gid, source)
    return reply
