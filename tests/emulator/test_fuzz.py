"""Randomized malformed requests: never a crash, always an envelope, state stays consistent."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from storpool import sptypes

from spcs.emulator import Emulator
from spcs.emulator.routes import ROUTES

from .conftest import MiB
from .helpers import check, check_summary, error_of, raw_call

pytestmark = pytest.mark.fast

FIELDS = [
    "name", "size", "sizeAdd", "shrinkOk", "template", "parent", "baseOn", "tags", "iops", "bw",
    "replication", "placeAll", "rename", "toSnapshot", "revertSize", "onAttached", "volume",
    "snapshot", "rw", "ro", "detach", "force", "reassign", "attachTimeout", "volumes", "bind",
    "deleteAfter", "targetDeleteDate", "propagate", "client", "open", "capacity",
]  # fmt: skip
ARGS = [
    "v", "s", "~emu.a.1", "~emu.a.2", "~emu.a.999", "~", "~A.B.C", "#v", "*s@x", "list",
    "status", "%23v", "%7Eemu.a.1", "%00", "%ff", "..", "a:b", "x" * 250, "%C3%A9", "%0a", "hybrid",
    "1", "0", "4096", "-1",
]  # fmt: skip
COMMANDS = [*ROUTES, "NoSuch", "_emulator", "MultiCluster", "RemoteCommand", "AllClusters"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(11 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 512, MiB, 2**63, -(2**70), 7])
    if kind == 3:
        return rng.choice([0.5, 1e308, -0.0])
    if kind in (4, 5):
        return rng.choice(["", "-", "all", "v", "s", "~emu.a.1", "bad name", "x" * 300, "1"])
    if kind == 6:
        return rng.choice(ARGS)
    if kind in (7, 8):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = rng.sample(FIELDS, rng.randrange(1, 5))
    return {k: _value(rng, depth + 1) for k in keys}


def _body(rng: random.Random) -> bytes | None:
    kind = rng.randrange(6)
    if kind == 0:
        return None
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    if kind == 2:
        return json.dumps(_value(rng)).encode()[: rng.randrange(1, 60)]  # truncated
    return json.dumps(_value(rng)).encode()


def _request(rng: random.Random) -> tuple[str, str]:
    """Mostly well-formed (known command, its method and arity), so bodies get exercised."""
    parts = []
    if rng.random() < 0.2:
        parts += ["RemoteCommand", rng.choice(["emu.a", "other", "~emu.a"])]
    if rng.random() < 0.4:
        parts.append("MultiCluster")
    if rng.random() < 0.1:
        parts.append("AllClusters")
    command = rng.choice(COMMANDS) if rng.random() < 0.15 else rng.choice(list(ROUTES))
    route = ROUTES.get(command)
    method = route.method if route and rng.random() < 0.9 else rng.choice(["GET", "POST"])
    nargs = route.nargs if route and rng.random() < 0.85 else rng.choice([0, 1, 2])
    parts += [command, *(rng.choice(ARGS) for _ in range(nargs))]
    return method, "/ctrl/1.0/" + "/".join(parts)


def _consistent(emu: Emulator, roots: dict[int, Path]) -> None:
    snap = emu.state_snapshot()
    state = snap["state"]
    objects = Path(snap["dataDir"]) / "objects"
    vols = state["volumes"]
    assert sorted(os.listdir(objects)) == sorted(f"{gid}.raw" for gid in vols)
    for gid, vol in vols.items():
        assert os.path.getsize(objects / f"{gid}.raw") == vol["size"]
        assert vol["parent"] is None or vol["parent"] in vols
    for att in state["attachments"]:
        vol = vols[att["gid"]]
        root = roots[att["client"]]
        assert os.path.samefile(root / "storpool-byid" / att["gid"], objects / f"{att['gid']}.raw")
        if vol["name"] is not None:
            assert os.path.lexists(root / "storpool" / vol["name"])
    names = [v["name"] for v in vols.values() if v["name"] is not None]
    assert len(names) == len(set(names))


def test_fuzzed_requests(emu: Emulator, api: Any, roots: dict[int, Path]) -> None:
    api.volumeCreate({"name": "v", "size": 4 * MiB, "template": "hybrid"})
    api.snapshotCreate("v", {"name": "s"})
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    rng = random.Random(20260101)
    for i in range(1500):
        method, path = _request(rng)
        body = _body(rng)
        if rng.random() < 0.1 and body is None:
            path += "?json=" + rng.choice(["%7B", "%7B%7D", "x", "%5B1%5D"])
        status, reply = raw_call(emu.port, method, path, body)
        where = f"#{i} {method} {path} {body!r}"
        if status == 200:
            assert set(reply) == {"generation", "data"}, where
        else:
            err = error_of(reply)
            assert err["name"] != "internalError", f"{where}: {err}"
            assert not err["transient"], where
    _consistent(emu, roots)
    for item in api.volumesList(returnRawAPIData=True) + api.snapshotsList(returnRawAPIData=True):
        check_summary(item)
    check([sptypes.AttachmentDesc], api.attachmentsList(returnRawAPIData=True))
    check([sptypes.VolumeTemplateStatusDesc], api.volumeTemplatesStatus(returnRawAPIData=True))
    # and it still works normally
    api.volumeCreate({"name": "after-fuzz", "size": MiB})
    assert "after-fuzz" in [v.name for v in api.volumesList()]
