"""Snapshots across locations: emulators on one Bridge export, list and copy snapshots; the copy's
bytes arrive in the background (recoveringFromRemote), stop and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from storpool import spapi, sptypes

from spcs.emulator import Bridge, Emulator, EmulatorError, blockdata
from spcs.emulator import cli as emulator_cli
from spcs.emulator.model import State, Volume

from .conftest import MiB
from .helpers import TOKEN, check, check_summary, error_of, raw_call

pytestmark = pytest.mark.fast

CHUNK = 4 * MiB
SIZE = 32 * MiB
# which 4 MiB chunks of the source snapshot hold random bytes (the rest stay zero: holes)
DATA_CHUNKS = (0, 1, 4, 6, 7)


@dataclass
class Zones:
    tmp: Path
    bridge: Bridge
    src: Emulator  # location zone1, client 1
    dst: Emulator  # location zone2, client 2


@pytest.fixture
def zones(tmp_path: Path) -> Iterator[Zones]:
    bridge = Bridge()
    src = Emulator(
        tmp_path / "zone1",
        token=TOKEN,
        cluster_id="zone1.a",
        clients={1: tmp_path / "host1"},
        templates=["hybrid"],
        bridge=bridge,
        remote_bandwidth=None,
    )
    dst = Emulator(
        tmp_path / "zone2",
        token=TOKEN,
        cluster_id="zone2.a",
        clients={2: tmp_path / "host2"},
        templates=["ssd"],
        bridge=bridge,
        remote_bandwidth=None,
    )
    src.start()
    dst.start()
    try:
        yield Zones(tmp_path, bridge, src, dst)
    finally:
        dst.stop(release_devices=True)
        src.stop(release_devices=True)


# Calls and waits.


def ok(emu: Emulator, method: str, path: str, body: Any = None) -> Any:
    status, reply = raw_call(emu.port, method, f"/ctrl/1.0/{path}", body)
    assert status == 200, (path, reply)
    return reply["data"]


def fails(emu: Emulator, method: str, path: str, body: Any = None) -> dict[str, Any]:
    status, reply = raw_call(emu.port, method, f"/ctrl/1.0/{path}", body)
    assert status != 200, (path, reply)
    return error_of(reply)


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def snapshot(emu: Emulator, ref: str) -> dict[str, Any]:
    (snap,) = ok(emu, "GET", f"Snapshot/{ref}")
    check_summary(snap)
    return snap


def recovering(emu: Emulator, gid: str) -> bool:
    return bool(snapshot(emu, f"~{gid}")["recoveringFromRemote"])


def space_used(emu: Emulator, gid: str) -> int:
    (entry,) = [s for s in ok(emu, "GET", "SnapshotsSpace") if s["globalId"] == gid]
    assert entry["storedSize"] == entry["spaceUsed"]
    return int(entry["spaceUsed"])


def data_file(emu: Emulator, gid: str) -> Path:
    return Path(emu.data_dir) / "objects" / f"{gid}.raw"


# The source snapshot.


def source_snapshot(zones: Zones, name: str = "snap", volume: str = "vol") -> str:
    """A snapshot of SIZE bytes on zone1: random data in DATA_CHUNKS, zeroes (holes) elsewhere;
    written through client 1's device. Returns its global id."""
    src = zones.src
    ok(src, "POST", "VolumeCreate", {"name": volume, "size": SIZE, "template": "hybrid"})
    ok(src, "POST", "VolumesReassign", [{"volume": volume, "rw": [1]}])
    with open(zones.tmp / "host1" / "storpool" / volume, "r+b") as dev:
        for chunk in DATA_CHUNKS:
            dev.seek(chunk * CHUNK)
            # the last chunk only half full: a chunk is copied whole all the same
            dev.write(os.urandom(CHUNK // 2 if chunk == 7 else CHUNK))
    ok(src, "POST", "VolumesReassign", [{"volume": volume, "detach": "all"}])
    gid = ok(src, "POST", f"VolumeSnapshot/{volume}", {"name": name})["snapshotGlobalId"]
    assert isinstance(gid, str)
    return gid


def export(zones: Zones, ref: str = "snap", location: str = "zone2") -> None:
    ok(zones.src, "POST", "SnapshotExport", {"snapshot": ref, "location": location})


def copy(zones: Zones, gid: str, **extra: Any) -> dict[str, Any]:
    body = {"remoteLocation": "zone1", "remoteId": gid, "name": "", **extra}
    reply = ok(zones.dst, "POST", "SnapshotFromRemote", body)
    check(spapi.ApiOk, reply)
    return dict(reply)


def assert_same_bytes(zones: Zones, gid: str) -> None:
    source = data_file(zones.src, gid).read_bytes()
    assert data_file(zones.dst, gid).read_bytes() == source
    # sparse where the source is zero: the holes were not written
    with open(data_file(zones.dst, gid), "rb") as f:
        assert os.lseek(f.fileno(), 2 * CHUNK, os.SEEK_DATA) == 4 * CHUNK
        assert os.lseek(f.fileno(), 5 * CHUNK, os.SEEK_DATA) == 6 * CHUNK
    written = len(DATA_CHUNKS) * CHUNK
    assert blockdata.allocated_bytes(str(data_file(zones.dst, gid))) <= written + MiB


def wait_recovered(zones: Zones, gid: str) -> None:
    wait_for(lambda: not recovering(zones.dst, gid), "the copy to recover")
    wait_for(lambda: zones.dst.transfers_running() == [], "the transfer thread to end")


# The whole story.


def test_copy_is_observed_while_it_recovers_and_ends_byte_equal(zones: Zones) -> None:
    src, dst = zones.src, zones.dst
    gid = source_snapshot(zones)
    export(zones)
    export(zones)  # idempotent
    exports = ok(src, "GET", "ExportsList")["exports"]
    check([sptypes.Export], exports)
    assert exports == [
        {"snapshot": "snap", "location": "zone2", "globalId": gid, "backingUp": False}
    ]
    remote = ok(dst, "GET", "MultiCluster/SnapshotsRemoteList")["snapshots"]
    check([sptypes.RemoteSnapshot], remote)
    source_summary = snapshot(src, "snap")
    assert remote == [
        {
            "name": "snap",
            "location": "zone1",
            "creationTimestamp": source_summary["creationTimestamp"],
            "size": SIZE,
            "remoteId": gid,
            "onVolume": "vol",
            "tags": {},
        }
    ]
    assert ok(src, "GET", "SnapshotsRemoteList") == {"snapshots": []}  # nothing exported to it

    dst.set_remote_bandwidth(8 * MiB)  # 5 data chunks: about 2 s
    reply = copy(zones, gid, template="ssd", tags={"cs": "snapshot", "uuid": "u-1"})
    assert reply == {
        "ok": True,
        "generation": reply["generation"],
        "name": f"~{gid}",
        "globalId": gid,
        "snapshotGlobalId": gid,
    }
    assert dst.transfers_running() == [gid]
    ok(dst, "POST", f"SnapshotReconcile/~{gid}")  # already running: nothing more starts
    assert dst.transfers_running() == [gid]
    local = snapshot(dst, f"~{gid}")
    assert local["recoveringFromRemote"] is True
    assert (local["templateName"], local["size"], local["tags"]) == (
        "ssd",
        SIZE,
        {"cs": "snapshot", "uuid": "u-1"},
    )
    assert local["visibleVolumeId"] == 1 and local["autoName"] is True
    (listed,) = ok(dst, "GET", "SnapshotsRemoteList")["snapshots"]
    assert listed["localSnapshot"] == f"~{gid}"

    seen: list[int] = []
    while recovering(dst, gid):
        seen.append(space_used(dst, gid))
        time.sleep(0.05)
    final = space_used(dst, gid)
    assert seen == sorted(seen), "the allocation only grows"
    assert any(0 < used < final for used in seen), f"no partial state seen: {seen}"
    # whole chunks are copied: the half-zero last one is allocated in full at the destination
    assert space_used(src, gid) <= final <= len(DATA_CHUNKS) * CHUNK
    wait_for(lambda: dst.transfers_running() == [], "the transfer thread to end")
    assert_same_bytes(zones, gid)

    # and through a device on the destination's client
    ok(dst, "POST", "VolumesReassignWait", {"reassign": [{"snapshot": f"~{gid}", "ro": [2]}]})
    device = zones.tmp / "host2" / "storpool-byid" / gid
    assert device.read_bytes() == data_file(src, gid).read_bytes()
    state = dst.state_snapshot()
    vol = state["state"]["volumes"][gid]
    assert (vol["recovering"], vol["remote_location"], vol["exports"]) == (False, "zone1", [])
    assert state["location"] == {"id": "zone2", "name": "zone2"}
    assert state["transfersRunning"] == []


def test_locations_on_one_bridge_and_what_each_sees(zones: Zones) -> None:
    third = Emulator(
        zones.tmp / "zone3",
        token=TOKEN,
        cluster_id="zone3.x",
        location_name="backup-site",
        bridge=zones.bridge,
    ).start()
    try:
        expected = [
            {"id": "zone3", "name": "backup-site", "sendBufferSize": 0, "recvBufferSize": 0},
            {"id": "zone1", "name": "zone1", "sendBufferSize": 0, "recvBufferSize": 0},
            {"id": "zone2", "name": "zone2", "sendBufferSize": 0, "recvBufferSize": 0},
        ]
        for emu in (zones.src, zones.dst, third):
            locations = ok(emu, "GET", "LocationsList")["locations"]
            check([sptypes.RemoteLocation], locations)
            assert locations == expected
        assert (third.location_id, third.location_name) == ("zone3", "backup-site")

        gid = source_snapshot(zones)
        export(zones, location="backup-site")
        assert ok(zones.dst, "GET", "SnapshotsRemoteList") == {"snapshots": []}
        (seen,) = ok(third, "GET", "SnapshotsRemoteList")["snapshots"]
        assert (seen["remoteId"], seen["location"]) == (gid, "zone1")
        err = fails(
            zones.dst, "POST", "SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": gid}
        )
        assert err["name"] == "objectDoesNotExist"
        assert "zone1" in err["descr"] and "zone2" in err["descr"] and gid in err["descr"]

        # another emulator with a running location's id or name can not join
        for kwargs in (
            {"cluster_id": "zone1.b"},
            {"cluster_id": "zone4.a", "location_name": "zone2"},
        ):
            with pytest.raises(EmulatorError, match="already served"):
                Emulator(
                    zones.tmp / f"other-{len(kwargs)}", token=TOKEN, bridge=zones.bridge, **kwargs
                ).start()
        assert ok(zones.src, "GET", "LocationsList")["locations"] == expected  # unchanged

        # a stopped location stays known (exports to it stay), but is unreachable
        third.stop()
        assert ok(zones.src, "GET", "LocationsList")["locations"] == expected
        assert ok(zones.src, "GET", "ExportsList")["exports"][0]["location"] == "backup-site"
        third.start()
        assert [s["remoteId"] for s in ok(third, "GET", "SnapshotsRemoteList")["snapshots"]] == [
            gid
        ]
    finally:
        third.stop()


def test_a_private_bridge_sees_only_itself(emu: Emulator) -> None:
    assert ok(emu, "GET", "LocationsList")["locations"] == [
        {"id": "emu", "name": "emu", "sendBufferSize": 0, "recvBufferSize": 0}
    ]
    assert ok(emu, "GET", "SnapshotsRemoteList") == {"snapshots": []}
    assert ok(emu, "GET", "ExportsList") == {"exports": []}


# Exports and deletes.


def test_unexport_while_recovering_needs_force_and_delete_needs_unexport(zones: Zones) -> None:
    src, dst = zones.src, zones.dst
    gid = source_snapshot(zones)
    export(zones)
    for path in ("SnapshotDelete/snap", f"SnapshotDeleteById/{gid}"):
        err = fails(src, "POST", path)
        assert err["name"] == "invalidParam"
        assert (
            err["descr"] == "snapshot snap is still exported to location zone2; unexport it first"
        )

    dst.set_remote_bandwidth(4 * MiB)
    copy(zones, gid, name="copy")
    for body in ({"snapshot": "snap", "location": "zone2"}, {"snapshot": "snap", "all": True}):
        err = fails(src, "POST", "SnapshotUnexport", body)
        assert err["name"] == "invalidParam"
        assert "still recovering in location zone2" in err["descr"] and "force" in err["descr"]
    ok(src, "POST", "SnapshotUnexport", {"snapshot": "snap", "all": True, "force": True})
    assert ok(src, "GET", "ExportsList") == {"exports": []}
    # the transfer stops: no more bytes, still recovering
    wait_for(lambda: dst.transfers_running() == [], "the transfer to stop")
    used = space_used(dst, gid)
    time.sleep(0.3)
    assert space_used(dst, gid) == used < space_used(src, gid)
    assert snapshot(dst, "copy")["recoveringFromRemote"] is True
    err = fails(dst, "POST", "SnapshotReconcile/copy")
    assert err["name"] == "objectDoesNotExist" and "not exported to location zone2" in err["descr"]

    # idempotent unexports
    ok(src, "POST", "SnapshotUnexport", {"snapshot": "snap", "location": "zone2"})
    ok(src, "POST", "SnapshotUnexport", {"snapshot": f"~{gid}", "all": True})
    ok(src, "POST", "VolumeDelete/vol")  # the snapshot's child: else it is only marked deleted
    ok(src, "POST", "SnapshotDelete/snap")
    assert gid not in src.state_snapshot()["state"]["volumes"]
    # the recovering copy can be deleted: its file goes
    ok(dst, "POST", "SnapshotDelete/copy")
    assert not data_file(dst, gid).exists()


def test_unexport_with_force_while_recovering_stops_the_transfer_then_reexport(
    zones: Zones,
) -> None:
    gid = source_snapshot(zones)
    export(zones)
    zones.dst.set_remote_bandwidth(4 * MiB)
    copy(zones, gid)
    wait_for(lambda: space_used(zones.dst, gid) > 0, "the first chunk")
    ok(
        zones.src,
        "POST",
        "SnapshotUnexport",
        {"snapshot": "snap", "location": "zone2", "force": True},
    )
    wait_for(lambda: zones.dst.transfers_running() == [], "the transfer to stop")
    assert recovering(zones.dst, gid)
    export(zones)
    zones.dst.set_remote_bandwidth(None)
    ok(zones.dst, "POST", f"SnapshotReconcile/~{gid}")
    wait_recovered(zones, gid)
    assert_same_bytes(zones, gid)


def test_snapshots_due_to_go_wait_while_exported(zones: Zones) -> None:
    src = zones.src
    for volume in ("a", "b"):
        ok(src, "POST", "VolumeCreate", {"name": volume, "size": MiB})
    ok(src, "POST", "VolumeSnapshot/a", {"name": "dated", "deleteAfter": 1})
    ok(src, "POST", "VolumeSnapshot/b", {"name": "bound"})
    for volume in ("a", "b"):
        ok(src, "POST", f"VolumeDelete/{volume}")  # the snapshots are childless now
    export(zones, "dated")
    export(zones, "bound")
    ok(src, "POST", "SnapshotUpdate/bound", {"bind": True})  # would go at once
    time.sleep(1.2)
    names = {s["name"] for s in ok(src, "GET", "SnapshotsList")}
    assert {"dated", "bound"} <= names
    ok(src, "POST", "SnapshotUnexport", {"snapshot": "bound", "all": True})
    ok(src, "POST", "SnapshotUnexport", {"snapshot": "dated", "location": "zone2"})
    names = {s["name"] for s in ok(src, "GET", "SnapshotsList")}
    assert not {"dated", "bound"} & names


# Stops and resumes.


def test_source_stopped_mid_transfer_then_reconciled(zones: Zones) -> None:
    src, dst = zones.src, zones.dst
    gid = source_snapshot(zones)
    export(zones)
    dst.set_remote_bandwidth(8 * MiB)
    copy(zones, gid)
    wait_for(lambda: space_used(dst, gid) > 0, "the first chunk")
    src.stop()
    wait_for(lambda: dst.transfers_running() == [], "the transfer to stop")
    used = space_used(dst, gid)
    time.sleep(0.3)
    assert space_used(dst, gid) == used < len(DATA_CHUNKS) * CHUNK
    assert recovering(dst, gid)
    for method, path, body in (
        ("POST", f"SnapshotReconcile/~{gid}", None),
        ("POST", "SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": "zone1.a.9"}),
    ):
        err = fails(dst, method, path, body)
        assert (err["name"], err["transient"]) == ("busy", False)
        assert err["descr"] == "location zone1 is not reachable"

    src.start(port=src.port)
    dst.set_remote_bandwidth(None)
    ok(dst, "POST", f"SnapshotReconcile/~{gid}")
    wait_recovered(zones, gid)
    assert_same_bytes(zones, gid)
    ok(dst, "POST", f"SnapshotReconcile/~{gid}")  # complete: nothing to do
    assert dst.transfers_running() == []


def test_injected_link_drops_stop_the_transfer_and_reconcile_resumes(zones: Zones) -> None:
    dst = zones.dst
    gid = source_snapshot(zones)
    export(zones)
    dst.set_faults({"failNext": {"RemoteTransfer": 1}})
    copy(zones, gid)  # its attempt stops at the first chunk
    wait_for(lambda: dst.transfers_running() == [], "the transfer to stop")
    assert space_used(dst, gid) == 0 and recovering(dst, gid)

    dst.set_faults({"failAfter": {"RemoteTransfer": 3}})
    ok(dst, "POST", f"MultiCluster/SnapshotReconcile/~{gid}")
    wait_for(lambda: dst.transfers_running() == [], "the transfer to stop")
    assert recovering(dst, gid)
    source, copied = data_file(zones.src, gid).read_bytes(), data_file(dst, gid).read_bytes()
    assert copied[: 3 * CHUNK] == source[: 3 * CHUNK]  # three chunks got through
    assert copied[4 * CHUNK : 5 * CHUNK] == bytes(CHUNK) != source[4 * CHUNK : 5 * CHUNK]
    assert "RemoteTransfer" not in dst.faults.config.fail_after  # it fired once

    ok(dst, "POST", f"SnapshotReconcile/~{gid}")
    wait_recovered(zones, gid)
    assert_same_bytes(zones, gid)


def test_destination_restarted_mid_recovery_resumes(zones: Zones) -> None:
    dst = zones.dst
    gid = source_snapshot(zones)
    export(zones)
    dst.set_remote_bandwidth(8 * MiB)
    copy(zones, gid, name="copy")
    wait_for(lambda: space_used(dst, gid) > 0, "the first chunk")
    dst.stop()  # stops and joins the transfer before the store closes
    assert dst.transfers_running() == []
    saved = json.loads((Path(dst.data_dir) / "state.json").read_text())["volumes"][gid]
    assert (saved["recovering"], saved["remote_location"], saved["name"]) == (
        True,
        "zone1",
        "copy",
    )
    used = blockdata.allocated_bytes(str(data_file(dst, gid)))
    time.sleep(0.3)
    assert blockdata.allocated_bytes(str(data_file(dst, gid))) == used

    dst.set_remote_bandwidth(None)
    dst.start(port=dst.port)  # resumes by itself: the source is reachable
    wait_recovered(zones, gid)
    assert_same_bytes(zones, gid)


# Refusals.


def test_a_recovering_snapshot_can_not_be_used(zones: Zones) -> None:
    dst = zones.dst
    gid = source_snapshot(zones)
    export(zones)
    dst.set_faults({"failNext": {"RemoteTransfer": 1}})  # it stays recovering
    copy(zones, gid, name="copy")
    wait_for(lambda: dst.transfers_running() == [], "the transfer to stop")
    ok(dst, "POST", "VolumeCreate", {"name": "v", "size": SIZE})
    refused = [
        ("VolumesReassign", [{"snapshot": "copy", "ro": [2]}]),
        ("VolumesReassignWait", {"reassign": [{"snapshot": f"~{gid}", "ro": [2]}]}),
        ("VolumeCreate", {"name": "clone", "parent": "copy"}),
        ("VolumeRevert/v", {"toSnapshot": "copy"}),
        ("SnapshotExport", {"snapshot": "copy", "location": "zone1"}),
        ("VolumeTemplateCreate", {"name": "t", "parent": "copy"}),
    ]
    for path, body in refused:
        err = fails(dst, "POST", path, body)
        assert err["name"] == "invalidParam", path
        assert err["descr"] == (
            "snapshot copy is still recovering from location zone1; "
            "wait until recoveringFromRemote is false"
        ), path
    assert dst.state_snapshot()["state"]["attachments"] == []


def test_source_and_copy_errors(zones: Zones) -> None:
    src, dst = zones.src, zones.dst
    gid = source_snapshot(zones)
    ok(src, "POST", "VolumeSnapshot/vol", {"name": "private"})

    def from_remote(**body: Any) -> dict[str, Any]:
        return fails(dst, "POST", "SnapshotFromRemote", {"remoteLocation": "zone1", **body})

    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        ({"remoteLocation": "nowhere", "remoteId": gid}, "objectDoesNotExist", ["nowhere"]),
        ({"remoteLocation": "zone2", "remoteId": gid}, "invalidParam", ["this location"]),
        ({"remoteId": "zone1.a.99"}, "objectDoesNotExist", ["zone1.a.99", "zone1"]),
        ({"remoteId": gid}, "objectDoesNotExist", [gid, "zone1", "not exported to location zone2"]),
    ]
    for body, name, words in cases:
        err = from_remote(**body)
        assert err["name"] == name, body
        assert all(w in err["descr"] for w in words), (body, err)

    export(zones)
    ok(dst, "POST", "VolumeCreate", {"name": "taken", "size": MiB})
    for body, name in [
        ({"template": "nope"}, "objectDoesNotExist"),
        ({"placeAll": "nope"}, "objectDoesNotExist"),
        ({"name": "taken"}, "objectExists"),
    ]:
        assert from_remote(remoteId=gid, **body)["name"] == name, body
    assert list(dst.state_snapshot()["state"]["volumes"]) == ["zone2.a.1"]  # nothing left
    copy(zones, gid)
    err = from_remote(remoteId=gid)
    assert err["name"] == "objectExists" and gid in err["descr"]

    for body, name, word in [
        ({"snapshot": "snap", "location": "nowhere"}, "objectDoesNotExist", "nowhere"),
        ({"snapshot": "snap", "location": "zone1"}, "invalidParam", "this location"),
        ({"snapshot": "nope", "location": "zone2"}, "objectDoesNotExist", "nope"),
    ]:
        err = fails(src, "POST", "SnapshotExport", body)
        assert err["name"] == name and word in err["descr"], (body, err)
    for body, name in [
        ({"snapshot": "snap"}, "invalidParam"),
        ({"snapshot": "snap", "location": "zone2", "all": True}, "invalidParam"),
        ({"snapshot": "snap", "location": "nowhere"}, "objectDoesNotExist"),
        ({"snapshot": "nope", "all": True}, "objectDoesNotExist"),
    ]:
        assert fails(src, "POST", "SnapshotUnexport", body)["name"] == name, body
    err = fails(src, "POST", "SnapshotReconcile/private")
    assert err["name"] == "invalidParam" and "not copied from a remote location" in err["descr"]
    assert fails(src, "POST", "SnapshotReconcile/nope")["name"] == "objectDoesNotExist"


GID = "zone1.a.2"


@pytest.mark.parametrize(
    ("command", "body"),
    [
        ("SnapshotFromRemote", {"remoteId": GID}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1"}),
        ("SnapshotFromRemote", {"remoteLocation": 5, "remoteId": GID}),
        ("SnapshotFromRemote", {"remoteLocation": "bad name", "remoteId": GID}),
        ("SnapshotFromRemote", {"remoteLocation": "z" * 64, "remoteId": GID}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": "zone1.a"}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": f"~{GID}"}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": 7}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "name": 5}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "name": "a b"}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "name": "#x"}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "template": 5}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "placeAll": 1}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "replication": 4}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "export": "yes"}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "tags": "x"}),
        ("SnapshotFromRemote", {"remoteLocation": "zone1", "remoteId": GID, "tags": {"k": "a b"}}),
        ("SnapshotFromRemote", [1]),
        ("SnapshotExport", {"snapshot": 5, "location": "zone2"}),
        ("SnapshotExport", {"snapshot": "snap"}),
        ("SnapshotExport", {"snapshot": "snap", "location": "bad name"}),
        ("SnapshotUnexport", {"snapshot": "snap", "all": 1}),
        ("SnapshotUnexport", {"snapshot": "snap", "all": True, "force": "yes"}),
        ("SnapshotUnexport", {"location": "zone2"}),
        ("SnapshotReconcile/bad%20name", None),
    ],
)
def test_bad_fields_are_invalid_param(zones: Zones, command: str, body: Any) -> None:
    ok(zones.src, "POST", "VolumeCreate", {"name": "v", "size": MiB})
    ok(zones.src, "POST", "VolumeSnapshot/v", {"name": "snap"})
    export(zones)
    target = zones.src if command in ("SnapshotExport", "SnapshotUnexport") else zones.dst
    err = fails(target, "POST", command, body)
    assert (err["name"], err["transient"]) == ("invalidParam", False), err
    assert zones.dst.state_snapshot()["state"]["volumes"] == {}


# Global ids, state files, the bindings.


def test_foreign_global_ids_are_looked_up_and_never_reused(zones: Zones) -> None:
    src, dst = zones.src, zones.dst
    gid = source_snapshot(zones)
    export(zones)
    copy(zones, gid, export=True)  # and exported back to its source
    wait_recovered(zones, gid)
    assert ok(dst, "GET", "ExportsList")["exports"] == [
        {"snapshot": f"~{gid}", "location": "zone1", "globalId": gid, "backingUp": False}
    ]
    (back,) = ok(src, "GET", "SnapshotsRemoteList")["snapshots"]
    assert (back["remoteId"], back["localSnapshot"], back["location"]) == (gid, "snap", "zone2")
    assert "onVolume" not in back  # no volume of that snapshot in zone2

    new = ok(dst, "POST", "VolumeCreate", {"name": "v", "size": MiB})["globalId"]
    assert new == "zone2.a.2"  # the copy took visible id 1
    ok(dst, "POST", "VolumeCreate", {"name": "clone", "parent": f"~{gid}"})
    ok(dst, "POST", "VolumeDelete/clone")
    ok(dst, "POST", "SnapshotUnexport", {"snapshot": f"~{gid}", "all": True})
    ok(dst, "POST", f"SnapshotDeleteById/{gid}")
    assert gid not in dst.state_snapshot()["state"]["volumes"]

    # a made global id is checked against foreign ones too
    cluster = dst._running()
    state = cluster.state.copy()
    taken = Volume(**{**vars(state.volumes[new]), "gid": f"zone2.a.{state.next_vid}"})
    state.volumes[taken.gid] = taken
    made, vid = cluster.new_gid(state)
    assert made == f"zone2.a.{vid}" != taken.gid and made not in state.volumes


def test_old_state_files_load(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "d", token=TOKEN).start()
    ok(emu, "POST", "VolumeCreate", {"name": "v", "size": MiB})
    ok(emu, "POST", "VolumeSnapshot/v", {"name": "s"})
    emu.stop()
    path = tmp_path / "d" / "state.json"
    data = json.loads(path.read_text())
    for vol in data["volumes"].values():
        for key in ("exports", "remote_location", "recovering"):
            del vol[key]
    path.write_text(json.dumps(data))
    assert State.from_json(data).volumes["emu.a.2"].exports == []
    emu.start()
    try:
        assert snapshot(emu, "s")["recoveringFromRemote"] is False
    finally:
        emu.stop()


def test_the_bindings_speak_it(zones: Zones) -> None:
    src = zones.src.api(transientRetries=0)
    dst = zones.dst.api(transientRetries=0)
    gid = source_snapshot(zones)
    src.snapshotExport({"snapshot": "snap", "location": "zone2"})
    assert [e.globalId for e in src.exportsList()["exports"]] == [gid]
    assert [loc.id for loc in dst.locationsList()["locations"]] == ["zone1", "zone2"]
    (remote,) = dst.snapshotsRemoteList()["snapshots"]
    assert (remote.remoteId, remote.onVolume) == (gid, "vol")
    dst.snapshotFromRemote({"remoteLocation": "zone1", "remoteId": gid, "template": "ssd"})
    wait_recovered(zones, gid)
    src.snapshotUnexport({"snapshot": "snap", "all": True, "force": True})
    assert src.exportsList()["exports"] == []


# The command line.


def test_cli_options(tmp_path: Path) -> None:
    assert emulator_cli.parse_remote_clusters(["zone2.a=9800", "zone3.b=0"]) == {
        "zone2.a": 9800,
        "zone3.b": 0,
    }
    for bad in (["zone2.a"], ["zone2=1"], ["zone2.a=x"], ["zone2.a=70000"], ["z.a=1", "z.a=2"]):
        with pytest.raises(ValueError):
            emulator_cli.parse_remote_clusters(bad)
    for bad in (["--remote-bandwidth", "fast"], ["--location-name", "bad name"]):
        proc = subprocess.run(
            [sys.executable, "-m", "spcs.cli", "emulator", "--data", str(tmp_path / "d"), *bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "can not start the emulator" in proc.stderr


def test_cli_serves_remote_clusters_on_one_bridge(tmp_path: Path) -> None:
    log_path = tmp_path / "emulator.log"
    cmd = [
        sys.executable, "-m", "spcs.cli", "emulator", "--data", str(tmp_path / "data"),
        "--listen", "127.0.0.1:0", "--token", TOKEN, "--cluster-id", "zone1.a",
        "--location-name", "first", "--remote-cluster", "zone2.a=0",
        "--remote-bandwidth", "64M", "--template", "hybrid",
    ]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = re.compile(r"ready: http://127\.0\.0\.1:(\d+)(.*)")
        wait_for(lambda: len(ready.findall(log_path.read_text())) == 2, "both ready lines", 30)
        (remote_port, remote_rest), (main_port, main_rest) = ready.findall(log_path.read_text())
        assert remote_rest == " (cluster zone2.a, location zone2)" and main_rest == ""
        for port in (main_port, remote_port):
            status, reply = raw_call(int(port), "GET", "/ctrl/1.0/LocationsList")
            assert status == 200
            assert [(x["id"], x["name"]) for x in reply["data"]["locations"]] == [
                ("zone1", "first"),
                ("zone2", "zone2"),
            ]
        assert (tmp_path / "data" / "locations" / "zone2.a" / "state.json").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_one_api_reaches_every_cluster_on_the_bridge(zones: Zones) -> None:
    """RemoteCommand/<cluster>/ on zone 1's API runs the command in zone 2 (by location name,
    cluster id or ~cluster id), as StorPool's multi-cluster API forwards commands."""
    for n, where in enumerate(("zone2", "zone2.a", "~zone2.a")):
        name = f"made-through-zone1-{n}"
        ok(
            zones.src,
            "POST",
            f"RemoteCommand/{where}/MultiCluster/VolumeCreate",
            {"name": name, "size": MiB, "template": "ssd"},
        )
        assert name in {v["name"] for v in ok(zones.dst, "GET", "VolumesList")}
        assert name not in {v["name"] for v in ok(zones.src, "GET", "VolumesList")}
    listed = ok(zones.src, "GET", "RemoteCommand/zone2/VolumesList")
    assert {v["globalId"].rsplit(".", 1)[0] for v in listed} == {"zone2.a"}
    zones.dst.stop()
    try:
        assert fails(zones.src, "GET", "RemoteCommand/zone2/VolumesList")["name"] == "busy"
    finally:
        zones.dst.start()
    error = fails(zones.src, "GET", "RemoteCommand/nowhere/VolumesList")
    assert error["name"] == "invalidParam" and "zone2" in error["descr"]
