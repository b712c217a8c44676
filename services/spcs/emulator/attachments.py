"""VolumesReassign / VolumesReassignWait: attach and detach volumes and snapshots to clients.

One element per object: ``{"volume"|"snapshot": ref, "rw"?, "ro"?, "detach"?, "force"?}``.
``detach: "all"`` means every client the object is attached to *except* those
the same element attaches (so ``{"rw": [3], "detach": "all"}`` moves it to client 3
without touching an attachment that is already there). A detach of an
attachment that some process holds open answers ``busy`` with
``"'<name>' is open at client <id>"`` unless ``force`` is set. The whole
request is checked before anything changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from spcs.emulator import guards, naming
from spcs.emulator.body import Body
from spcs.emulator.cluster import Cluster, Txn
from spcs.emulator.errors import busy, invalid
from spcs.emulator.model import Attachment, State, Volume

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    vol: Volume
    attach: dict[int, str] = field(default_factory=dict)  # client -> rights
    detach: list[int] = field(default_factory=list)
    force: bool = False


def _clients(cluster: Cluster, value: Any, what: str) -> list[int]:
    if not isinstance(value, list):
        raise invalid(f"{what} must be a list of client ids")
    ids = [naming.client_id(v) for v in value]
    for cid in ids:
        cluster.host(cid)
    return ids


def _plan(cluster: Cluster, state: State, item: Any) -> _Plan:
    b = Body(item, "each reassign entry")
    if ("volume" in b) == ("snapshot" in b):
        raise invalid('each reassign entry needs exactly one of "volume" and "snapshot"')
    is_snap = "snapshot" in b
    key = "snapshot" if is_snap else "volume"
    vol = cluster.resolve(
        state, naming.object_ref(b.get(key), key, snapshot=is_snap), snapshot=is_snap
    )
    plan = _Plan(vol, force=naming.boolean(b.get("force", False), "force"))
    if is_snap and "rw" in b:
        raise invalid(f"snapshot {vol.ref} can only be attached read-only")
    for rights in ("ro", "rw"):
        for cid in _clients(cluster, b.get(rights, []), rights):
            plan.attach[cid] = rights  # rw wins when a client is in both lists
    if plan.attach and vol.snapshot and (vol.deleted or vol.transient):
        raise invalid(f"snapshot {vol.ref} can not be attached (deleted or transient)")
    if plan.attach:
        guards.check_recovered(vol)
    attached = [a.client for a in state.attachments_of(vol.gid)]
    detach = b.get("detach", [])
    wanted = attached if detach == "all" else _clients(cluster, detach, "detach")
    plan.detach = [c for c in attached if c in wanted and c not in plan.attach]
    return plan


def _rights_changes(cluster: Cluster, state: State, plan: _Plan) -> list[int]:
    """Clients whose device must be re-created for new rights (loop mode: ro is a device flag)."""
    if not cluster.loop:
        return []
    out = []
    for cid, rights in plan.attach.items():
        att = state.attachment(cid, plan.vol.gid)
        if att is not None and att.rights != rights:
            out.append(cid)
    return out


def reassign(cluster: Cluster, txn: Txn, items: Any) -> dict[str, Any]:
    state = txn.state
    if not isinstance(items, list):
        raise invalid("the reassign list must be a JSON array")
    plans = [_plan(cluster, state, item) for item in items]
    seen: set[str] = set()
    for plan in plans:
        if plan.vol.gid in seen:
            raise invalid(f"{plan.vol.kind} {plan.vol.ref} is listed twice")
        seen.add(plan.vol.gid)
    for plan in plans:
        if plan.force:
            continue
        held = cluster.open_clients(
            state, plan.vol, plan.detach + _rights_changes(cluster, state, plan)
        )
        if held:
            raise busy(f"'{plan.vol.ref}' is open at client {held[0]}")
    for plan in plans:
        _apply(cluster, txn, plan)
    return txn.ok()


def _apply(cluster: Cluster, txn: Txn, plan: _Plan) -> None:
    state, vol = txn.state, plan.vol
    for cid in plan.detach:
        att = state.attachment(cid, vol.gid)
        if att is not None:
            cluster.unpublish(txn, att, vol)
            state.attachments.remove(att)
            log.info("detached %s %s from client %d", vol.kind, vol.ref, cid)
    for cid, rights in plan.attach.items():
        att = state.attachment(cid, vol.gid)
        if att is not None and att.rights == rights:
            continue
        if att is not None:
            cluster.change_rights(txn, att, vol, rights)
            continue
        att = Attachment(client=cid, gid=vol.gid, rights=rights, pos=cluster.free_pos(txn, cid))
        state.attachments.append(att)
        cluster.publish(txn, att, vol)
        log.info(
            "attached %s %s to client %d (%s, pos %d)", vol.kind, vol.ref, cid, rights, att.pos
        )


def mark_open(cluster: Cluster, txn: Txn, body: Any) -> dict[str, Any]:
    """Admin: set or clear the emulated "open" flag of one attachment."""
    b = Body(body)
    if ("volume" in b) == ("snapshot" in b):
        raise invalid('give exactly one of "volume" and "snapshot"')
    is_snap = "snapshot" in b
    key = "snapshot" if is_snap else "volume"
    vol = cluster.resolve(
        txn.state, naming.object_ref(b.get(key), key, snapshot=is_snap), snapshot=is_snap
    )
    client = naming.client_id(b.require("client"))
    att = txn.state.attachment(client, vol.gid)
    if att is None:
        raise invalid(f"{vol.kind} {vol.ref} is not attached to client {client}")
    att.marked_open = naming.boolean(b.get("open", True), "open")
    return {"volume": vol.ref, "client": client, "open": att.marked_open}
