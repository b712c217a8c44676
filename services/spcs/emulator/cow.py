"""Copy-on-write for the emulator's objects: snapshots, clones and copies share extents.

StorPool's snapshots and clones are instant and take no space. The emulator keeps one sparse
file per object and copies one with a reflink (`spcs.emulator.blockdata`), which is instant
and shares the data on a filesystem that shares extents (XFS with reflink, btrfs). When the
data directory's filesystem cannot (ext4, tmpfs), the emulator keeps its objects on an XFS
filesystem of its own: the sparse image `<data>/objects.xfs`, made on the first start of an
empty data directory and mounted (through a loop device) on `<data>/objects` at every start,
unmounted when the emulator stops and releases its devices. That needs root, loop devices and
`mkfs.xfs` (Debian's xfsprogs); without them, or with objects already stored on the plain
filesystem, copies are full copies and the log says why.

The image is as large as the data directory's filesystem; its free space is not what the
emulator reports (that stays the data directory's, where the image's bytes really go).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from spcs.emulator import blockdata, devices

log = logging.getLogger(__name__)

IMAGE = "objects.xfs"
AUTO, OFF = "auto", "off"
MODES = (AUTO, OFF)
# how the objects are copied: extents shared by the data filesystem, by the emulator's own
# XFS image, or full copies
SHARED, IMAGE_MOUNTED, FULL = "reflink", "xfs-image", "full-copy"
_TIMEOUT = 60
# -K: no discard of a fresh sparse file; the smallest log XFS allows keeps the image small;
# a copy-on-write extent of one block and no speculative preallocation (allocsize) keep each
# file's allocation its written blocks, which is what the emulator reports as space used
MKFS_OPTIONS = ("-q", "-K", "-m", "reflink=1", "-d", "cowextsize=1", "-l", "size=64m")
MOUNT_OPTIONS = "allocsize=4k"


class CowError(Exception):
    """The image exists but can not be mounted: the objects in it are out of reach."""


@dataclass
class CopyOnWrite:
    how: str
    objects_dir: str
    image: str = ""
    mounted: bool = False  # the image is mounted on objects_dir (this emulator unmounts it)

    def release(self) -> None:
        """Unmount the image (once every device on it is gone); a busy one stays mounted."""
        if not self.mounted:
            return
        done = _run(["umount", self.objects_dir])
        if done is not None:
            log.warning(
                "could not unmount the emulator's XFS image from %s (%s); it stays mounted "
                "and the next start uses it as it is",
                self.objects_dir,
                done,
            )
            return
        self.mounted = False
        log.info("unmounted the emulator's XFS image %s", self.image)


def prepare(data_dir: str, objects_dir: str, mode: str = AUTO) -> CopyOnWrite:
    """Make the objects directory copy-on-write if it can be (see the module's docstring)."""
    image = os.path.join(data_dir, IMAGE)
    if os.path.exists(image):
        return _mount(image, objects_dir)
    if reflink_works(objects_dir):
        return CopyOnWrite(SHARED, objects_dir)
    why = _why_no_image(objects_dir, mode)
    if why:
        # asked for (off): said, not warned about
        (log.info if mode == OFF else log.warning)(
            "snapshots and clones are full copies: the filesystem of %s shares no extents "
            "(no reflink) and %s",
            objects_dir,
            why,
        )
        return CopyOnWrite(FULL, objects_dir)
    try:
        _make_image(image, data_dir)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(image)
        log.warning(
            "snapshots and clones are full copies: making the XFS image %s failed: %s",
            image,
            error,
        )
        return CopyOnWrite(FULL, objects_dir)
    return _mount(image, objects_dir)


def reflink_works(directory: str) -> bool:
    """Whether files in `directory` can share extents (a probe: two small temporary files)."""
    try:
        with (
            tempfile.NamedTemporaryFile(dir=directory, prefix=".reflink-probe-") as src,
            tempfile.NamedTemporaryFile(dir=directory, prefix=".reflink-probe-") as dst,
        ):
            os.pwrite(src.fileno(), b"\1" * 4096, 0)
            fcntl.ioctl(dst.fileno(), blockdata.FICLONE, src.fileno())
    except OSError:
        return False
    return True


def _why_no_image(objects_dir: str, mode: str) -> str:
    if mode == OFF:
        return "copy-on-write is off (--copy-on-write off)"
    ok, why = devices.loop_supported()
    if not ok:
        return f"an XFS image of the emulator's own needs loop devices ({why})"
    if shutil.which("mkfs.xfs") is None:
        return "an XFS image of the emulator's own needs mkfs.xfs (Debian's xfsprogs)"
    if any(not name.startswith(".") for name in os.listdir(objects_dir)):
        return (
            f"{objects_dir} already holds objects (an XFS image is made only for an empty "
            "data directory)"
        )
    return ""


def _make_image(image: str, data_dir: str) -> None:
    st = os.statvfs(data_dir)
    size = st.f_blocks * st.f_frsize
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    failed = _run(["mkfs.xfs", *MKFS_OPTIONS, image])
    if failed is not None:
        raise OSError(f"mkfs.xfs: {failed}")
    log.info("made the XFS image %s (%d GiB, sparse) for the emulator's objects", image, size >> 30)


def _mount(image: str, objects_dir: str) -> CopyOnWrite:
    if not os.path.ismount(objects_dir):
        failed = _run(["mount", "-o", f"loop,{MOUNT_OPTIONS}", image, objects_dir])
        if failed is not None:
            raise CowError(
                f"the emulator's objects are in the XFS image {image}, which could not be "
                f"mounted on {objects_dir}: {failed}"
            )
    cow = CopyOnWrite(IMAGE_MOUNTED, objects_dir, image, mounted=True)
    if not reflink_works(objects_dir):
        cow.release()
        raise CowError(f"{objects_dir} (the XFS image {image}) shares no extents")
    log.info(
        "the emulator's objects are on the XFS image %s (mounted on %s): snapshots and clones "
        "share extents",
        image,
        objects_dir,
    )
    return cow


def _run(argv: list[str]) -> str | None:
    """Run a tool; None when it worked, else what it said."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
