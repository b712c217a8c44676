"""The command table: ``<Command>[/<arg>]`` -> HTTP method, argument count, handler.

Handlers are thin: read or open a change, call the operation, build the reply.
Every command also answers under ``MultiCluster/`` (adding ``clusterId`` to
object replies there), which is harmless where the real API has no such form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spcs.emulator import attachments, naming, remote, snapshots, templates, views, volumes
from spcs.emulator.body import Body
from spcs.emulator.cluster import Cluster, Txn
from spcs.emulator.errors import invalid, not_found
from spcs.emulator.model import State, Template, Volume

GET, POST = "GET", "POST"


@dataclass
class Request:
    command: str
    method: str
    args: list[str]
    body: Any  # parsed JSON; None when the request carried none
    mc: bool  # called under MultiCluster/


Handler = Callable[[Cluster, Request], Any]


@dataclass(frozen=True)
class Route:
    method: str
    nargs: int
    handler: Handler


def _change(cluster: Cluster, op: Callable[[Txn], Any]) -> Any:
    with cluster.change() as txn:
        return op(txn)


def _vol(r: Request) -> str:
    return naming.object_ref(r.args[0], "volume name", snapshot=False)


def _snap(r: Request) -> str:
    return naming.object_ref(r.args[0], "snapshot name", snapshot=True)


def _objects(state: State, *, snapshot: bool) -> list[Volume]:
    return sorted(
        (v for v in state.volumes.values() if v.snapshot == snapshot), key=lambda v: v.vid
    )


def _templates(state: State) -> list[Template]:
    return sorted(state.templates.values(), key=lambda t: t.id)


# Volumes and snapshots: reads.


def _list(snapshot: bool) -> Handler:
    def handler(c: Cluster, r: Request) -> Any:
        with c.read() as s:
            return [views.volume_summary(s, v, mc=r.mc) for v in _objects(s, snapshot=snapshot)]

    return handler


def _one(snapshot: bool, render: Callable[[Cluster, State, Volume, bool], Any]) -> Handler:
    def handler(c: Cluster, r: Request) -> Any:
        ref = _snap(r) if snapshot else _vol(r)
        with c.read() as s:
            return render(c, s, c.resolve(s, ref, snapshot=snapshot), r.mc)

    return handler


def _summary_list(c: Cluster, s: State, v: Volume, mc: bool) -> Any:
    return [views.volume_summary(s, v, mc=mc)]


def _describe(c: Cluster, s: State, v: Volume, mc: bool) -> Any:
    return views.describe(s, v, mc=mc)


def _info(c: Cluster, s: State, v: Volume, mc: bool) -> Any:
    return views.info(s, v, mc=mc)


def _chain(c: Cluster, s: State, v: Volume, mc: bool) -> Any:
    out, gid = [], v.parent
    while gid is not None and gid in s.volumes:
        snap = s.volumes[gid]
        out.append(views.volume_summary(s, snap, mc=mc))
        gid = snap.parent
    return out


def _space(snapshot: bool) -> Handler:
    def handler(c: Cluster, r: Request) -> Any:
        with c.read() as s:
            return [views.space(c, s, v, mc=r.mc) for v in _objects(s, snapshot=snapshot)]

    return handler


def _status(quick: bool) -> Handler:
    def handler(c: Cluster, r: Request) -> Any:
        with c.read() as s:
            objs = sorted(s.volumes.values(), key=lambda v: v.vid)
            return {v.ref: views.status(c, s, v, mc=r.mc, quick=quick) for v in objs}

    return handler


def _volumes_and_snapshots(c: Cluster, r: Request) -> Any:
    with c.read() as s:
        return {
            "volumes": [views.volume_summary(s, v, mc=r.mc) for v in _objects(s, snapshot=False)],
            "snapshots": [views.volume_summary(s, v, mc=r.mc) for v in _objects(s, snapshot=True)],
        }


# Volumes and snapshots: changes.


def _volume_create(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: volumes.create(c, t, r.body))


def _volume_update(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: volumes.update(c, t, _vol(r), r.body))


def _volume_delete(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: volumes.delete(c, t, _vol(r), r.body))


def _volume_revert(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: volumes.revert(c, t, _vol(r), r.body))


def _volume_freeze(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: volumes.freeze(c, t, _vol(r), r.body))


def _volume_snapshot(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: snapshots.create(c, t, _vol(r), r.body))


def _group_snapshot(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: snapshots.group(c, t, r.body))


def _snapshot_update(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: snapshots.update(c, t, _snap(r), r.body))


def _snapshot_delete(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: snapshots.delete(c, t, _snap(r)))


def _snapshot_delete_by_id(c: Cluster, r: Request) -> Any:
    gid = r.args[0]
    if not naming.GLOBAL_ID_RE.fullmatch(gid):
        raise invalid(f"invalid global id {gid!r}")
    return _change(c, lambda t: snapshots.delete(c, t, f"~{gid}"))


# Locations and snapshots across them.


def _locations(c: Cluster, r: Request) -> Any:
    return remote.locations(c)


def _snapshot_export(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: remote.export(c, t, r.body))


def _snapshot_unexport(c: Cluster, r: Request) -> Any:
    return remote.unexport(c, r.body)  # asks other locations first, then changes


def _exports_list(c: Cluster, r: Request) -> Any:
    return remote.exports_list(c)


def _snapshots_remote_list(c: Cluster, r: Request) -> Any:
    return remote.remote_list(c)


def _snapshot_from_remote(c: Cluster, r: Request) -> Any:
    return remote.from_remote(c, r.body)


def _snapshot_reconcile(c: Cluster, r: Request) -> Any:
    return remote.reconcile(c, _snap(r))


# Attachments.


def _attachments_list(c: Cluster, r: Request) -> Any:
    with c.read() as s:
        atts = sorted(s.attachments, key=lambda a: (a.client, a.pos))
        return [views.attachment(s, a, mc=r.mc) for a in atts]


def _reassign(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: attachments.reassign(c, t, r.body))


def _reassign_wait(c: Cluster, r: Request) -> Any:
    items = r.body
    if not isinstance(items, list):  # {"reassign": [...]}; Proxmox sends the bare list
        b = Body(items)
        items = b.require("reassign")
        if "attachTimeout" in b and naming.integer(b.get("attachTimeout"), "attachTimeout") < 0:
            raise invalid("attachTimeout must be >= 0")
    # Devices change synchronously and every client is up, so there is nothing to wait for.
    return _change(c, lambda t: attachments.reassign(c, t, items))


# Templates and placement groups.


def _templates_list(c: Cluster, r: Request) -> Any:
    with c.read() as s:
        return [views.template_desc(s, t) for t in _templates(s)]


def _templates_status(c: Cluster, r: Request) -> Any:
    with c.read() as s:
        return [views.template_status(c, s, t) for t in _templates(s)]


def _template_describe(c: Cluster, r: Request) -> Any:
    name = naming.template_name(r.args[0])
    with c.read() as s:
        return views.template_desc(s, c.template(s, name))


def _template_create(c: Cluster, r: Request) -> Any:
    return _change(c, lambda t: templates.create(c, t, r.body))


def _template_update(c: Cluster, r: Request) -> Any:
    name = naming.template_name(r.args[0])
    return _change(c, lambda t: templates.update(c, t, name, r.body))


def _template_delete(c: Cluster, r: Request) -> Any:
    name = naming.template_name(r.args[0])
    return _change(c, lambda t: templates.delete(c, t, name))


def _placement_groups(c: Cluster, r: Request) -> Any:
    with c.read() as s:
        return views.placement_groups(s)


def _placement_group(c: Cluster, r: Request) -> Any:
    name = naming.placement_group_name(r.args[0])
    with c.read() as s:
        groups = views.placement_groups(s)
        if name not in groups:
            raise not_found(f"placement group {name}")
        return groups[name]


def _placement_group_update(c: Cluster, r: Request) -> Any:
    name = naming.placement_group_name(r.args[0])
    return _change(c, lambda t: templates.placement_group_update(c, t, name, r.body))


def _placement_group_delete(c: Cluster, r: Request) -> Any:
    name = naming.placement_group_name(r.args[0])
    return _change(c, lambda t: templates.placement_group_delete(c, t, name))


# Services and clients.


def _services(c: Cluster, r: Request) -> Any:
    return views.services(c)


def _clients_config(c: Cluster, r: Request) -> Any:
    with c.read() as s:
        return [views.client_config(s, cid) for cid in sorted(c.hosts)]


def _client_config_wait(c: Cluster, r: Request) -> Any:
    cid = naming.client_id(r.args[0])
    c.host(cid)
    with c.read() as s:
        return [views.client_config(s, cid)]


ROUTES: dict[str, Route] = {
    # volumes
    "VolumesList": Route(GET, 0, _list(snapshot=False)),
    "Volume": Route(GET, 1, _one(False, _summary_list)),
    "VolumeDescribe": Route(GET, 1, _one(False, _describe)),
    "VolumeGetInfo": Route(GET, 1, _one(False, _info)),
    "VolumeListSnapshots": Route(GET, 1, _one(False, _chain)),
    "VolumesGetStatus": Route(GET, 0, _status(quick=False)),
    "VolumesGetStatusQuick": Route(GET, 0, _status(quick=True)),
    "VolumesSpace": Route(GET, 0, _space(snapshot=False)),
    "VolumesAndSnapshotsList": Route(GET, 0, _volumes_and_snapshots),
    "VolumeCreate": Route(POST, 0, _volume_create),
    "VolumeUpdate": Route(POST, 1, _volume_update),
    "VolumeDelete": Route(POST, 1, _volume_delete),
    "VolumeRevert": Route(POST, 1, _volume_revert),
    "VolumeFreeze": Route(POST, 1, _volume_freeze),
    # snapshots
    "SnapshotsList": Route(GET, 0, _list(snapshot=True)),
    "Snapshot": Route(GET, 1, _one(True, _summary_list)),
    "SnapshotDescribe": Route(GET, 1, _one(True, _describe)),
    "SnapshotGetInfo": Route(GET, 1, _one(True, _info)),
    "SnapshotsSpace": Route(GET, 0, _space(snapshot=True)),
    "VolumeSnapshot": Route(POST, 1, _volume_snapshot),
    "VolumesGroupSnapshot": Route(POST, 0, _group_snapshot),
    "SnapshotUpdate": Route(POST, 1, _snapshot_update),
    "SnapshotDelete": Route(POST, 1, _snapshot_delete),
    "SnapshotDeleteById": Route(POST, 1, _snapshot_delete_by_id),
    # locations and snapshots across them
    "LocationsList": Route(GET, 0, _locations),
    "SnapshotExport": Route(POST, 0, _snapshot_export),
    "SnapshotUnexport": Route(POST, 0, _snapshot_unexport),
    "ExportsList": Route(GET, 0, _exports_list),
    "SnapshotsRemoteList": Route(GET, 0, _snapshots_remote_list),
    "SnapshotFromRemote": Route(POST, 0, _snapshot_from_remote),
    "SnapshotReconcile": Route(POST, 1, _snapshot_reconcile),
    # attachments
    "AttachmentsList": Route(GET, 0, _attachments_list),
    "VolumesReassign": Route(POST, 0, _reassign),
    "VolumesReassignWait": Route(POST, 0, _reassign_wait),
    # templates and placement groups
    "VolumeTemplatesList": Route(GET, 0, _templates_list),
    "VolumeTemplatesStatus": Route(GET, 0, _templates_status),
    "VolumeTemplateDescribe": Route(GET, 1, _template_describe),
    "VolumeTemplateCreate": Route(POST, 0, _template_create),
    "VolumeTemplateUpdate": Route(POST, 1, _template_update),
    "VolumeTemplateDelete": Route(POST, 1, _template_delete),
    "PlacementGroupsList": Route(GET, 0, _placement_groups),
    "PlacementGroupDescribe": Route(GET, 1, _placement_group),
    "PlacementGroupUpdate": Route(POST, 1, _placement_group_update),
    "PlacementGroupDelete": Route(POST, 1, _placement_group_delete),
    # services
    "ServicesList": Route(GET, 0, _services),
    "ClientsConfigDump": Route(GET, 0, _clients_config),
    "ClientConfigWait": Route(GET, 1, _client_config_wait),
}
