"""Copy-on-write in the emulator (spcs.emulator.cow): on a filesystem without reflink (a tmpfs
here) the emulator keeps its objects on an XFS image of its own, so snapshots and clones share
extents; the image survives restarts, devices work on it in both device modes, and where it can
not be made the copies are full copies with the reason in the log."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spcs.emulator import Emulator, EmulatorError, cow, devices

from .conftest import MiB
from .helpers import TOKEN

SNAPSHOTS = 100


def _usable() -> str:
    ok, why = devices.loop_supported()
    if not ok:
        return why
    if subprocess.run(["sh", "-c", "command -v mkfs.xfs"], capture_output=True).returncode:
        return "mkfs.xfs is not installed (Debian's xfsprogs)"
    return ""


pytestmark = pytest.mark.skipif(bool(_usable()), reason=_usable() or "usable")


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Path]:
    """A directory on a filesystem without reflink: a tmpfs."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def emulator(root: Path, **kwargs: Any) -> Emulator:
    return Emulator(
        root / "data",
        token=TOKEN,
        clients={1: root / "host1"},
        templates=["hybrid"],
        **kwargs,
    )


def used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def device(root: Path, gid: str) -> Path:
    return root / "host1" / "storpool-byid" / gid


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def filled_volume(root: Path, api: Any) -> tuple[str, str]:
    """A 256 MiB volume with 16 MiB of random data in 16 places; its global id and digest."""
    api.volumeCreate({"name": "v", "size": 256 * MiB, "template": "hybrid"})
    gid = api.volumeList("v")[0].globalId
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    with device(root, gid).open("r+b") as dev:
        for n in range(16):
            dev.seek(n * 16 * MiB)
            dev.write(os.urandom(MiB))
    api.volumesReassign([{"volume": "v", "detach": [1]}])
    return gid, digest(Path(api_data_path(root, gid)))


def api_data_path(root: Path, gid: str) -> str:
    return str(root / "data" / "objects" / f"{gid}.raw")


@pytest.mark.parametrize("loop", [False, True], ids=["files", "loop"])
def test_snapshots_and_clones_share_extents_on_the_emulators_own_xfs(plain: Path, loop: bool):
    emu = emulator(plain, loop=loop).start()
    try:
        assert emu.copy_on_write == cow.IMAGE_MOUNTED
        objects = plain / "data" / "objects"
        assert os.path.ismount(objects) and (plain / "data" / cow.IMAGE).exists()
        api = emu.api(transientRetries=0)
        _, data = filled_volume(plain, api)
        os.sync()  # the volume's own data reaches the image first
        xfs_before, tmpfs_before = used(objects), used(plain)
        for n in range(SNAPSHOTS):
            api.snapshotCreate("v", {"name": f"s{n}"})
        api.volumeCreate({"name": "clone", "parent": "s7", "template": "hybrid"})
        api.volumeCreate({"name": "copy", "baseOn": "v", "template": "hybrid"})
        # 100 snapshots and two copies of 16 MiB of data: metadata only, in both filesystems
        os.sync()
        assert used(objects) - xfs_before < 8 * MiB
        assert used(plain) - tmpfs_before < 8 * MiB
        for name, snapshot in (("s0", True), ("s99", True), ("clone", False), ("copy", False)):
            found = (api.snapshotList if snapshot else api.volumeList)(name)[0].globalId
            key = "snapshot" if snapshot else "volume"
            api.volumesReassign([{key: name, "ro": [1]}])
            assert digest(device(plain, found)) == data, name
            api.volumesReassign([{key: name, "detach": [1]}])
    finally:
        emu.stop(release_devices=True)
    assert not os.path.ismount(plain / "data" / "objects")


def test_the_image_outlives_restarts_and_stays_mounted_for_kept_devices(plain: Path):
    emu = emulator(plain).start()
    api = emu.api(transientRetries=0)
    gid, data = filled_volume(plain, api)
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    emu.stop()  # the device stays, as a client's does while management restarts
    objects = plain / "data" / "objects"
    assert os.path.ismount(objects) and digest(device(plain, gid)) == data
    emu.start()
    try:
        assert emu.copy_on_write == cow.IMAGE_MOUNTED
        assert digest(device(plain, gid)) == data
    finally:
        emu.stop(release_devices=True)
    assert not os.path.ismount(objects)
    again = emulator(plain).start()
    try:
        assert again.copy_on_write == cow.IMAGE_MOUNTED
        assert digest(objects / f"{gid}.raw") == data
    finally:
        again.stop(release_devices=True)


def test_where_no_image_can_be_used_copies_are_full_and_the_log_says_why(
    plain: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "spcs.emulator.cow")
    off = emulator(plain / "off", copy_on_write="off").start()
    try:
        assert off.copy_on_write == cow.FULL
        assert not (plain / "off" / "data" / cow.IMAGE).exists()
        assert "copy-on-write is off" in caplog.text
    finally:
        off.stop(release_devices=True)
    # objects already stored on the plain filesystem: no image is put over them
    (plain / "old" / "data" / "objects").mkdir(parents=True)
    (plain / "old" / "data" / "objects" / "emu.a.1.raw").write_bytes(b"")
    old = emulator(plain / "old").start()
    try:
        assert old.copy_on_write == cow.FULL
        assert "already holds objects" in caplog.text
    finally:
        old.stop(release_devices=True)


def test_an_image_that_can_not_be_mounted_stops_the_start(plain: Path):
    (plain / "data").mkdir()
    (plain / "data" / cow.IMAGE).write_bytes(b"not an xfs filesystem" * 1000)
    with pytest.raises(EmulatorError, match="could not be mounted"):
        emulator(plain).start()


def test_a_filesystem_with_reflink_needs_no_image(tmp_path: Path):
    if not cow.reflink_works(str(tmp_path)):
        pytest.skip(f"{tmp_path} has no reflink (the tests' XFS is not set up here)")
    emu = emulator(tmp_path).start()
    try:
        assert emu.copy_on_write == cow.SHARED
        assert not (tmp_path / "data" / cow.IMAGE).exists()
    finally:
        emu.stop(release_devices=True)


def test_copy_on_write_mode_is_checked(tmp_path: Path):
    with pytest.raises(EmulatorError, match="copy_on_write"):
        emulator(tmp_path, copy_on_write="sometimes")
