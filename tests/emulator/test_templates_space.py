"""Templates, placement groups, and space accounting against really allocated bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from storpool import spapi, sptypes

from spcs.emulator import Emulator

from .conftest import GiB, MiB
from .helpers import check, check_summary, error_of, raw_call

pytestmark = pytest.mark.fast


def _api_error(fn: Any, *args: Any) -> spapi.ApiError:
    with pytest.raises(spapi.ApiError) as caught:
        fn(*args)
    return caught.value


def _status(api: Any, name: str) -> dict[str, Any]:
    raw = api.volumeTemplatesStatus(returnRawAPIData=True)
    check([sptypes.VolumeTemplateStatusDesc], raw)
    (status,) = [t for t in raw if t["name"] == name]
    return status


def test_configured_templates_and_default_placement_group(emu: Emulator, api: Any) -> None:
    raw = api.volumeTemplatesList(returnRawAPIData=True)
    check([sptypes.VolumeTemplateDesc], raw)
    assert [t["name"] for t in raw] == ["hybrid", "small"]
    hybrid = api.volumeTemplateDescribe("hybrid", returnRawAPIData=True)
    check(sptypes.VolumeTemplateDesc, hybrid)
    assert (hybrid["parentName"], hybrid["size"], hybrid["bw"], hybrid["iops"]) == (
        "",
        "-",
        "-",
        "-",
    )
    assert hybrid["placeAll"] == hybrid["placeTail"] == hybrid["placeHead"] == "default"
    groups = api.placementGroupsList(returnRawAPIData=True)
    check({str: sptypes.PlacementGroup}, groups)
    assert list(groups) == ["default"]
    assert _api_error(api.volumeTemplateDescribe, "nope").name == "objectDoesNotExist"


def test_template_create_update_delete(emu: Emulator, api: Any) -> None:
    api.placementGroupUpdate("ssd", {})
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "base"})
    check(
        spapi.ApiOk,
        api.volumeTemplateCreate(
            {
                "name": "fast",
                "placeAll": "ssd",
                "placeTail": "ssd",
                "placeHead": "default",
                "replication": 2,
                "size": 2 * GiB,
                "iops": 1000,
                "bw": "-",
                "parent": "base",
            },
            returnRawAPIData=True,
        ),
    )
    fast = api.volumeTemplateDescribe("fast", returnRawAPIData=True)
    check(sptypes.VolumeTemplateDesc, fast)
    assert (fast["placeAll"], fast["replication"], fast["size"], fast["parentName"]) == (
        "ssd",
        2,
        2 * GiB,
        "base",
    )
    assert _api_error(api.volumeTemplateCreate, {"name": "fast"}).name == "objectExists"
    err = _api_error(api.volumeTemplateCreate, {"name": "x", "placeAll": "hdd"})
    assert err.name == "objectDoesNotExist"
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeTemplateCreate", {"name": "a.b"})
    assert error_of(reply)["name"] == "invalidParam"

    # a volume from the template takes its parent, size and policy
    api.volumeCreate({"name": "w", "template": "fast"})
    (w,) = api.volumeList("w", returnRawAPIData=True)
    check_summary(w)
    assert (w["parentName"], w["size"], w["iops"], w["placeAll"]) == ("base", 2 * GiB, 1000, "ssd")

    api.volumeTemplateUpdate("fast", {"rename": "faster", "iops": 5, "propagate": True})
    (w,) = api.volumeList("w", returnRawAPIData=True)
    assert (w["templateName"], w["iops"]) == ("faster", 5)
    assert _api_error(api.volumeTemplateDelete, "faster").name == "busy"  # w uses it
    assert _api_error(api.snapshotDelete, "base").name == "busy"  # template's parent
    api.volumeDelete("w")
    api.volumeTemplateDelete("faster")
    assert [t.name for t in api.volumeTemplatesList()] == ["hybrid", "small"]
    assert _api_error(api.placementGroupDelete, "default").name == "busy"
    api.placementGroupUpdate("ssd", {"rename": "nvme"})
    check(sptypes.PlacementGroup, api.placementGroupDescribe("nvme", returnRawAPIData=True))
    assert api.volumeList("v")[0].placeAll == "default"
    api.placementGroupDelete("nvme")
    assert list(api.placementGroupsList()) == ["default"]
    assert _api_error(api.placementGroupDescribe, "nvme").name == "objectDoesNotExist"


def test_capacity_follows_allocated_bytes(emu: Emulator, api: Any, roots: dict[int, Path]) -> None:
    # "small" holds 4 MiB of client data; volumes are thin, so a big one is fine
    gid = api.volumeCreate({"name": "v", "size": 64 * MiB, "template": "small"}).globalId
    status = _status(api, "small")
    assert status["stored"]["capacity"] == 4 * MiB
    assert status["stored"]["free"] == 4 * MiB
    assert (status["volumesCount"], status["size"], status["storedSize"]) == (1, 64 * MiB, 0)

    api.volumesReassign([{"volume": "v", "rw": [1]}])
    with open(roots[1] / "storpool-byid" / gid, "r+b") as dev:
        dev.write(os.urandom(3 * MiB))
    status = _status(api, "small")
    assert 3 * MiB <= status["storedSize"] < 4 * MiB
    assert status["stored"]["free"] == 4 * MiB - status["storedSize"]
    assert status["capacityPlaceAll"] == 3 * 4 * MiB  # raw = client x replication
    api.snapshotCreate("v", {"name": "s1"})  # still room: allocation 3 MiB < 4 MiB

    status = _status(api, "small")
    assert status["stored"]["free"] == 0 and status["snapshotsCount"] == 1
    for call, args in [
        (api.volumeCreate, ({"name": "w", "size": MiB, "template": "small"},)),
        (api.volumeUpdate, ("v", {"size": 128 * MiB})),
        (api.snapshotCreate, ("v", {"name": "s2"})),
    ]:
        err = _api_error(call, *args)
        assert err.name == "insufficientResources", call
    assert [v.name for v in api.volumesList()] == ["v"]
    assert api.volumeList("v")[0].size == 64 * MiB
    # other templates are unaffected; freeing space lifts the limit
    api.volumeCreate({"name": "elsewhere", "size": MiB, "template": "hybrid"})
    api.volumesReassign([{"volume": "v", "detach": "all"}])
    api.volumeDelete("v")
    api.snapshotDelete("s1")
    api.volumeCreate({"name": "w", "size": MiB, "template": "small"})


def test_capacity_admin_endpoint(emu: Emulator, api: Any) -> None:
    status, _reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/_emulator/capacity", {"template": "hybrid", "capacity": 0}
    )
    assert status == 200
    assert _api_error(api.volumeCreate, {"size": MiB, "template": "hybrid"}).name == (
        "insufficientResources"
    )
    raw_call(emu.port, "POST", "/ctrl/1.0/_emulator/capacity", {"template": "hybrid"})
    api.volumeCreate({"size": MiB, "template": "hybrid"})
    fs = os.statvfs(emu.data_dir)
    assert _status(api, "hybrid")["stored"]["capacity"] == fs.f_blocks * fs.f_frsize


def test_volumes_and_snapshots_space(emu: Emulator, api: Any, roots: dict[int, Path]) -> None:
    gid = api.volumeCreate({"name": "v", "size": 16 * MiB}).globalId
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    with open(roots[1] / "storpool-byid" / gid, "r+b") as dev:
        dev.write(os.urandom(MiB))
    api.snapshotCreate("v", {"name": "s"})
    vols = api.volumesSpace(returnRawAPIData=True)
    check([sptypes.VolumeSpace], vols)
    assert MiB <= vols[0]["spaceUsed"] < 2 * MiB and vols[0]["size"] == 16 * MiB
    snaps = api.snapshotsSpace(returnRawAPIData=True)
    check([sptypes.SnapshotSpace], snaps)
    assert MiB <= snaps[0]["storedSize"] < 2 * MiB
