"""Reply bodies: the exact field sets of storpool-api.md §2.9.

Every field the bindings mark REQUIRED is always present with a valid value;
``tags`` is always an object; "no parent"/"no template" is ``""`` and
"unlimited"/"unset" is ``"-"``, never null. Optional fields are left out
rather than sent as null. ``clusterId`` is added on ``MultiCluster/`` calls.
"""

from __future__ import annotations

from typing import Any

from spcs import __version__
from spcs.emulator import blockdata
from spcs.emulator.cluster import Cluster
from spcs.emulator.model import Attachment, State, Template, Volume
from spcs.emulator.naming import objects_count

VERSION = f"spcs-emulator-{__version__}"
_RAW_REPLICATION = 3  # raw-space estimates for templates without a replication


def _ref_of(state: State, gid: str | None) -> str:
    vol = state.volumes.get(gid) if gid else None
    return vol.ref if vol is not None else ""


def volume_summary(state: State, vol: Volume, *, mc: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": vol.ref,
        "globalId": vol.gid,
        "size": vol.size,
        "replication": vol.replication,
        "placeAll": vol.place_all,
        "placeTail": vol.place_tail,
        "placeHead": vol.place_head,
        "parentName": _ref_of(state, vol.parent),
        "templateName": vol.template,
        "bw": vol.bw,
        "iops": vol.iops,
        "visibleVolumeId": vol.vid,
        "objectsCount": objects_count(vol.size),
        "creationTimestamp": vol.created,
        "tags": dict(vol.tags),
    }
    if vol.reuse_server is not None:
        out["reuseServer"] = vol.reuse_server
    if mc:
        out["clusterId"] = state.cluster_id
    if vol.snapshot:
        origin = state.volumes.get(vol.on_volume) if vol.on_volume else None
        out.update(
            onVolume=origin.ref if origin is not None and not origin.snapshot else "-",
            autoName=vol.auto_name,
            bound=vol.bound,
            deleted=vol.deleted,
            transient=vol.transient,
            recoveringFromRemote=vol.recovering,
        )
        if vol.target_delete_date:
            out["targetDeleteDate"] = vol.target_delete_date
    return out


def describe(state: State, vol: Volume, *, mc: bool) -> dict[str, Any]:
    """``Volume``/``Snapshot``: the summary plus (empty: no real disks) placement."""
    return {**volume_summary(state, vol, mc=mc), "targetDiskSets": [], "objects": []}


def info(state: State, vol: Volume, *, mc: bool) -> dict[str, Any]:
    return {
        **volume_summary(state, vol, mc=mc),
        "disksCount": 0,
        "objectsPerDisk": {},
        "objectsPerChain": [],
        "objectsPerDiskSet": [],
    }


def space(cluster: Cluster, state: State, vol: Volume, *, mc: bool) -> dict[str, Any]:
    """Space of one object; each object is a full file, so both figures are its allocation."""
    used = blockdata.allocated_bytes(cluster.data_path(vol.gid))
    return {**volume_summary(state, vol, mc=mc), "storedSize": used, "spaceUsed": used}


def status(cluster: Cluster, state: State, vol: Volume, *, mc: bool, quick: bool) -> dict[str, Any]:
    out = {
        **volume_summary(state, vol, mc=mc),
        "status": "up",
        "snapshot": vol.snapshot,
        "migrating": False,
        "decreasedRedundancy": False,
        "balancerBlocked": False,
        "syncingDataBytes": 0,
        "syncingMetaObjects": 0,
        "downBytes": 0,
        "upSoonChainsCount": 0,
        "downDrives": [],
        "missingDrives": [],
        "missingTargetDrives": [],
        "softEjectingDrives": [],
    }
    if not quick:
        used = blockdata.allocated_bytes(cluster.data_path(vol.gid))
        out["storedSize"] = used
        out["onDiskSize"] = used * vol.replication
    return out


def attachment(state: State, att: Attachment, *, mc: bool) -> dict[str, Any]:
    vol = state.volumes[att.gid]
    out: dict[str, Any] = {
        "volume": vol.ref,
        "snapshot": vol.snapshot,
        "client": att.client,
        "rights": "ro" if vol.snapshot else att.rights,
        "pos": att.pos,
        "globalId": vol.gid,
    }
    if mc:
        out["clusterId"] = state.cluster_id
    return out


def template_desc(state: State, tmpl: Template) -> dict[str, Any]:
    parent = state.volumes.get(tmpl.parent) if tmpl.parent else None
    out: dict[str, Any] = {
        "id": tmpl.id,
        "name": tmpl.name,
        "parentName": parent.name if parent is not None and parent.name else "",
        "placeAll": tmpl.place_all,
        "placeTail": tmpl.place_tail,
        "placeHead": tmpl.place_head,
        "replication": tmpl.replication,
        "size": tmpl.size,
        "bw": tmpl.bw,
        "iops": tmpl.iops,
    }
    if tmpl.reuse_server is not None:
        out["reuseServer"] = tmpl.reuse_server
    return out


def template_status(cluster: Cluster, state: State, tmpl: Template) -> dict[str, Any]:
    members = [v for v in state.volumes.values() if v.template == tmpl.name]
    vols = [v for v in members if not v.snapshot]
    snaps = [v for v in members if v.snapshot]
    alloc = {v.gid: blockdata.allocated_bytes(cluster.data_path(v.gid)) for v in members}
    capacity = cluster.template_capacity(tmpl)
    free = cluster.template_free(state, tmpl)
    raw = tmpl.replication if isinstance(tmpl.replication, int) else _RAW_REPLICATION
    with_children = [s for s in snaps if state.children(s.gid)]
    entry = {"capacity": capacity, "free": free}
    return {
        "id": tmpl.id,
        "name": tmpl.name,
        "placeAll": tmpl.place_all,
        "placeTail": tmpl.place_tail,
        "placeHead": tmpl.place_head,
        "replication": tmpl.replication,
        "volumesCount": len(vols),
        "snapshotsCount": len(snaps),
        "removingSnapshotsCount": sum(1 for s in snaps if s.deleted),
        "size": sum(v.size for v in vols),
        "totalSize": sum(v.size * v.replication for v in vols),
        "volumesSize": sum(v.size for v in vols),
        "snapshotsWithChildrenSize": sum(s.size for s in with_children),
        "snapshotsWithoutChildrenSize": sum(s.size for s in snaps if s not in with_children),
        "storedSize": sum(alloc.values()),
        "onDiskSize": sum(alloc[v.gid] * v.replication for v in members),
        "availablePlaceAll": free * raw,
        "availablePlaceTail": free * raw,
        "availablePlaceHead": free * raw,
        "capacityPlaceAll": capacity * raw,
        "capacityPlaceTail": capacity * raw,
        "capacityPlaceHead": capacity * raw,
        "stored": {
            **entry,
            "placeAll": dict(entry),
            "placeTail": dict(entry),
            "placeHead": dict(entry),
        },
    }


def placement_groups(state: State) -> dict[str, Any]:
    return {
        name: {"id": pg.id, "name": pg.name, "disks": []}
        for name, pg in sorted(state.placement_groups.items(), key=lambda kv: kv[1].id)
    }


def _service(sid: int, started: int) -> dict[str, Any]:
    return {"id": sid, "status": "running", "startTime": started, "version": VERSION}


def services(cluster: Cluster) -> dict[str, Any]:
    """Every configured client runs unless marked down; one mgmt and one server stand for the
    cluster."""
    started = cluster.started
    clients = {}
    for cid in sorted(cluster.hosts):
        entry = _service(cid, started)
        if cid in cluster.clients_down:
            entry["status"] = "down"
        if cid <= 63:  # NodeId range; CloudStack's HA check matches nodeId to SP_OURID
            entry["nodeId"] = cid
        clients[str(cid)] = entry
    return {
        "clusterStatus": "running",
        "mgmt": {"1": {**_service(1, started), "active": True}},
        "clients": clients,
        "servers": {"1": {**_service(1, started), "missingDisks": [], "pendingDisks": []}},
        "bridges": {},
        "iscsiTargets": {},
    }


def client_config(state: State, client: int) -> dict[str, Any]:
    # Device changes are made synchronously, so every client is always current.
    return {
        "id": client,
        "generation": state.generation,
        "clientGeneration": state.generation,
        "configStatus": "ok",
        "delay": 0,
    }
