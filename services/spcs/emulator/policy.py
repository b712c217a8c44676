"""Placement/replication/QoS settings shared by templates, volumes and snapshots."""

from __future__ import annotations

import time
from typing import Any

from spcs.emulator import naming
from spcs.emulator.body import Body
from spcs.emulator.errors import invalid, not_found
from spcs.emulator.model import State, Template, Volume

DEFAULT_REPLICATION = 3
_PLACEMENTS = (("placeAll", "place_all"), ("placeTail", "place_tail"), ("placeHead", "place_head"))


def placement_group(state: State, value: Any, what: str) -> str:
    name = naming.placement_group_name(value, what)
    if name not in state.placement_groups:
        raise not_found(f"placement group {name}")
    return name


def read(state: State, body: Body) -> dict[str, Any]:
    """The policy fields present in `body`, validated, keyed by model attribute."""
    out: dict[str, Any] = {}
    for key, attr in _PLACEMENTS:
        if key in body:
            out[attr] = placement_group(state, body.get(key), key)
    if "replication" in body:
        out["replication"] = naming.replication(body.get("replication"))
    for key in ("bw", "iops"):
        if key in body:
            out[key] = naming.limit(body.get(key), key)
    if "reuseServer" in body:
        out["reuse_server"] = naming.boolean(body.get("reuseServer"), "reuseServer")
    return out


def of_template(tmpl: Template, *, for_new: bool) -> dict[str, Any]:
    """What a template imposes: on a new volume everything, on a retemplate only what it sets."""
    out: dict[str, Any] = {
        "place_all": tmpl.place_all,
        "place_tail": tmpl.place_tail,
        "place_head": tmpl.place_head,
    }
    if isinstance(tmpl.replication, int):
        out["replication"] = tmpl.replication
    elif for_new:
        out["replication"] = DEFAULT_REPLICATION
    for key in ("bw", "iops"):
        value = getattr(tmpl, key)
        if for_new or value != naming.UNLIMITED:
            out[key] = value
    if tmpl.reuse_server is not None or for_new:
        out["reuse_server"] = tmpl.reuse_server
    return out


def of_volume(vol: Volume) -> dict[str, Any]:
    return {
        "place_all": vol.place_all,
        "place_tail": vol.place_tail,
        "place_head": vol.place_head,
        "replication": vol.replication,
        "bw": vol.bw,
        "iops": vol.iops,
        "reuse_server": vol.reuse_server,
    }


def defaults(default_group: str) -> dict[str, Any]:
    """For a volume with neither template nor source (emulator choice)."""
    return {
        "place_all": default_group,
        "place_tail": default_group,
        "place_head": default_group,
        "replication": DEFAULT_REPLICATION,
        "bw": naming.UNLIMITED,
        "iops": naming.UNLIMITED,
        "reuse_server": None,
    }


def apply(obj: Volume | Template, fields: dict[str, Any]) -> None:
    for attr, value in fields.items():
        setattr(obj, attr, value)


def read_delete_date(body: Body) -> tuple[bool, int | None]:
    """(given, date) from ``targetDeleteDate``/``deleteAfter``; 0 means "no date"."""
    now = int(time.time())
    if "targetDeleteDate" in body and "deleteAfter" in body:
        raise invalid("give targetDeleteDate or deleteAfter, not both")
    if "targetDeleteDate" in body:
        date = naming.integer(body.get("targetDeleteDate"), "targetDeleteDate")
        if date and date < now:
            raise invalid("targetDeleteDate can not be in the past")
        return True, date or None
    if "deleteAfter" in body:
        after = naming.integer(body.get("deleteAfter"), "deleteAfter")
        if after < 0:
            raise invalid("deleteAfter must be >= 0")
        return True, now + after if after else None
    return False, None
