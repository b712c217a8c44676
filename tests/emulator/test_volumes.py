"""Volumes through the official bindings (and raw HTTP for what the bindings can not send)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from storpool import spapi, sptypes

from spcs.emulator import Emulator

from .conftest import GiB
from .helpers import check, check_summary, error_of, raw_call

pytestmark = pytest.mark.fast


def _raw(api: Any, name: str) -> dict[str, Any]:
    (vol,) = api.volumeList(name, returnRawAPIData=True)
    check_summary(vol)
    return vol


def _api_error(fn: Any, *args: Any) -> spapi.ApiError:
    with pytest.raises(spapi.ApiError) as caught:
        fn(*args)
    return caught.value


def _state_volumes(emu: Emulator) -> dict[str, Any]:
    return emu.state_snapshot()["state"]["volumes"]


def test_create_with_size_template_qos_and_tags(emu: Emulator, api: Any) -> None:
    reply = api.volumeCreate(
        {
            "name": "vol1",
            "size": 10 * GiB,
            "template": "hybrid",
            "iops": 500,
            "bw": 1000,
            "tags": {"cs": "volume", "uuid": "0c6f"},
        },
        returnRawAPIData=True,
    )
    check(spapi.ApiOkVolumeCreate, reply)
    assert reply == {"ok": True, "generation": 1, "globalId": "emu.a.1"}
    vol = _raw(api, "vol1")
    assert vol["globalId"] == "emu.a.1" and vol["visibleVolumeId"] == 1
    assert (vol["size"], vol["templateName"], vol["iops"], vol["bw"]) == (
        10 * GiB,
        "hybrid",
        500,
        1000,
    )
    assert vol["replication"] == 3 and vol["placeAll"] == "default"
    assert vol["tags"] == {"cs": "volume", "uuid": "0c6f"}
    assert vol["parentName"] == "" and vol["objectsCount"] == 320
    # the bytes exist, all holes
    path = os.path.join(emu.data_dir, "objects", "emu.a.1.raw")
    assert os.stat(path).st_size == 10 * GiB and os.stat(path).st_blocks == 0


def test_list_describe_info_and_global_id_lookup(emu: Emulator, api: Any) -> None:
    gid = api.volumeCreate({"name": "vol1", "size": GiB}).globalId
    api.volumeCreate({"name": "vol2", "size": 2 * GiB})
    check([sptypes.VolumeSummary], api.volumesList(returnRawAPIData=True))
    assert [v.name for v in api.volumesList()] == ["vol1", "vol2"]
    for ref in ("vol1", f"~{gid}"):
        desc = api.volumeDescribe(ref, returnRawAPIData=True)
        check(sptypes.Volume, desc)
        assert desc["name"] == "vol1" and desc["targetDiskSets"] == []
        info = api.volumeInfo(ref, returnRawAPIData=True)
        check(sptypes.VolumeInfo, info)
        assert info["globalId"] == gid
        assert _raw(api, ref)["name"] == "vol1"


def test_anonymous_volume_via_raw_name_empty(emu: Emulator, api: Any) -> None:
    # CloudStack: {"name": ""} means anonymous; the bindings refuse "" client-side.
    status, reply = raw_call(
        emu.port,
        "POST",
        "/ctrl/1.0/MultiCluster/VolumeCreate",
        {"name": "", "size": 512, "template": "hybrid", "tags": {"cs": "check-volume-is-on-host"}},
    )
    assert status == 200
    check(spapi.ApiOkVolumeCreate, reply["data"])
    gid = reply["data"]["globalId"]
    assert reply["data"]["name"] == f"~{gid}"
    (vol,) = api.volumesList(returnRawAPIData=True)
    check_summary(vol)
    assert vol["name"] == f"~{gid}" and vol["size"] == 512
    assert api.volumeList(f"~{gid}")[0].globalId == gid
    # and without any name through the bindings
    other = api.volumeCreate({"size": GiB})
    assert other.name == f"~{other.globalId}"


def test_create_inherits_template_defaults(emu: Emulator, api: Any) -> None:
    api.volumeTemplateCreate(
        {"name": "gold", "size": 2 * GiB, "iops": 300, "bw": 7, "replication": 2}
    )
    api.volumeCreate({"name": "v", "template": "gold"})
    vol = _raw(api, "v")
    assert (vol["size"], vol["iops"], vol["bw"], vol["replication"]) == (2 * GiB, 300, 7, 2)
    api.volumeCreate({"name": "w", "template": "gold", "iops": 10, "replication": 1})
    assert (_raw(api, "w")["iops"], _raw(api, "w")["replication"]) == (10, 1)


def test_create_from_parent_snapshot_and_base_on(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "src", "size": GiB, "template": "hybrid", "iops": 5})
    api.snapshotCreate("src", {"name": "snap"})
    api.volumeCreate({"name": "child", "parent": "snap"})
    child = _raw(api, "child")
    assert (child["parentName"], child["size"], child["templateName"]) == ("snap", GiB, "hybrid")
    api.volumeCreate({"name": "big", "parent": "snap", "size": 2 * GiB})
    assert _raw(api, "big")["size"] == 2 * GiB

    reply = api.volumeCreate({"name": "copy", "baseOn": "src"}, returnRawAPIData=True)
    check(spapi.ApiOkVolumeCreate, reply)
    transient = reply["autoName"]
    assert transient.startswith("*src@")
    copy = _raw(api, "copy")
    assert copy["parentName"] == transient and copy["size"] == GiB
    (snap,) = [s for s in api.snapshotsList(returnRawAPIData=True) if s["name"] == transient]
    check_summary(snap)
    assert snap["transient"] is True and snap["autoName"] is True
    api.volumeDelete("copy")  # the transient snapshot goes with its only child
    assert transient not in [s.name for s in api.snapshotsList()]


def test_base_on_a_hash_named_volume_names_its_transient_snapshot_validly(api: Any) -> None:
    api.volumeCreate({"name": "#src", "size": GiB})
    reply = api.volumeCreate({"name": "dst", "baseOn": "#src"}, returnRawAPIData=True)
    check(spapi.ApiOkVolumeCreate, reply)
    assert reply["autoName"].startswith("*src@")
    check([sptypes.SnapshotSummary], api.snapshotsList(returnRawAPIData=True))


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"name": "bad name", "size": GiB}, "invalidParam"),
        ({"name": "list", "size": GiB}, "invalidParam"),
        ({"name": "x" * 200, "size": GiB}, "invalidParam"),
        ({"name": "~emu.a.1", "size": GiB}, "invalidParam"),
        ({"name": "v", "size": 1000}, "invalidParam"),
        ({"name": "v", "size": 0}, "invalidParam"),
        ({"name": "v", "size": "big"}, "invalidParam"),
        ({"name": "v"}, "invalidParam"),
        ({"name": "v", "size": GiB, "template": "nope"}, "objectDoesNotExist"),
        ({"name": "v", "size": GiB, "parent": "nope"}, "objectDoesNotExist"),
        ({"name": "v", "size": GiB, "baseOn": "nope"}, "objectDoesNotExist"),
        ({"name": "v", "size": GiB, "placeAll": "nope"}, "objectDoesNotExist"),
        ({"name": "v", "size": GiB, "replication": 4}, "invalidParam"),
        ({"name": "v", "size": GiB, "iops": -1}, "invalidParam"),
        ({"name": "v", "size": GiB, "tags": {"bad key": "x"}}, "invalidParam"),
        ({"name": "v", "size": GiB, "tags": {"k": "bad value"}}, "invalidParam"),
        ({"name": "v", "size": GiB, "tags": ["k"]}, "invalidParam"),
        ([1, 2], "invalidParam"),
    ],
)
def test_create_errors(emu: Emulator, api: Any, body: Any, name: str) -> None:
    _status, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeCreate", body)
    assert error_of(reply)["name"] == name
    assert api.volumesList() == []
    assert os.listdir(os.path.join(emu.data_dir, "objects")) == []


def test_duplicate_name(api: Any) -> None:
    api.volumeCreate({"name": "vol1", "size": GiB})
    err = _api_error(api.volumeCreate, {"name": "vol1", "size": GiB})
    assert err.name == "objectExists"
    api.snapshotCreate("vol1", {"name": "snap1"})
    # one namespace for volumes and snapshots (emulator choice)
    assert _api_error(api.volumeCreate, {"name": "snap1", "size": GiB}).name == "objectExists"
    assert len(api.volumesList()) == 1


def test_resize_grow_shrink_and_size_add(emu: Emulator, api: Any) -> None:
    gid = api.volumeCreate({"name": "v", "size": 2 * GiB}).globalId
    path = os.path.join(emu.data_dir, "objects", f"{gid}.raw")
    check(spapi.ApiOk, api.volumeUpdate("v", {"size": 4 * GiB}, returnRawAPIData=True))
    assert api.volumeList("v")[0].size == 4 * GiB and os.path.getsize(path) == 4 * GiB
    api.volumeUpdate("v", {"sizeAdd": GiB})
    assert api.volumeList("v")[0].size == 5 * GiB and os.path.getsize(path) == 5 * GiB

    err = _api_error(api.volumeUpdate, "v", {"size": GiB})
    assert err.name == "invalidParam" and "shrinkOk" in err.desc
    assert api.volumeList("v")[0].size == 5 * GiB and os.path.getsize(path) == 5 * GiB

    api.volumeUpdate("v", {"size": GiB, "shrinkOk": True})
    assert api.volumeList("v")[0].size == GiB and os.path.getsize(path) == GiB
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeUpdate/v", {"size": 1000})
    assert error_of(reply)["name"] == "invalidParam"
    _status, reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/VolumeUpdate/v", {"size": GiB, "sizeAdd": 512}
    )
    assert error_of(reply)["name"] == "invalidParam"


def test_update_qos_tags_rename_and_template(emu: Emulator, api: Any) -> None:
    api.volumeTemplateCreate({"name": "gold", "replication": 2, "iops": 99})
    gid = api.volumeCreate(
        {"name": "v", "size": GiB, "template": "hybrid", "tags": {"cs": "volume", "cvm": "vm1"}}
    ).globalId
    api.volumeUpdate("v", {"iops": 1000, "bw": 50, "tags": {"disk": "1"}})
    vol = _raw(api, "v")
    assert (vol["iops"], vol["bw"]) == (1000, 50)
    assert vol["tags"] == {"cs": "volume", "cvm": "vm1", "disk": "1"}  # merged
    # "" deletes a tag (CloudStack clears cvm on detach this way)
    raw_call(emu.port, "POST", "/ctrl/1.0/VolumeUpdate/v", {"tags": {"cvm": "", "disk": ""}})
    assert _raw(api, "v")["tags"] == {"cs": "volume"}
    api.volumeUpdate("v", {"iops": 0})
    assert _raw(api, "v")["iops"] == 0

    api.volumeUpdate("v", {"template": "gold"})
    vol = _raw(api, "v")
    assert (vol["templateName"], vol["replication"], vol["iops"]) == ("gold", 2, 99)

    api.volumeUpdate("v", {"rename": "renamed"})
    assert [v.name for v in api.volumesList()] == ["renamed"]
    assert api.volumeList(f"~{gid}")[0].name == "renamed"
    # rename to "" makes it anonymous
    raw_call(emu.port, "POST", "/ctrl/1.0/VolumeUpdate/renamed", {"rename": ""})
    assert [v.name for v in api.volumesList()] == [f"~{gid}"]
    assert _api_error(api.volumeList, "renamed").name == "objectDoesNotExist"


def test_update_errors_change_nothing(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "a", "size": GiB, "tags": {"k": "v"}})
    api.volumeCreate({"name": "b", "size": GiB})
    before = _state_volumes(emu)
    cases = [
        ("a", {"rename": "b"}, "objectExists"),
        ("a", {"template": "nope"}, "objectDoesNotExist"),
        ("a", {"iops": 5, "size": 999}, "invalidParam"),
        ("a", {"rename": "ok", "tags": {"k": "bad value"}}, "invalidParam"),
        ("nope", {"size": GiB}, "objectDoesNotExist"),
    ]
    for name, body, error in cases:
        _, reply = raw_call(emu.port, "POST", f"/ctrl/1.0/VolumeUpdate/{name}", body)
        assert error_of(reply)["name"] == error, body
    assert _state_volumes(emu) == before


def test_delete(emu: Emulator, api: Any) -> None:
    gid = api.volumeCreate({"name": "v", "size": GiB}).globalId
    check(spapi.ApiOk, api.volumeDelete("v", returnRawAPIData=True))
    assert api.volumesList() == []
    assert not os.path.exists(os.path.join(emu.data_dir, "objects", f"{gid}.raw"))
    assert _api_error(api.volumeDelete, "v").name == "objectDoesNotExist"
    other = api.volumeCreate({"size": GiB}).globalId
    api.volumeDelete(f"~{other}")
    assert api.volumesList() == []


def test_delete_attached_needs_detach_force(emu: Emulator, api: Any, roots: Any) -> None:
    gid = api.volumeCreate({"name": "v", "size": GiB}).globalId
    api.volumesReassign([{"volume": "v", "rw": [1, 2]}])
    err = _api_error(api.volumeDelete, "v")
    assert err.name == "busy"
    assert len(api.attachmentsList()) == 2
    status, reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/MultiCluster/VolumeDelete/v", {"onAttached": "detachForce"}
    )
    assert status == 200, reply
    assert api.volumesList() == [] and api.attachmentsList() == []
    for root in roots.values():
        assert not os.path.lexists(root / "storpool" / "v")
        assert not os.path.lexists(root / "storpool-byid" / gid)
    api.volumeCreate({"name": "x", "size": GiB})
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeDelete/x", {"onAttached": "maybe"})
    assert error_of(reply)["name"] == "invalidParam"
    assert [v.name for v in api.volumesList()] == ["x"]


def test_freeze_turns_a_volume_into_a_snapshot(api: Any) -> None:
    gid = api.volumeCreate({"name": "v", "size": GiB}).globalId
    api.volumeFreeze("v")
    assert api.volumesList() == []
    (snap,) = api.snapshotsList(returnRawAPIData=True)
    check_summary(snap)
    assert (snap["name"], snap["globalId"], snap["onVolume"]) == ("v", gid, "-")


def test_volume_list_snapshots_and_status(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "s1"})
    api.snapshotCreate("v", {"name": "s2"})
    chain = api.volumeListSnapshots("v", returnRawAPIData=True)
    check([sptypes.SnapshotSummary], chain)
    assert [s["name"] for s in chain] == ["s2", "s1"]
    status = api.volumesStatus(returnRawAPIData=True)
    assert set(status) == {"v", "s1", "s2"}
    check(sptypes.VolumeStatus, status["v"])
    check(sptypes.SnapshotStatus, status["s1"])
    quick = raw_call(emu.port, "GET", "/ctrl/1.0/VolumesGetStatusQuick")[1]["data"]
    check(sptypes.VolumeStatusQuick, quick["v"])
    both = raw_call(emu.port, "GET", "/ctrl/1.0/VolumesAndSnapshotsList")[1]["data"]
    assert [v["name"] for v in both["volumes"]] == ["v"]
    assert [s["name"] for s in both["snapshots"]] == ["s1", "s2"]
