"""Volume and snapshot bytes: one sparse file per object.

Copies never touch holes: a reflink (FICLONE) where the filesystem shares
extents (btrfs, xfs), else a copy of only the data extents found with
SEEK_DATA/SEEK_HOLE, each moved with ``os.copy_file_range``. File data is not
fsync'ed: the emulator promises consistent metadata across restarts, not
durability of client writes across a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_CHUNK = 1 << 20
# errnos that mean "this filesystem/kernel can't do that here", not a real failure
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


def create(path: str, size: int) -> None:
    """A new all-zero (all-hole) file of `size` bytes; on any failure there is no file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def clone(src: str, dst: str, size: int | None = None) -> None:
    """A new file `dst` with `src`'s bytes, then truncated/extended to `size` if given."""
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _clone_fd(sfd, dfd)
            if size is not None:
                os.ftruncate(dfd, size)
        except BaseException:
            os.close(dfd)
            os.unlink(dst)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)


def _clone_fd(sfd: int, dfd: int) -> None:
    try:
        fcntl.ioctl(dfd, FICLONE, sfd)
        return
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    sparse_copy(sfd, dfd, os.fstat(sfd).st_size)


def sparse_copy(sfd: int, dfd: int, length: int) -> None:
    """Copy `length` bytes, writing only the source's data extents."""
    os.ftruncate(dfd, length)
    offset = 0
    while offset < length:
        try:
            start = os.lseek(sfd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                return
            if exc.errno in _UNSUPPORTED:
                _zero_skipping_copy(sfd, dfd, offset, length)
                return
            raise
        if start >= length:
            return
        end = min(os.lseek(sfd, start, os.SEEK_HOLE), length)
        _copy_range(sfd, dfd, start, end - start)
        offset = end


def _copy_range(sfd: int, dfd: int, offset: int, count: int) -> None:
    while count > 0:
        try:
            n = os.copy_file_range(sfd, dfd, count, offset, offset)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            _rw_copy(sfd, dfd, offset, count)
            return
        if n == 0:
            return
        offset += n
        count -= n


def _rw_copy(sfd: int, dfd: int, offset: int, count: int) -> None:
    while count > 0:
        buf = os.pread(sfd, min(_CHUNK, count), offset)
        if not buf:
            return
        os.pwrite(dfd, buf, offset)
        offset += len(buf)
        count -= len(buf)


def _zero_skipping_copy(sfd: int, dfd: int, offset: int, length: int) -> None:
    # No SEEK_DATA: read everything, but keep all-zero chunks as holes.
    while offset < length:
        buf = os.pread(sfd, min(_CHUNK, length - offset), offset)
        if not buf:
            return
        if buf.count(0) != len(buf):
            os.pwrite(dfd, buf, offset)
        offset += len(buf)


def resize(path: str, size: int) -> None:
    os.truncate(path, size)


def allocated_bytes(path: str) -> int:
    """Bytes the file really occupies (st_blocks), the basis of space accounting."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
