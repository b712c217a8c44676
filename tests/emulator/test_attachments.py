"""Attachments: VolumesReassign(Wait), device links on two emulated hosts, open detection."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from storpool import spapi, sptypes

from spcs.emulator import Emulator, EmulatorError, devices

from .conftest import GiB
from .helpers import TOKEN, check, error_of, raw_call

pytestmark = pytest.mark.fast


def _api_error(fn: Any, *args: Any) -> spapi.ApiError:
    with pytest.raises(spapi.ApiError) as caught:
        fn(*args)
    return caught.value


def _links(root: Path) -> tuple[set[str], set[str]]:
    def ls(d: Path) -> set[str]:
        return set(os.listdir(d)) if d.exists() else set()

    return ls(root / "storpool"), ls(root / "storpool-byid")


def _attachments(api: Any) -> list[tuple[str, int, str]]:
    raw = api.attachmentsList(returnRawAPIData=True)
    check([sptypes.AttachmentDesc], raw)
    return sorted((a["volume"], a["client"], a["rights"]) for a in raw)


def test_attach_rw_creates_links_where_storpool_puts_them(
    emu: Emulator, api: Any, roots: dict[int, Path]
) -> None:
    gid = api.volumeCreate({"name": "vol1", "size": GiB}).globalId
    reply = api.volumesReassignWait(
        {"reassign": [{"volume": "vol1", "rw": [1]}], "attachTimeout": 10},
        returnRawAPIData=True,
    )
    check(spapi.ApiOk, reply)
    root = roots[1]
    assert _links(root) == ({"vol1"}, {gid})
    assert _links(roots[2]) == (set(), set())
    assert os.readlink(root / "storpool" / "vol1") == "../sp-0"
    assert os.readlink(root / "storpool-byid" / gid) == "../sp-0"
    data = os.path.join(emu.data_dir, "objects", f"{gid}.raw")
    assert os.path.samefile(root / "storpool" / "vol1", data)
    assert os.path.getsize(root / "storpool-byid" / gid) == GiB
    (att,) = api.attachmentsList(returnRawAPIData=True)
    check(sptypes.AttachmentDesc, att)
    assert att == {
        "volume": "vol1",
        "snapshot": False,
        "client": 1,
        "rights": "rw",
        "pos": 0,
        "globalId": gid,
        "clusterId": "emu.a",
    }


def test_two_hosts_positions_and_detach(emu: Emulator, api: Any, roots: dict[int, Path]) -> None:
    g1 = api.volumeCreate({"name": "a", "size": GiB}).globalId
    g2 = api.volumeCreate({"name": "b", "size": GiB}).globalId
    api.volumesReassign([{"volume": "a", "rw": [1, 2]}, {"volume": "b", "ro": [2]}])
    assert _attachments(api) == [("a", 1, "rw"), ("a", 2, "rw"), ("b", 2, "ro")]
    assert _links(roots[2]) == ({"a", "b"}, {g1, g2})
    assert sorted(a.pos for a in api.attachmentsList() if a.client == 2) == [0, 1]
    api.volumesReassign([{"volume": "a", "detach": [2]}])
    assert _attachments(api) == [("a", 1, "rw"), ("b", 2, "ro")]
    assert _links(roots[2]) == ({"b"}, {g2})
    assert not (roots[2] / "sp-0").exists()
    # the freed position is reused
    api.volumesReassign([{"volume": "a", "ro": [2]}])
    assert {a.pos for a in api.attachmentsList() if a.client == 2} == {0, 1}
    api.volumesReassign([{"volume": "a", "detach": "all"}, {"volume": "b", "detach": "all"}])
    assert api.attachmentsList() == []
    for root in roots.values():
        assert _links(root) == (set(), set())
        assert [e for e in os.listdir(root) if e.startswith("sp-")] == []


def test_client_ids_as_numeric_strings_and_bare_list(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    # os-brick sends SP_OURID as read from the config file: a string
    status, reply = raw_call(
        emu.port,
        "POST",
        "/ctrl/1.0/MultiCluster/VolumesReassignWait",
        {"reassign": [{"volume": "v", "rw": ["1"]}]},
    )
    assert status == 200, reply
    # Proxmox posts a bare list to VolumesReassignWait
    status, reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/VolumesReassignWait", [{"volume": "v", "ro": [2]}]
    )
    assert status == 200, reply
    assert _attachments(api) == [("v", 1, "rw"), ("v", 2, "ro")]


def test_rights_upgrade_and_move(api: Any) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.volumesReassign([{"volume": "v", "ro": [1]}])
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    assert _attachments(api) == [("v", 1, "rw")]
    # CSI publish: attach here, detach everywhere else
    api.volumesReassign([{"volume": "v", "rw": [2], "detach": "all"}])
    assert _attachments(api) == [("v", 2, "rw")]


def test_anonymous_volume_gets_only_the_byid_link(
    emu: Emulator, api: Any, roots: dict[int, Path]
) -> None:
    gid = api.volumeCreate({"size": GiB}).globalId
    api.volumesReassign([{"volume": f"~{gid}", "rw": [1]}])
    assert _links(roots[1]) == (set(), {gid})
    assert _attachments(api) == [(f"~{gid}", 1, "rw")]


def test_rename_moves_the_link_of_an_attached_volume(api: Any, roots: dict[int, Path]) -> None:
    gid = api.volumeCreate({"name": "old", "size": GiB}).globalId
    api.volumesReassign([{"volume": "old", "rw": [1]}])
    api.volumeUpdate("old", {"rename": "new"})
    assert _links(roots[1]) == ({"new"}, {gid})
    api.volumeUpdate("new", {"size": 2 * GiB})
    assert os.path.getsize(roots[1] / "storpool" / "new") == 2 * GiB  # resize shows through


def test_snapshots_attach_read_only(api: Any, roots: dict[int, Path]) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    gid = api.snapshotCreate("v", {"name": "s"}).snapshotGlobalId
    api.volumesReassignWait({"reassign": [{"snapshot": "s", "ro": [1]}]})
    assert _links(roots[1]) == ({"s"}, {gid})
    (att,) = api.attachmentsList()
    assert (att.snapshot, att.rights, att.volume) == (True, "ro", "s")
    assert api("POST", True, "VolumesReassign", [{"snapshot": "s", "detach": [1]}])["ok"]
    assert api.attachmentsList() == []


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([{"volume": "v", "rw": [7]}], "invalidParam"),  # no such client
        ([{"volume": "v", "rw": [0]}], "invalidParam"),
        ([{"volume": "v", "rw": ["one"]}], "invalidParam"),
        ([{"volume": "v", "rw": 1}], "invalidParam"),
        ([{"volume": "nope", "rw": [1]}], "objectDoesNotExist"),
        ([{"snapshot": "s", "rw": [1]}], "invalidParam"),  # snapshots are read-only
        ([{"volume": "v", "snapshot": "s", "ro": [1]}], "invalidParam"),
        ([{"rw": [1]}], "invalidParam"),
        ([{"volume": "v", "rw": [1]}, {"volume": "v", "ro": [2]}], "invalidParam"),
        ([{"volume": "v", "rw": [1]}, {"volume": "nope", "rw": [1]}], "objectDoesNotExist"),
        ({"volume": "v"}, "invalidParam"),
        ([{"volume": "v", "rw": [1], "force": "yes"}], "invalidParam"),
    ],
)
def test_reassign_errors_change_nothing(
    emu: Emulator, api: Any, roots: dict[int, Path], items: Any, error: str
) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.snapshotCreate("v", {"name": "s"})
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumesReassign", items)
    err = error_of(reply)
    assert err["name"] == error
    if "7" in str(items):
        assert "No such client registered" in err["descr"]
    assert api.attachmentsList() == []
    assert _links(roots[1]) == (set(), set())


def test_detach_of_an_open_device_is_busy_unless_forced(
    emu: Emulator, api: Any, roots: dict[int, Path]
) -> None:
    api.volumeCreate({"name": "vol1", "size": GiB})
    api.volumesReassignWait({"reassign": [{"volume": "vol1", "rw": [1]}]})
    with open(roots[1] / "storpool" / "vol1", "r+b") as dev:
        err = _api_error(api.volumesReassignWait, {"reassign": [{"volume": "vol1", "detach": [1]}]})
        assert err.name == "busy"
        assert err.desc == "'vol1' is open at client 1"  # os-brick matches "is open at"
        assert _attachments(api) == [("vol1", 1, "rw")]
        api.volumesReassignWait({"reassign": [{"volume": "vol1", "detach": [1], "force": True}]})
        assert api.attachmentsList() == []
        dev.write(b"still writable")  # the open fd lives on, as with a real device
    assert _links(roots[1]) == (set(), set())


def test_open_is_per_client(api: Any, roots: dict[int, Path]) -> None:
    api.volumeCreate({"name": "v", "size": GiB})
    api.volumesReassign([{"volume": "v", "rw": [1, 2]}])
    with open(roots[2] / "storpool" / "v", "rb"):
        # live migration: the source detaches while the destination has it open
        api.volumesReassign([{"volume": "v", "detach": [1]}])
        assert _api_error(api.volumesReassign, [{"volume": "v", "detach": [2]}]).name == "busy"
    api.volumesReassign([{"volume": "v", "detach": [2]}])
    assert api.attachmentsList() == []


@pytest.mark.skipif(
    not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK),
    reason="needs a writable /dev/shm (a second filesystem)",
)
def test_device_root_on_another_filesystem_falls_back_to_symlinks(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="spcs-emu-test-"))
    try:
        if os.stat(root).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        with Emulator(tmp_path / "data", token=TOKEN, clients={1: root, 2: tmp_path / "h2"}) as emu:
            api = emu.api(transientRetries=0)
            gid = api.volumeCreate({"name": "v", "size": GiB}).globalId
            api.volumesReassign([{"volume": "v", "rw": [1, 2]}])
            data = os.path.join(emu.data_dir, "objects", f"{gid}.raw")
            assert os.readlink(root / "sp-0") == data  # no hard link across filesystems
            with open(root / "storpool" / "v", "rb"):
                # an fd on the data file itself can't be told apart: open everywhere
                for client in (1, 2):
                    err = _api_error(api.volumesReassign, [{"volume": "v", "detach": [client]}])
                    assert err.desc == f"'v' is open at client {client}"
            api.volumesReassign([{"volume": "v", "detach": "all"}])
            assert _links(root) == (set(), set())
    finally:
        shutil.rmtree(root)


def test_open_flag_from_the_admin_endpoint(emu: Emulator, api: Any) -> None:
    gid = api.volumeCreate({"name": "v", "size": GiB}).globalId
    api.volumesReassign([{"volume": "v", "rw": [2]}])
    status, reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/_emulator/open", {"client": 2, "volume": f"~{gid}"}
    )
    assert status == 200 and reply["data"]["open"] is True
    err = _api_error(api.volumesReassign, [{"volume": "v", "detach": "all"}])
    assert (err.name, err.desc) == ("busy", "'v' is open at client 2")
    err = _api_error(api.volumeDelete, "v")
    assert err.name == "busy"
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeDelete/v", {"onAttached": "detach"})
    assert error_of(reply)["descr"] == "'v' is open at client 2"
    emu.mark_open(2, "v", open=False)
    api.volumesReassign([{"volume": "v", "detach": "all"}])
    assert api.attachmentsList() == []
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/_emulator/open", {"client": 2, "volume": "v"})
    assert error_of(reply)["name"] == "invalidParam"  # not attached there


def test_services_and_clients_config(emu: Emulator, api: Any) -> None:
    services = api.servicesList(returnRawAPIData=True)
    check(sptypes.ClusterStatus, services)
    assert services["clusterStatus"] == "running"
    assert {int(k): v["status"] for k, v in services["clients"].items()} == {
        1: "running",
        2: "running",
    }
    assert {v["nodeId"] for v in services["clients"].values()} == {1, 2}
    for key in ("mgmt", "servers"):
        for entry in services[key].values():
            check(sptypes.Mgmt if key == "mgmt" else sptypes.Server, entry)
    dump = api.clientsConfigDump(returnRawAPIData=True)
    check([sptypes.ClientConfigStatus], dump)
    assert [(c["id"], c["configStatus"]) for c in dump] == [(1, "ok"), (2, "ok")]
    wait = api.clientConfigWait(2, returnRawAPIData=True)
    check([sptypes.ClientConfigStatus], wait)
    assert _api_error(api.clientConfigWait, 9).name == "invalidParam"


def test_a_client_marked_down_shows_down(emu: Emulator, api: Any) -> None:
    """`_emulator/client` stands for a host whose StorPool client died (the HA heartbeat's
    case); the service list says so, still in StorPool's shape, until it runs again."""

    def statuses() -> dict[int, str]:
        services = api.servicesList(returnRawAPIData=True)
        check(sptypes.ClusterStatus, services)
        return {int(k): v["status"] for k, v in services["clients"].items()}

    status, reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/_emulator/client", {"client": 2, "running": False}
    )
    assert status == 200 and reply["data"] == {"client": 2, "running": False}
    assert statuses() == {1: "running", 2: "down"}
    emu.set_client_running(2, True)
    assert statuses() == {1: "running", 2: "running"}
    for body in ({"client": 9, "running": False}, {"client": 2}, {"client": "2", "running": True}):
        _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/_emulator/client", body)
        assert error_of(reply)["name"] == "invalidParam"


def test_loop_mode_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert devices.loop_supported() == (False, "loop devices need root")
    with pytest.raises(EmulatorError, match="need root"):
        Emulator(tmp_path / "d", token=TOKEN, loop=True)
