"""Snapshots: create, list, update, delete (with children), group snapshots, revert."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from storpool import spapi, sptypes

from spcs.emulator import Emulator

from .conftest import GiB
from .helpers import check, check_summary, error_of, raw_call

pytestmark = pytest.mark.fast


def _api_error(fn: Any, *args: Any) -> spapi.ApiError:
    with pytest.raises(spapi.ApiError) as caught:
        fn(*args)
    return caught.value


def _snap(api: Any, ref: str) -> dict[str, Any]:
    (snap,) = api.snapshotList(ref, returnRawAPIData=True)
    check_summary(snap)
    return snap


def test_snapshot_named_with_tags(emu: Emulator, api: Any) -> None:
    vgid = api.volumeCreate({"name": "v", "size": GiB, "template": "hybrid"}).globalId
    reply = api.snapshotCreate(
        "v", {"name": "snap1", "tags": {"cs": "snapshot"}}, returnRawAPIData=True
    )
    check(spapi.ApiOkSnapshotCreate, reply)
    assert reply["snapshotGlobalId"] == "emu.a.2" and reply["snapshotVisibleVolumeId"] == 2
    snap = _snap(api, "snap1")
    assert (snap["onVolume"], snap["parentName"], snap["templateName"]) == ("v", "", "hybrid")
    assert snap["tags"] == {"cs": "snapshot"}
    assert (snap["autoName"], snap["deleted"], snap["transient"], snap["bound"]) == (
        False,
        False,
        False,
        False,
    )
    assert api.volumeList("v")[0].parentName == "snap1"  # the snapshot became the parent
    api.snapshotCreate(f"~{vgid}", {"name": "snap2"})
    assert _snap(api, "snap2")["parentName"] == "snap1"
    check([sptypes.SnapshotSummary], api.snapshotsList(returnRawAPIData=True))
    check(sptypes.Snapshot, api.snapshotDescribe("snap1", returnRawAPIData=True))
    check(sptypes.SnapshotInfo, api.snapshotInfo("snap1", returnRawAPIData=True))


def test_anonymous_snapshots(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    status, reply = raw_call(
        emu.port,
        "POST",
        "/ctrl/1.0/MultiCluster/VolumeSnapshot/v",
        {"name": "", "tags": {"cs": "snapshot", "uuid": "u1"}},
    )
    assert status == 200
    check(spapi.ApiOkSnapshotCreate, reply["data"])
    gid = reply["data"]["snapshotGlobalId"]
    snap = _snap(api, f"~{gid}")
    assert snap["name"] == f"~{gid}" and snap["autoName"] is True
    other = api.snapshotCreate("v", {}).snapshotGlobalId  # no name through the bindings
    assert _snap(api, f"~{other}")["name"] == f"~{other}"


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("VolumeSnapshot/nope", {}, "objectDoesNotExist"),
        ("VolumeSnapshot/v", {"name": "bad name"}, "invalidParam"),
        ("VolumeSnapshot/v", {"name": "*star"}, "invalidParam"),  # a VolumeName rule
        ("VolumeSnapshot/v", {"name": "#hash"}, "invalidParam"),  # not a SnapshotName
        ("VolumeSnapshot/v", {"name": "v"}, "objectExists"),
        ("VolumeSnapshot/v", {"tags": {"k": "a b"}}, "invalidParam"),
        ("VolumeSnapshot/v", {"targetDeleteDate": 1}, "invalidParam"),
        ("Snapshot/nope", None, "objectDoesNotExist"),
        ("SnapshotUpdate/nope", {}, "objectDoesNotExist"),
        ("SnapshotDelete/nope", None, "objectDoesNotExist"),
        ("SnapshotDeleteById/not-a-gid", None, "invalidParam"),
    ],
)
def test_snapshot_errors(emu: Emulator, api: Any, path: str, body: Any, error: str) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    method = "GET" if path.startswith("Snapshot/") else "POST"
    _, reply = raw_call(emu.port, method, f"/ctrl/1.0/{path}", body)
    assert error_of(reply)["name"] == error
    assert api.snapshotsList() == []


def test_snapshot_update_tags_rename_template(emu: Emulator, api: Any) -> None:
    api.volumeTemplateCreate({"name": "cold", "replication": 1})
    api.volumeCreate({"name": "v", "size": GiB, "template": "hybrid"})
    gid = api.snapshotCreate("v", {"name": "s", "tags": {"a": "1", "b": "2"}}).snapshotGlobalId
    # upstream CloudStack posts {} under MultiCluster/ to learn the owning cluster
    status, reply = raw_call(emu.port, "POST", f"/ctrl/1.0/MultiCluster/SnapshotUpdate/~{gid}", {})
    assert status == 200
    check(spapi.ApiOk, reply["data"])
    api.snapshotUpdate("s", {"tags": {"b": "", "c": "3"}, "rename": "s2", "template": "cold"})
    snap = _snap(api, "s2")
    assert snap["tags"] == {"a": "1", "c": "3"}
    assert (snap["templateName"], snap["replication"]) == ("cold", 1)
    assert api.volumeList("v")[0].parentName == "s2"
    assert _api_error(api.snapshotList, "s").name == "objectDoesNotExist"


def test_delete_snapshot_with_children_is_deferred(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    sgid = api.snapshotCreate("v", {"name": "s"}).snapshotGlobalId
    api.volumeCreate({"name": "clone", "parent": "s"})
    check(spapi.ApiOk, api.snapshotDelete("s", returnRawAPIData=True))
    snap = _snap(api, "s")
    assert snap["deleted"] is True
    assert os.path.exists(os.path.join(emu.data_dir, "objects", f"{sgid}.raw"))
    # a deleted snapshot can't be cloned
    assert _api_error(api.volumeCreate, {"name": "c2", "parent": "s"}).name == "invalidParam"
    api.volumeDelete("clone")
    assert [s.name for s in api.snapshotsList()] == ["s"]  # v still sits on it
    api.volumeDelete("v")
    assert api.snapshotsList() == []
    assert not os.path.exists(os.path.join(emu.data_dir, "objects", f"{sgid}.raw"))


def test_delete_snapshot_chain_cascades(api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "s1"})
    api.snapshotCreate("v", {"name": "s2"})  # s2.parent = s1, v.parent = s2
    api.snapshotDelete("s1")
    assert [s.deleted for s in api.snapshotsList()] == [True, False]
    api.volumeDelete("v")
    api.snapshotDelete("s2")  # s2 goes, then s1 has no child left
    assert api.snapshotsList() == []


def test_delete_by_id_and_attached_snapshot(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.volumeFreeze("v")
    gid = api.snapshotList("v")[0].globalId
    api.volumesReassign([{"snapshot": "v", "ro": [1]}])
    assert _api_error(api.snapshotDeleteById, gid).name == "busy"
    api.volumesReassign([{"snapshot": "v", "detach": "all"}])
    check(spapi.ApiOk, api.snapshotDeleteById(gid, returnRawAPIData=True))
    assert api.snapshotsList() == []


def test_bound_snapshot_goes_away_when_childless(api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "b", "bind": True})
    assert api.snapshotList("b")[0].bound is True
    api.volumeDelete("v")
    assert api.snapshotsList() == []


def test_delete_after_expires(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.volumeFreeze("v")
    api.snapshotUpdate("v", {"deleteAfter": 1})
    assert api.snapshotList("v")[0].targetDeleteDate is not None
    time.sleep(1.2)
    assert api.snapshotsList() == []  # reaped before this call was answered


def test_delete_after_on_create_waits_for_a_detach(emu: Emulator, api: Any) -> None:
    """Only calls at or after the earliest targetDeleteDate look through the snapshots; one
    that is due but attached is looked at again on every call until it is detached."""
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "later", "deleteAfter": 3600})
    api.snapshotCreate("v", {"name": "soon", "deleteAfter": 1})
    api.volumeDelete("v")  # no children: a due snapshot is removed, not only marked deleted
    api.volumesReassign([{"snapshot": "soon", "ro": [1]}])
    time.sleep(1.2)
    assert sorted(s.name for s in api.snapshotsList()) == ["later", "soon"]  # attached
    api.volumesReassign([{"snapshot": "soon", "detach": "all"}])
    assert [s.name for s in api.snapshotsList()] == ["later"]


def test_group_snapshot(emu: Emulator, api: Any) -> None:
    g1 = api.volumeCreate({"name": "a", "size": GiB}).globalId
    g2 = api.volumeCreate({"size": GiB}).globalId
    status, reply = raw_call(
        emu.port,
        "POST",
        "/ctrl/1.0/MultiCluster/VolumesGroupSnapshot",
        {
            "tags": {"cs": "group", "vm": "x"},
            "volumes": [{"volume": "a", "name": "", "tags": {"vm": "y"}}, {"volume": f"~{g2}"}],
        },
    )
    assert status == 200, reply
    check(sptypes.GroupSnapshotsResult, reply["data"])
    r1, r2 = reply["data"]["snapshots"]
    assert (r1["volume"], r1["volumeGlobalId"], r2["volume"]) == ("a", g1, f"~{g2}")
    s1 = _snap(api, f"~{r1['snapshotGlobalId']}")
    assert s1["tags"] == {"cs": "group", "vm": "y"} and s1["onVolume"] == "a"
    assert _snap(api, f"~{r2['snapshotGlobalId']}")["tags"] == {"cs": "group", "vm": "x"}
    typed = api.snapshotCreateGroup({"volumes": [{"volume": "a", "name": "named"}]})
    assert typed.snapshots[0].snapshot == "named"
    # all or nothing
    err = _api_error(api.snapshotCreateGroup, {"volumes": [{"volume": "a"}, {"volume": "missing"}]})
    assert err.name == "objectDoesNotExist"
    assert len(api.snapshotsList()) == 3


def test_revert_errors(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.volumeCreate({"name": "w", "size": GiB})
    api.snapshotCreate("v", {"name": "s"})
    err = _api_error(api.volumeRevert, "v", {"toSnapshot": "missing"})
    assert err.name == "objectDoesNotExist"
    assert _api_error(api.volumeRevert, "nope", {"toSnapshot": "s"}).name == "objectDoesNotExist"
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeRevert/v", {})
    assert error_of(reply)["name"] == "invalidParam"
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    assert _api_error(api.volumeRevert, "v", {"toSnapshot": "s"}).name == "busy"


def test_revert_size(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "s"})
    api.volumeUpdate("v", {"size": 2 * GiB})
    check(spapi.ApiOk, api.volumeRevert("v", {"toSnapshot": "s"}, returnRawAPIData=True))
    assert api.volumeList("v")[0].size == 2 * GiB  # size kept by default
    # Proxmox: {"toSnapshot": "~gid", "revertSize": true}; not in the 7.3.0 bindings
    gid = api.snapshotList("s")[0].globalId
    data = api("POST", True, "VolumeRevert/v", {"toSnapshot": f"~{gid}", "revertSize": True})
    check(spapi.ApiOk, data)
    vol = api.volumeList("v")[0]
    assert vol.size == GiB and vol.parentName == "s"
    path = os.path.join(emu.data_dir, "objects", f"{vol.globalId}.raw")
    assert os.path.getsize(path) == GiB
