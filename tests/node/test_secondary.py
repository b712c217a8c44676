"""Secondary stores: NFS mounts (a bind mount stands in for NFS here), sharing, idle unmount,
and paths confined to the store."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from spcs.common import errors
from spcs.node.secondary import NFS_OPTIONS, AllowedStore, SecondaryStorage, is_mountpoint

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


class BindMountNfs:
    """Runs the node's real mount/umount commands, with NFS replaced by a bind mount of the
    export's path on this machine (there is no NFS in this kernel)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))
        if argv[0] == "mount":
            assert argv[1:5] == ["-t", "nfs", "-o", NFS_OPTIONS]
            _, export = argv[5].split(":", 1)
            subprocess.run(["mount", "--bind", export, argv[6]], check=True)
        else:
            subprocess.run(list(argv), check=True)


@needs_root
def test_nfs_store_is_mounted_once_shared_and_unmounted_when_idle(tmp_path: Path):
    export = tmp_path / "export" / "secondary"
    (export / "template").mkdir(parents=True)
    (export / "template" / "a.qcow2").write_bytes(b"image")
    runner = BindMountNfs()
    url = f"nfs://127.0.0.1{export}"
    allowed = [AllowedStore.parse(url)]
    stores = SecondaryStorage(tmp_path / "mnt", allowed, idle_seconds=0.3, runner=runner)
    entered = threading.Barrier(2)

    def user() -> None:
        with stores.open(url) as store:
            entered.wait(5)
            assert store.resolve("template/a.qcow2", "path").read_bytes() == b"image"
            time.sleep(0.2)

    threads = [threading.Thread(target=user) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    mounts = [c for c in runner.calls if c[0] == "mount"]
    assert len(mounts) == 1 and mounts[0][5] == f"127.0.0.1:{export}"
    mountpoint = Path(mounts[0][6])
    assert is_mountpoint(mountpoint)
    with stores.open(url) as store:  # reused while still mounted
        directory = store.output_dir("snapshots/2/15", "destination")
        (directory / "s1").write_bytes(b"backup")
    assert (export / "snapshots/2/15/s1").read_bytes() == b"backup"
    assert len([c for c in runner.calls if c[0] == "mount"]) == 1
    deadline = time.monotonic() + 5
    while is_mountpoint(mountpoint):
        assert time.monotonic() < deadline, "idle store was not unmounted"
        time.sleep(0.05)
    assert runner.calls[-1] == ["umount", str(mountpoint)]
    assert stores.mounted() == {}


def test_bad_nfs_urls(tmp_path: Path):
    stores = SecondaryStorage(
        tmp_path / "mnt", [AllowedStore.parse("nfs://host/")], runner=BindMountNfs()
    )
    for url in ("nfs:///no-host", "nfs://host", "nfs://host/a/../b", "ftp://host/x"):
        with pytest.raises(errors.InvalidArgument), stores.open(url):
            pass


def test_failed_mount_is_unavailable(tmp_path: Path):
    def failing(argv: Sequence[str]) -> None:
        raise errors.Unavailable(f"`{' '.join(argv)}` failed: mount.nfs: Connection refused")

    stores = SecondaryStorage(
        tmp_path / "mnt", [AllowedStore.parse("nfs://10.0.0.1/export")], runner=failing
    )
    with (
        pytest.raises(errors.Unavailable, match="Connection refused"),
        stores.open("nfs://10.0.0.1/export"),
    ):
        pass
    assert stores.mounted() == {}


def test_a_node_serves_only_the_stores_it_is_configured_for(tmp_path: Path):
    served = tmp_path / "secondary"
    (served / "template").mkdir(parents=True)
    (tmp_path / "secondary2").mkdir()
    os.symlink("/etc", served / "etc-link")
    stores = SecondaryStorage(
        tmp_path / "mnt",
        [AllowedStore.parse(f"file://{served}"), AllowedStore.parse("nfs://NFS1.example/export")],
        runner=BindMountNfs(),
    )
    for url in (
        f"file://{served}",
        f"file://{served}/template",
        f"file://{served}/",
        "nfs://nfs1.example/export",
        "nfs://nfs1.example/export/sub/dir",
    ):
        stores.check_allowed(url)
    for url in (
        "file:///etc",
        f"file://{tmp_path}",
        f"file://{tmp_path}/secondary2",  # a sibling sharing the prefix
        f"file://{served}/etc-link",  # a symlink inside that leads out
        "nfs://nfs1.example/export2",
        "nfs://nfs2.example/export",
        "nfs://nfs1.example/",
    ):
        with pytest.raises(errors.PermissionDenied, match="secondary_store"):
            stores.check_allowed(url)
    with pytest.raises(errors.PermissionDenied), stores.open("file:///etc"):
        pass
    for url in ("nfs://nfs1.example/export/../etc", "smb://x/y", "file://host/dir"):
        with pytest.raises(errors.InvalidArgument):
            stores.check_allowed(url)
    nothing = SecondaryStorage(tmp_path / "mnt")
    with pytest.raises(errors.PermissionDenied, match=r"served: none"):
        nothing.check_allowed(f"file://{served}")


@pytest.mark.parametrize(
    "entry", ["file://relative/dir", "file:dir", "nfs://server", "nfs:///export", "smb://x/y", ""]
)
def test_a_bad_store_setting_is_refused(entry: str):
    with pytest.raises(ValueError, match=r"secondary store|file:///|nfs://"):
        AllowedStore.parse(entry)
