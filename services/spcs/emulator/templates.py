"""Volume templates and placement groups."""

from __future__ import annotations

import logging
from typing import Any

from spcs.emulator import guards, naming, policy
from spcs.emulator.body import Body
from spcs.emulator.cluster import Cluster, Txn
from spcs.emulator.errors import busy, exists, invalid, not_found
from spcs.emulator.model import PlacementGroup, State, Template, Volume

log = logging.getLogger(__name__)


def _parent(cluster: Cluster, state: State, value: Any) -> str | None:
    """A template's parent: a named snapshot (the reply type has no ``~gid`` form)."""
    if value == "":
        return None
    name = naming.snapshot_name(value, "parent")
    snap = cluster.resolve(state, name, snapshot=True)
    guards.check_recovered(snap)
    return snap.gid


def _template_size(value: Any) -> int | str:
    return naming.UNLIMITED if value == naming.UNLIMITED else naming.size(value)


def new_template(state: State, name: str, group: str, **fields: Any) -> Template:
    tmpl = Template(
        id=state.next_template_id, name=name, place_all=group, place_tail=group, place_head=group
    )
    state.next_template_id += 1
    policy.apply(tmpl, fields)
    state.templates[name] = tmpl
    return tmpl


def create(cluster: Cluster, txn: Txn, body: Any) -> dict[str, Any]:
    state = txn.state
    b = Body(body)
    name = naming.template_name(b.require("name"))
    if name in state.templates:
        raise exists(f"template {name}")
    fields = policy.read(state, b)
    if "size" in b:
        fields["size"] = _template_size(b.get("size"))
    if "parent" in b:
        fields["parent"] = _parent(cluster, state, b.get("parent"))
    new_template(state, name, cluster.default_placement_group, **fields)
    log.info("created template %s", name)
    return txn.ok()


def update(cluster: Cluster, txn: Txn, name: str, body: Any) -> dict[str, Any]:
    state = txn.state
    tmpl = cluster.template(state, name)
    b = Body(body)
    fields = policy.read(state, b)
    if "size" in b:
        fields["size"] = _template_size(b.get("size"))
    if "parent" in b:
        fields["parent"] = _parent(cluster, state, b.get("parent"))
    propagate = naming.boolean(b.get("propagate", False), "propagate")
    new_name = naming.template_name(b.get("rename"), "rename") if "rename" in b else name
    if new_name != name and new_name in state.templates:
        raise exists(f"template {new_name}")

    policy.apply(tmpl, fields)
    if new_name != name:
        del state.templates[name]
        tmpl.name = new_name
        state.templates[new_name] = tmpl
    members = [v for v in state.volumes.values() if v.template == name]
    for vol in members:
        vol.template = new_name
        if propagate:
            policy.apply(vol, {k: v for k, v in fields.items() if k not in ("size", "parent")})
    return txn.ok()


def delete(cluster: Cluster, txn: Txn, name: str) -> dict[str, Any]:
    state = txn.state
    cluster.template(state, name)
    users = [v for v in state.volumes.values() if v.template == name]
    if users:
        raise busy(f"template {name} is used by {len(users)} volume(s)/snapshot(s)")
    del state.templates[name]
    return txn.ok()


def set_capacity(cluster: Cluster, txn: Txn, body: Any) -> dict[str, Any]:
    """Admin: a template's capacity in client-data bytes (null = the filesystem's size)."""
    b = Body(body)
    tmpl = cluster.template(txn.state, naming.template_name(b.require("template")))
    capacity = b.get("capacity")
    if capacity is not None and (
        isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0
    ):
        raise invalid("capacity must be an integer >= 0 or null")
    tmpl.capacity = capacity
    return {"template": tmpl.name, "capacity": capacity}


# Placement groups: the emulator has no disks, so a group is just a name.


def placement_group_update(cluster: Cluster, txn: Txn, name: str, body: Any) -> dict[str, Any]:
    """Create and/or update (rename) a placement group; disk lists are accepted and ignored."""
    state = txn.state
    name = naming.placement_group_name(name)
    b = Body(body)
    new_name = naming.placement_group_name(b.get("rename"), "rename") if "rename" in b else name
    pg = state.placement_groups.get(name)
    if pg is None:
        pg = PlacementGroup(id=state.next_pg_id, name=name)
        state.next_pg_id += 1
        state.placement_groups[name] = pg
    if new_name != name:
        if new_name in state.placement_groups:
            raise exists(f"placement group {new_name}")
        if name == cluster.default_placement_group:
            raise busy(f"placement group {name} is the emulator's default group")
        del state.placement_groups[name]
        pg.name = new_name
        state.placement_groups[new_name] = pg
        for obj in [*state.templates.values(), *state.volumes.values()]:
            for attr in ("place_all", "place_tail", "place_head"):
                if getattr(obj, attr) == name:
                    setattr(obj, attr, new_name)
    return txn.ok()


def placement_group_delete(cluster: Cluster, txn: Txn, name: str) -> dict[str, Any]:
    state = txn.state
    if name not in state.placement_groups:
        raise not_found(f"placement group {name}")
    placed: list[Template | Volume] = [*state.templates.values(), *state.volumes.values()]
    for obj in placed:
        if name in (obj.place_all, obj.place_tail, obj.place_head):
            raise busy(f"placement group {name} is in use")
    if name == cluster.default_placement_group:
        raise busy(f"placement group {name} is the emulator's default group")
    del state.placement_groups[name]
    return txn.ok()
