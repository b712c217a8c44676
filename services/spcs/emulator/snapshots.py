"""Snapshot operations: VolumeSnapshot, VolumesGroupSnapshot, SnapshotUpdate, SnapshotDelete.

A snapshot captures the volume's bytes at that moment and becomes the
volume's parent; the snapshot's own parent is the volume's previous parent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from spcs.emulator import guards, naming, policy
from spcs.emulator.body import Body
from spcs.emulator.cluster import Cluster, Txn
from spcs.emulator.errors import busy, exists, invalid
from spcs.emulator.model import Volume
from spcs.emulator.volumes import check_name_free, rename

log = logging.getLogger(__name__)


def take(
    cluster: Cluster,
    txn: Txn,
    vol: Volume,
    name: str | None,
    tags: dict[str, str],
    *,
    bind: bool = False,
    delete_date: int | None = None,
) -> Volume:
    state = txn.state
    gid, vid = cluster.new_gid(state)
    snap = Volume(
        gid=gid,
        vid=vid,
        snapshot=True,
        name=name,
        size=vol.size,
        replication=vol.replication,
        place_all=vol.place_all,
        place_tail=vol.place_tail,
        place_head=vol.place_head,
        template=vol.template,
        parent=vol.parent,
        bw=vol.bw,
        iops=vol.iops,
        reuse_server=vol.reuse_server,
        created=int(time.time()),
        tags=tags,
        on_volume=vol.gid,
        auto_name=name is None,
        bound=bind,
        target_delete_date=delete_date,
    )
    cluster.new_data_file(txn, gid, vol.size, source=vol.gid)
    state.volumes[gid] = snap
    cluster.due_at(delete_date)
    vol.parent = gid
    log.info("snapshot %s (%s) of volume %s", snap.ref, gid, vol.ref)
    return snap


def create(cluster: Cluster, txn: Txn, ref: str, body: Any) -> dict[str, Any]:
    """``VolumeSnapshot/<volume>``; a missing or empty name makes an anonymous snapshot."""
    state = txn.state
    vol = cluster.resolve(state, ref, snapshot=False)
    b = Body(body)
    name = naming.check_snapshot_name(naming.optional_new_name(b.get("name"), "snapshot name"))
    check_name_free(state, name)
    tags = naming.tags(b.get("tags", {}))
    bind = naming.boolean(b.get("bind", False), "bind")
    _, date = policy.read_delete_date(b)
    cluster.check_space(state, vol.template)
    snap = take(cluster, txn, vol, name, tags, bind=bind, delete_date=date)
    return txn.ok(snapshotGlobalId=snap.gid, snapshotVisibleVolumeId=snap.vid)


def group(cluster: Cluster, txn: Txn, body: Any) -> dict[str, Any]:
    """``VolumesGroupSnapshot``: snapshots of several volumes in one step."""
    state = txn.state
    b = Body(body)
    specs = b.require("volumes")
    if not isinstance(specs, list) or not specs:
        raise invalid("volumes must be a non-empty list")
    common_tags = naming.tags(b.get("tags", {}))
    plan: list[tuple[Volume, str | None, dict[str, str]]] = []
    names: set[str] = set()
    for spec in specs:
        s = Body(spec, "each volumes entry")
        ref = naming.object_ref(s.require("volume"), "volume", snapshot=False)
        vol = cluster.resolve(state, ref, snapshot=False)
        if any(v.gid == vol.gid for v, _, _ in plan):
            raise invalid(f"volume {vol.ref} is listed twice")
        name = naming.optional_new_name(s.get("name"), "snapshot name", snapshot=True)
        check_name_free(state, name)
        if name is not None:
            if name in names:
                raise exists(f"an object named {name}")
            names.add(name)
        plan.append((vol, name, {**common_tags, **naming.tags(s.get("tags", {}))}))
    for vol, _, _ in plan:
        cluster.check_space(state, vol.template)
    results = []
    for vol, name, tags in plan:
        snap = take(cluster, txn, vol, name, tags)
        results.append(
            {
                "volume": vol.ref,
                "volumeGlobalId": vol.gid,
                "snapshot": snap.ref,
                "snapshotGlobalId": snap.gid,
                # No remote side in the emulator: the snapshot's own id.
                "remoteId": snap.gid,
            }
        )
    return {"snapshots": results}


def update(cluster: Cluster, txn: Txn, ref: str, body: Any) -> dict[str, Any]:
    state = txn.state
    snap = cluster.resolve(state, ref, snapshot=True)
    b = Body(body)
    fields: dict[str, Any] = {}
    tmpl = None
    if "template" in b:
        tmpl = cluster.template(state, naming.template_name(b.get("template")))
        fields.update(policy.of_template(tmpl, for_new=False))
    fields.update(policy.read(state, b))
    tags = naming.tags(b.get("tags")) if "tags" in b else None
    bind = naming.boolean(b.get("bind"), "bind") if "bind" in b else None
    date_given, date = policy.read_delete_date(b)
    if "rename" in b:
        naming.optional_new_name(b.get("rename"), "rename")
        rename(cluster, txn, snap, b.get("rename"))
    if tmpl is not None:
        snap.template = tmpl.name
    policy.apply(snap, fields)
    if tags is not None:
        snap.tags = naming.merge_tags(snap.tags, tags)
    if bind is not None:
        snap.bound = bind
    if date_given:
        snap.target_delete_date = date
        cluster.due_at(date)
    cluster.collect_snapshots(txn)  # a newly bound childless snapshot goes away
    return txn.ok()


def delete(cluster: Cluster, txn: Txn, ref: str) -> dict[str, Any]:
    state = txn.state
    snap = cluster.resolve(state, ref, snapshot=True)
    guards.check_not_exported(snap)
    atts = state.attachments_of(snap.gid)
    if atts:
        clients = ", ".join(str(a.client) for a in atts)
        raise busy(f"snapshot {snap.ref} is attached to client(s) {clients}")
    for tmpl in state.templates.values():
        if tmpl.parent == snap.gid:
            raise busy(f"snapshot {snap.ref} is the parent of template {tmpl.name}")
    cluster.delete_snapshot(txn, snap)  # a recovering one: its transfer stops
    log.info("deleted snapshot %s (%s)", snap.ref, snap.gid)
    return txn.ok()
