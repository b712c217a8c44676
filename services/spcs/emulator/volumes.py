"""Volume operations: create, update (resize/rename/retemplate/QoS/tags), delete, revert, freeze.

Each function validates the whole request first and only then touches the
draft state, data files and devices, so an error leaves nothing behind.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Any

from spcs.emulator import blockdata, guards, naming, policy
from spcs.emulator.body import Body
from spcs.emulator.cluster import Cluster, Txn, file_size_limits
from spcs.emulator.errors import busy, exists, invalid
from spcs.emulator.model import State, Template, Volume

log = logging.getLogger(__name__)

ON_ATTACHED = ("fail", "detach", "detachForce", "export")


def check_name_free(state: State, name: str | None) -> None:
    """Volumes and snapshots share one namespace here (they share /dev/storpool/)."""
    if name is not None and state.by_name(name) is not None:
        raise exists(f"an object named {name}")


def _source(cluster: Cluster, state: State, b: Body) -> tuple[Volume | None, Volume | None]:
    """(parent snapshot, baseOn volume) of a VolumeCreate."""
    if "parent" in b and "baseOn" in b:
        raise invalid("give parent or baseOn, not both")
    if "baseOn" in b:
        ref = naming.object_ref(b.get("baseOn"), "baseOn", snapshot=False)
        return None, cluster.resolve(state, ref, snapshot=False)
    if "parent" in b:
        ref = naming.object_ref(b.get("parent"), "parent", snapshot=True)
        parent = cluster.resolve(state, ref, snapshot=True)
        if parent.deleted:
            raise invalid(f"snapshot {parent.ref} is being deleted")
        if parent.transient:
            raise invalid(f"snapshot {parent.ref} is transient")
        guards.check_recovered(parent)
        return parent, None
    return None, None


def _template_parent(state: State, tmpl: Template) -> Volume | None:
    parent = state.volumes.get(tmpl.parent) if tmpl.parent else None
    if parent is not None:
        guards.check_recovered(parent)
    return parent


def create(cluster: Cluster, txn: Txn, body: Any) -> dict[str, Any]:
    state = txn.state
    b = Body(body)
    name = naming.optional_new_name(b.get("name"), "volume name")
    check_name_free(state, name)
    tmpl = None
    if "template" in b:
        tmpl = cluster.template(state, naming.template_name(b.get("template")))
    parent, base = _source(cluster, state, b)
    if parent is None and base is None and tmpl is not None:
        parent = _template_parent(state, tmpl)
    source = parent or base
    if tmpl is not None:
        fields = policy.of_template(tmpl, for_new=True)
    elif source is not None:
        fields = policy.of_volume(source)
    else:
        fields = policy.defaults(cluster.default_placement_group)
    fields.update(policy.read(state, b))
    template = tmpl.name if tmpl is not None else (source.template if source else "")

    defaults = [v.size for v in (tmpl, source) if v is not None and isinstance(v.size, int)]
    if "size" in b:
        size = naming.size(b.get("size"))
    elif defaults:
        size = max(defaults)  # the template's default size, but never below the source's
    else:
        raise invalid("size is required (no template size or parent to take it from)")
    if source is not None and size < source.size:
        raise invalid(f"size {size} is smaller than the size of {source.ref} ({source.size})")
    tags = naming.tags(b.get("tags", {}))
    cluster.check_space(state, template)

    reply: dict[str, Any] = {}
    if base is not None:
        parent = _transient_snapshot(cluster, txn, base)
        reply["autoName"] = parent.name
    gid, vid = cluster.new_gid(state)
    vol = Volume(
        gid=gid,
        vid=vid,
        snapshot=False,
        name=name,
        size=size,
        template=template,
        parent=parent.gid if parent is not None else None,
        created=int(time.time()),
        tags=tags,
        **fields,
    )
    cluster.new_data_file(txn, gid, size, source=parent.gid if parent is not None else None)
    state.volumes[gid] = vol
    log.info("created volume %s (%s, %d bytes)", vol.ref, gid, size)
    if name is None:
        reply["name"] = vol.ref
    return txn.ok(globalId=gid, **reply)


def _transient_snapshot(cluster: Cluster, txn: Txn, base: Volume) -> Volume:
    """The internal snapshot a ``baseOn`` clone is made from; it goes away with its child."""
    state = txn.state
    gid, vid = cluster.new_gid(state)
    # Only characters a SnapshotName allows (a volume name may start with "#").
    stem = re.sub(r"[^A-Za-z0-9_.:-]", "", base.ref)[:180] or "volume"
    name = f"*{stem}@{naming.base36(vid)}"
    while state.by_name(name) is not None:
        name += "x"
    snap = Volume(
        gid=gid,
        vid=vid,
        snapshot=True,
        name=name,
        size=base.size,
        template=base.template,
        parent=base.parent,
        created=int(time.time()),
        on_volume=base.gid,
        auto_name=True,
        transient=True,
        **policy.of_volume(base),
    )
    cluster.new_data_file(txn, gid, base.size, source=base.gid)
    state.volumes[gid] = snap
    return snap


def _new_size(vol: Volume, b: Body) -> int:
    if "size" in b and "sizeAdd" in b:
        raise invalid("give size or sizeAdd, not both")
    if "size" in b:
        size = naming.size(b.get("size"))
    elif "sizeAdd" in b:
        size = naming.at_most_max_size(vol.size + naming.size(b.get("sizeAdd"), "sizeAdd"))
    else:
        return vol.size
    shrink_ok = naming.boolean(b.get("shrinkOk", False), "shrinkOk")
    if size < vol.size and not shrink_ok:
        raise invalid(f"shrinking {vol.ref} from {vol.size} to {size} bytes requires shrinkOk")
    return size


def rename(cluster: Cluster, txn: Txn, vol: Volume, value: Any) -> None:
    """Rename (``""`` = make anonymous) and move the name links on every client."""
    new = naming.optional_new_name(value, "rename")
    if vol.snapshot:
        naming.check_snapshot_name(new, "rename")
    if new == vol.name:
        return
    check_name_free(txn.state, new)
    old = vol.name
    for att in txn.state.attachments_of(vol.gid):
        host = cluster.host(att.client)
        pos = att.pos
        host.rename(pos, old, new)
        txn.on_undo(functools.partial(host.rename, pos, new, old))
    vol.name = new


def update(cluster: Cluster, txn: Txn, ref: str, body: Any) -> dict[str, Any]:
    state = txn.state
    vol = cluster.resolve(state, ref, snapshot=False)
    b = Body(body)
    fields: dict[str, Any] = {}
    tmpl = None
    if "template" in b:
        tmpl = cluster.template(state, naming.template_name(b.get("template")))
        fields.update(policy.of_template(tmpl, for_new=False))
    fields.update(policy.read(state, b))
    size = _new_size(vol, b)
    tags = naming.tags(b.get("tags")) if "tags" in b else None
    if "rename" in b:
        naming.optional_new_name(b.get("rename"), "rename")
    if size > vol.size:
        cluster.check_space(state, tmpl.name if tmpl else vol.template)

    if "rename" in b:
        rename(cluster, txn, vol, b.get("rename"))
    if tmpl is not None:
        vol.template = tmpl.name
    policy.apply(vol, fields)
    if tags is not None:
        vol.tags = naming.merge_tags(vol.tags, tags)
    if size != vol.size:
        _resize(cluster, txn, vol, size)
    return txn.ok()


def _resize(cluster: Cluster, txn: Txn, vol: Volume, size: int) -> None:
    path, old = cluster.data_path(vol.gid), vol.size
    state_after = txn.state
    vol.size = size
    if size > old:
        with file_size_limits(size):
            blockdata.resize(path, size)
        txn.on_undo(lambda: blockdata.resize(path, old))
        cluster.refresh_size(state_after, vol)
    else:
        # Shrinking destroys data, so it happens only once the change is committed.
        txn.after_commit(lambda: blockdata.resize(path, size))
        txn.after_commit(lambda: cluster.refresh_size(cluster.state, vol))
    log.info("resized %s from %d to %d bytes", vol.ref, old, size)


def delete(cluster: Cluster, txn: Txn, ref: str, body: Any) -> dict[str, Any]:
    state = txn.state
    vol = cluster.resolve(state, ref, snapshot=False)
    on_attached = Body(body).get("onAttached", "fail")
    if on_attached not in ON_ATTACHED:
        raise invalid(f"onAttached must be one of {', '.join(ON_ATTACHED)}")
    atts = state.attachments_of(vol.gid)
    if atts:
        clients = [a.client for a in atts]
        if on_attached not in ("detach", "detachForce"):
            raise busy(f"volume {vol.ref} is attached to client(s) {_ids(clients)}")
        if on_attached == "detach":
            held = cluster.open_clients(state, vol, clients)
            if held:
                raise busy(f"'{vol.ref}' is open at client {held[0]}")
        for att in atts:
            cluster.unpublish(txn, att, vol)
            state.attachments.remove(att)
    del state.volumes[vol.gid]
    cluster.drop_data_file(txn, vol.gid)
    cluster.collect_snapshots(txn)
    log.info("deleted volume %s (%s)", vol.ref, vol.gid)
    return txn.ok()


def revert(cluster: Cluster, txn: Txn, ref: str, body: Any) -> dict[str, Any]:
    state = txn.state
    vol = cluster.resolve(state, ref, snapshot=False)
    b = Body(body)
    snap_ref = naming.object_ref(b.require("toSnapshot"), "toSnapshot", snapshot=True)
    snap = cluster.resolve(state, snap_ref, snapshot=True)
    if snap.deleted:
        raise invalid(f"snapshot {snap.ref} is being deleted")
    guards.check_recovered(snap)
    revert_size = naming.boolean(b.get("revertSize", False), "revertSize")
    if state.attachments_of(vol.gid):
        # Emulator choice: the data file is replaced, which an open device would not see.
        raise busy(f"volume {vol.ref} is attached; detach it before reverting")
    cluster.check_space(state, vol.template)
    size = snap.size if revert_size else vol.size

    path = cluster.data_path(vol.gid)
    fresh, backup = cluster.store.scratch_path(vol.gid), cluster.store.scratch_path(vol.gid)
    blockdata.clone(cluster.data_path(snap.gid), fresh, size)
    txn.on_undo(lambda: blockdata.remove(fresh))
    os.replace(path, backup)
    txn.on_undo(lambda: os.replace(backup, path))
    os.replace(fresh, path)
    txn.after_commit(lambda: blockdata.remove(backup))
    vol.parent, vol.size = snap.gid, size
    cluster.collect_snapshots(txn)
    log.info("reverted volume %s to snapshot %s", vol.ref, snap.ref)
    return txn.ok()


def freeze(cluster: Cluster, txn: Txn, ref: str, body: Any) -> dict[str, Any]:
    """Turn a volume into a snapshot of itself (same name, global id and bytes)."""
    state = txn.state
    vol = cluster.resolve(state, ref, snapshot=False)
    given, date = policy.read_delete_date(Body(body))
    if state.attachments_of(vol.gid):
        raise busy(f"volume {vol.ref} is attached")
    naming.check_snapshot_name(vol.name, "name of the frozen volume")
    vol.snapshot = True
    vol.on_volume = None
    vol.auto_name = vol.name is None
    vol.target_delete_date = date if given else None
    cluster.due_at(vol.target_delete_date)
    return txn.ok()


def _ids(clients: list[int]) -> str:
    return ", ".join(str(c) for c in sorted(clients))
