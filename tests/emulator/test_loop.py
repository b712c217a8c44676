"""Loop-device mode (``--loop``): block devices behind the links, as on a real client."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from storpool import spapi

from spcs.emulator import Emulator, devices

from .conftest import MiB
from .helpers import TOKEN

_OK, _WHY = devices.loop_supported()
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not _OK, reason=f"loop-device mode not testable here: {_WHY}"),
]


@pytest.fixture
def loop_emu(tmp_path: Path, roots: dict[int, Path]) -> Iterator[Emulator]:
    emu = Emulator(tmp_path / "data", token=TOKEN, clients=roots, loop=True)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop(release_devices=True)


def _loop_of(link: Path) -> str:
    dev = os.path.realpath(link)
    assert dev.startswith("/dev/loop"), dev
    assert stat.S_ISBLK(os.stat(dev).st_mode)
    return dev


def _size(link: Path) -> int:
    out = subprocess.run(
        ["blockdev", "--getsize64", str(link)], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def _backing(dev: str) -> str | None:
    return devices.loop_backing_file(dev)


def _released(dev: str) -> bool:
    """Autoclear may finish a moment after the last close."""
    deadline = time.monotonic() + 5
    while _backing(dev) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_attach_gives_a_block_device_with_the_volume_bytes(
    loop_emu: Emulator, roots: dict[int, Path]
) -> None:
    api = loop_emu.api(transientRetries=0)
    gid = api.volumeCreate({"name": "v", "size": 8 * MiB}).globalId
    api.volumesReassignWait({"reassign": [{"volume": "v", "rw": [1]}]})
    link = roots[1] / "storpool-byid" / gid
    assert os.readlink(link) == "../sp-0"
    dev = _loop_of(link)
    data = os.path.join(loop_emu.data_dir, "objects", f"{gid}.raw")
    assert _backing(dev) == data
    assert _size(link) == 8 * MiB
    payload = os.urandom(4096)
    fd = os.open(link, os.O_RDWR)
    try:
        os.pwrite(fd, payload, MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(data, "rb") as f:
        f.seek(MiB)
        assert f.read(4096) == payload

    api.volumeUpdate("v", {"size": 16 * MiB})  # losetup -c makes the device grow
    assert _size(link) == 16 * MiB

    api.snapshotCreate("v", {"name": "s"})
    api.volumesReassignWait({"reassign": [{"snapshot": "s", "ro": [2]}]})
    snap_dev = _loop_of(roots[2] / "storpool" / "s")
    assert Path(f"/sys/block/{os.path.basename(snap_dev)}/ro").read_text().strip() == "1"
    with open(roots[2] / "storpool" / "s", "rb") as f:
        f.seek(MiB)
        assert f.read(4096) == payload


def test_open_loop_device_blocks_detach_until_forced(
    loop_emu: Emulator, roots: dict[int, Path]
) -> None:
    api = loop_emu.api(transientRetries=0)
    api.volumeCreate({"name": "v", "size": 4 * MiB})
    api.volumesReassign([{"volume": "v", "rw": [1, 2]}])
    link = roots[1] / "storpool" / "v"
    dev = _loop_of(link)
    fd = os.open(link, os.O_RDONLY)
    try:
        api.volumesReassign([{"volume": "v", "detach": [2]}])  # open on client 1 only
        with pytest.raises(spapi.ApiError) as caught:
            api.volumesReassign([{"volume": "v", "detach": [1]}])
        assert (caught.value.name, caught.value.desc) == ("busy", "'v' is open at client 1")
        api.volumesReassign([{"volume": "v", "detach": [1], "force": True}])
        assert not os.path.lexists(link)
    finally:
        os.close(fd)
    assert _released(dev)  # autoclear released it with the last close


def test_rights_change_makes_a_new_read_only_device(
    loop_emu: Emulator, roots: dict[int, Path]
) -> None:
    api = loop_emu.api(transientRetries=0)
    api.volumeCreate({"name": "v", "size": 4 * MiB})
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    rw_dev = _loop_of(roots[1] / "storpool" / "v")
    api.volumesReassign([{"volume": "v", "ro": [1]}])
    ro_dev = _loop_of(roots[1] / "storpool" / "v")
    assert devices.loop_readonly(ro_dev) and not devices.loop_readonly(rw_dev)
    assert _backing(rw_dev) is None
    assert [a.rights for a in api.attachmentsList()] == ["ro"]


def test_restart_reuses_loop_devices(tmp_path: Path, roots: dict[int, Path]) -> None:
    emu = Emulator(tmp_path / "data", token=TOKEN, clients=roots, loop=True).start()
    api: Any = emu.api(transientRetries=0)
    api.volumeCreate({"name": "v", "size": 4 * MiB})
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    dev = _loop_of(roots[1] / "storpool" / "v")
    emu.stop()  # devices stay, like a client's while mgmt restarts
    assert _loop_of(roots[1] / "storpool" / "v") == dev
    # a loop device over our data that no attachment explains (left by a crash)
    stray = devices.loop_attach(str(tmp_path / "data" / "objects" / "emu.a.1.raw"), readonly=True)
    again = Emulator(tmp_path / "data", token=TOKEN, clients=roots, loop=True).start()
    try:
        assert _loop_of(roots[1] / "storpool" / "v") == dev
        assert _released(stray)
    finally:
        again.stop(release_devices=True)
    assert _backing(dev) is None
    assert not os.path.lexists(roots[1] / "storpool" / "v")
