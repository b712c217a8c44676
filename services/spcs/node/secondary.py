"""CloudStack secondary storage on this host: NFS exports (mounted here) and local directories.

`nfs://server/export[/dir]` is mounted under the node's mount root, shared between concurrent
jobs (reference-counted) and unmounted after it has been idle for a while. `file:///dir` is a
directory the host already has (a store mounted by other means, and the tests).

Every path a request names is resolved inside the store's root: absolute paths, `..` and
symbolic links that lead outside are refused with INVALID_ARGUMENT, so a request can never
read or write outside the store.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from spcs.common import errors

log = logging.getLogger(__name__)

NFS_OPTIONS = "nosuid,nodev,noexec"
IDLE_UNMOUNT_SECONDS = 120.0
COMMAND_TIMEOUT_SECONDS = 120.0

Runner = Callable[[Sequence[str]], None]


def run_command(argv: Sequence[str]) -> None:
    try:
        subprocess.run(
            argv, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS
        )
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or error.stdout or "").strip()
        raise errors.Unavailable(f"`{' '.join(argv)}` failed: {detail}") from None
    except subprocess.TimeoutExpired:
        raise errors.Unavailable(
            f"`{' '.join(argv)}` did not finish in {COMMAND_TIMEOUT_SECONDS:.0f}s"
        ) from None


def check_relative(relative: str, what: str) -> str:
    """Refuse absolute paths and `..` before anything is mounted (symlinks are checked later,
    inside the store)."""
    rel = PurePosixPath(relative)
    if not relative or rel.is_absolute() or ".." in rel.parts:
        raise errors.InvalidArgument(
            f"{what} {relative!r} must be a relative path inside the secondary store "
            "(not absolute, no '..')"
        )
    return relative


@dataclass(frozen=True)
class Store:
    url: str
    root: Path

    def resolve(self, relative: str, what: str) -> Path:
        """The real path of `relative` inside the store; refuses anything that leaves it."""
        rel = PurePosixPath(check_relative(relative, what))
        root = self.root.resolve()
        real = (root / rel).resolve()
        if real != root and root not in real.parents:
            raise errors.InvalidArgument(
                f"{what} {relative!r} leads outside the secondary store {self.url} through a "
                "symbolic link; refusing it"
            )
        return real

    def output_dir(self, relative: str, what: str) -> Path:
        """Create (inside the store) and return the directory `relative`."""
        path = self.resolve(relative, what)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise errors.InvalidArgument(
                f"{what} {relative!r} exists and is not a directory"
            ) from None
        except OSError as error:
            raise _store_error(error, self.url) from None
        # a symlink swapped in while we created it would show up here
        return self.resolve(relative, what)


def _store_error(error: OSError, url: str) -> errors.SpcsError:
    import errno

    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted(f"secondary store {url} is full: {error}; free space")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return errors.FailedPrecondition(f"secondary store {url} is not writable: {error}")
    return errors.Unavailable(f"secondary store {url}: {error}")


def is_mountpoint(path: Path) -> bool:
    """Whether something is mounted on `path`, from /proc/self/mountinfo: no stat() of the
    mount itself, which hangs when an NFS server is gone (and misses same-device mounts)."""
    wanted = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split(" ")
            # field 5 is the mount point, with spaces and friends escaped as octal (\040)
            point = fields[4].encode().decode("unicode_escape") if len(fields) > 4 else ""
            if point == wanted:
                return True
    return False


@dataclass
class _Mount:
    path: Path
    users: int = 0
    timer: threading.Timer | None = None


class SecondaryStorage:
    def __init__(
        self,
        mount_root: Path,
        *,
        idle_seconds: float = IDLE_UNMOUNT_SECONDS,
        runner: Runner = run_command,
    ) -> None:
        self.mount_root = mount_root
        self.idle_seconds = idle_seconds
        self._run = runner
        self._lock = threading.Lock()
        self._mounts: dict[str, _Mount] = {}

    @contextmanager
    def open(self, url: str) -> Iterator[Store]:
        parts = urlsplit(url)
        if parts.scheme == "file":
            root = Path(unquote(parts.path))
            if parts.netloc not in ("", "localhost") or not root.is_absolute():
                raise errors.InvalidArgument(
                    f"secondary store URL {url!r}: use file:///absolute/dir"
                )
            if not root.is_dir():
                raise errors.FailedPrecondition(
                    f"secondary store directory {root} ({url}) does not exist on this host"
                )
            yield Store(url, root)
        elif parts.scheme == "nfs":
            source = self._nfs_source(url, parts.hostname, unquote(parts.path))
            with self._mounted(source) as root:
                yield Store(url, root)
        else:
            raise errors.InvalidArgument(
                f"secondary store URL {url!r} is not supported: use nfs://server/export[/dir] "
                "or file:///dir"
            )

    @staticmethod
    def _nfs_source(url: str, host: str | None, path: str) -> str:
        if not host or not path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise errors.InvalidArgument(
                f"secondary store URL {url!r}: expected nfs://server/export[/dir]"
            )
        return f"{host}:{path.rstrip('/') or '/'}"

    @contextmanager
    def _mounted(self, source: str) -> Iterator[Path]:
        mount = self._acquire(source)
        try:
            yield mount.path
        finally:
            self._release(source)

    def _acquire(self, source: str) -> _Mount:
        with self._lock:
            mount = self._mounts.get(source)
            if mount is None:
                path = self.mount_root / hashlib.sha256(source.encode()).hexdigest()[:16]
                path.mkdir(parents=True, exist_ok=True)
                if not is_mountpoint(path):
                    log.info("mounting NFS %s on %s", source, path)
                    self._run(["mount", "-t", "nfs", "-o", NFS_OPTIONS, source, str(path)])
                mount = self._mounts[source] = _Mount(path)
            if mount.timer is not None:
                mount.timer.cancel()
                mount.timer = None
            mount.users += 1
            return mount

    def _release(self, source: str) -> None:
        with self._lock:
            mount = self._mounts[source]
            mount.users -= 1
            if mount.users == 0:
                mount.timer = threading.Timer(self.idle_seconds, self._unmount_if_idle, (source,))
                mount.timer.daemon = True
                mount.timer.start()

    def _unmount_if_idle(self, source: str) -> None:
        with self._lock:
            mount = self._mounts.get(source)
            if mount is None or mount.users:
                return
            del self._mounts[source]
            try:
                self._run(["umount", str(mount.path)])
                log.info("unmounted idle NFS %s from %s", source, mount.path)
            except errors.SpcsError as error:
                log.warning("could not unmount %s: %s", mount.path, error.message)

    def mounted(self) -> dict[str, int]:
        """source → users, for tests and diagnostics."""
        with self._lock:
            return {source: m.users for source, m in self._mounts.items()}

    def close(self) -> None:
        """Unmount everything that is idle (on shutdown)."""
        with self._lock:
            idle = [s for s, m in self._mounts.items() if m.users == 0]
            for source in idle:
                timer = self._mounts[source].timer
                if timer is not None:
                    timer.cancel()
        for source in idle:
            self._unmount_if_idle(source)
