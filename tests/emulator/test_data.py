"""Volume bytes: written through an attached device path, captured, cloned, reverted, sparse."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from spcs.emulator import Emulator, blockdata

from .conftest import GiB, MiB

pytestmark = pytest.mark.fast


def _attach(api: Any, ref: str, client: int = 1, *, snapshot: bool = False) -> None:
    key, mode = ("snapshot", "ro") if snapshot else ("volume", "rw")
    api.volumesReassignWait({"reassign": [{key: ref, mode: [client]}]})


def _detach(api: Any, ref: str, *, snapshot: bool = False) -> None:
    key = "snapshot" if snapshot else "volume"
    api.volumesReassignWait({"reassign": [{key: ref, "detach": "all"}]})


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as dev:
        dev.seek(offset)
        dev.write(data)


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as dev:
        dev.seek(offset)
        return dev.read(length)


def _allocated(emu: Emulator, gid: str) -> int:
    return blockdata.allocated_bytes(os.path.join(emu.data_dir, "objects", f"{gid}.raw"))


def test_snapshot_overwrite_revert_read_back(
    emu: Emulator, api: Any, roots: dict[int, Path]
) -> None:
    gid = api.volumeCreate({"name": "vol1", "size": 64 * MiB}).globalId
    _attach(api, "vol1")
    dev = roots[1] / "storpool-byid" / gid
    original = os.urandom(MiB)
    _write(dev, 3 * MiB, original)
    api.snapshotCreate("vol1", {"name": "snap1"})
    overwrite = b"\xaa" * MiB
    _write(dev, 3 * MiB, overwrite)
    _write(dev, 40 * MiB, b"new data after the snapshot")
    assert _read(dev, 3 * MiB, MiB) == overwrite

    _detach(api, "vol1")
    api.volumeRevert("vol1", {"toSnapshot": "snap1"})
    _attach(api, "vol1", client=2)
    dev2 = roots[2] / "storpool" / "vol1"
    assert _read(dev2, 3 * MiB, MiB) == original
    assert _read(dev2, 40 * MiB, 27) == bytes(27)  # written after the snapshot: gone

    # the snapshot itself, attached read-only, holds the original bytes too
    _attach(api, "snap1", client=1, snapshot=True)
    assert _read(roots[1] / "storpool" / "snap1", 3 * MiB, MiB) == original


def test_clone_from_snapshot_and_base_on_have_the_bytes(
    emu: Emulator, api: Any, roots: dict[int, Path]
) -> None:
    api.volumeCreate({"name": "src", "size": 16 * MiB})
    _attach(api, "src")
    payload = os.urandom(256 * 1024)
    _write(roots[1] / "storpool" / "src", 5 * MiB, payload)
    api.snapshotCreate("src", {"name": "tmpl"})
    _write(roots[1] / "storpool" / "src", 5 * MiB, bytes(len(payload)))  # source changes later

    api.volumeCreate({"name": "clone", "parent": "tmpl", "size": 32 * MiB})
    api.volumeCreate({"name": "copy", "baseOn": "src"})
    _attach(api, "clone", client=2)
    _attach(api, "copy", client=2)
    clone = roots[2] / "storpool" / "clone"
    assert os.path.getsize(clone) == 32 * MiB
    assert _read(clone, 5 * MiB, len(payload)) == payload
    assert _read(roots[2] / "storpool" / "copy", 5 * MiB, len(payload)) == bytes(len(payload))
    # clones are independent of each other
    _write(clone, 0, b"clone only")
    assert _read(roots[1] / "storpool" / "src", 0, 10) == bytes(10)


def test_resize_is_visible_through_the_device(api: Any, roots: dict[int, Path]) -> None:
    api.volumeCreate({"name": "v", "size": 8 * MiB})
    _attach(api, "v")
    dev = roots[1] / "storpool" / "v"
    _write(dev, 0, b"keep")
    api.volumeUpdate("v", {"size": 24 * MiB})
    assert os.path.getsize(dev) == 24 * MiB
    api.volumeUpdate("v", {"size": 4 * MiB, "shrinkOk": True})
    assert os.path.getsize(dev) == 4 * MiB
    assert _read(dev, 0, 4) == b"keep"


def test_sparse_10gib_volume_never_copies_holes(
    emu: Emulator, api: Any, roots: dict[int, Path]
) -> None:
    gid = api.volumeCreate({"name": "big", "size": 10 * GiB}).globalId
    _attach(api, "big")
    dev = roots[1] / "storpool" / "big"
    chunks = {0: os.urandom(MiB), 5 * GiB: os.urandom(MiB), 10 * GiB - MiB: os.urandom(MiB)}
    for offset, data in chunks.items():
        _write(dev, offset, data)
    written = len(chunks) * MiB
    slack = 2 * MiB  # filesystem metadata / extent rounding
    assert _allocated(emu, gid) <= written + slack

    snap = api.snapshotCreate("big", {"name": "s"}).snapshotGlobalId
    clone = api.volumeCreate({"name": "c", "parent": "s"}).globalId
    _write(dev, 5 * GiB, bytes(MiB))
    _detach(api, "big")
    api.volumeRevert("big", {"toSnapshot": "s"})
    for gid_ in (snap, clone, gid):
        assert os.path.getsize(os.path.join(emu.data_dir, "objects", f"{gid_}.raw")) == 10 * GiB
        assert _allocated(emu, gid_) <= written + slack, gid_
    _attach(api, "c", client=2)
    for offset, data in chunks.items():
        assert _read(roots[2] / "storpool" / "c", offset, MiB) == data
    _attach(api, "big", client=2)
    assert _read(roots[2] / "storpool" / "big", 5 * GiB, MiB) == chunks[5 * GiB]


@pytest.mark.parametrize("size", [0, 1, MiB - 1, 3 * MiB + 17])
def test_sparse_copy_fallback_matches_source(tmp_path: Path, size: int) -> None:
    # The extent copy used when the filesystem can not reflink (ext4, tmpfs).
    src, dst = tmp_path / "src", tmp_path / "dst"
    with open(src, "wb") as f:
        f.truncate(size)
        if size:
            f.seek(size // 2)
            f.write(os.urandom(min(4096, size - size // 2)))
    sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT)
    try:
        blockdata.sparse_copy(sfd, dfd, size)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert dst.read_bytes() == src.read_bytes()
    assert blockdata.allocated_bytes(str(dst)) <= blockdata.allocated_bytes(str(src)) + 4096
