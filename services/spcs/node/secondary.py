"""CloudStack secondary storage on this host: NFS exports (mounted here) and local directories.

`nfs://server/export[/dir]` is mounted under the node's mount root, shared between concurrent
jobs (reference-counted) and unmounted after it has been idle for a while. `file:///dir` is a
directory the host already has (a store mounted by other means, and the tests).

A node serves only the stores its `secondary_store` setting lists (NFS exports and `file://`
roots, each with everything below it); any other URL is PERMISSION_DENIED, so a caller cannot
point a copy at `file:///etc`. Every path a request names is resolved inside the store's root:
absolute paths, `..` and symbolic links that lead outside are refused with INVALID_ARGUMENT, so
a request can never read or write outside the store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit

from spcs.common import errors
from spcs.common.validate import shown

log = logging.getLogger(__name__)

NFS_OPTIONS = "nosuid,nodev,noexec"
SETTING = "secondary_store (--secondary-store, SPCS_SECONDARY_STORE)"
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
            f"{what} {shown(relative)} must be a relative path inside the secondary store "
            "(not absolute, no '..')"
        )
    return relative


@dataclass(frozen=True)
class AllowedStore:
    """One entry of the node's `secondary_store` setting: a store and everything below it."""

    scheme: str  # "file" or "nfs"
    host: str  # NFS server (lower case); "" for file
    path: str  # normalized absolute path (for file://, with symlinks resolved)

    @classmethod
    def parse(cls, url: str) -> AllowedStore:
        """An entry as written in the setting; ValueError says what is wrong."""
        parts = urlsplit(url.strip())
        scheme, path = parts.scheme, posixpath.normpath(unquote(parts.path) or "/")
        if scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError(f"{url!r}: use file:///absolute/dir")
            return cls("file", "", os.path.realpath(path))
        if scheme == "nfs":
            if not parts.hostname or not parts.path.startswith("/"):
                raise ValueError(f"{url!r}: use nfs://server/export[/dir]")
            return cls("nfs", parts.hostname.lower(), path)
        raise ValueError(f"{url!r}: a secondary store is nfs://server/export or file:///dir")

    def covers(self, parts: SplitResult) -> bool:
        if parts.scheme != self.scheme:
            return False
        path = posixpath.normpath(unquote(parts.path) or "/")
        if self.scheme == "file":
            path = os.path.realpath(path)
        elif (parts.hostname or "").lower() != self.host:
            return False
        return path == self.path or path.startswith(self.path.rstrip("/") + "/")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


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


def _store_url(url: str) -> SplitResult:
    """The parts of a secondary store URL; INVALID_ARGUMENT unless it is file:///dir or
    nfs://server/export[/dir]."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise errors.InvalidArgument(
                f"secondary store URL {shown(url)}: use file:///absolute/dir"
            )
    elif parts.scheme == "nfs":
        if not parts.hostname or not path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise errors.InvalidArgument(
                f"secondary store URL {shown(url)}: expected nfs://server/export[/dir]"
            )
    else:
        raise errors.InvalidArgument(
            f"secondary store URL {shown(url)} is not supported: use nfs://server/export[/dir] "
            "or file:///dir"
        )
    return parts


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
        allowed: Iterable[AllowedStore] = (),
        *,
        idle_seconds: float = IDLE_UNMOUNT_SECONDS,
        runner: Runner = run_command,
    ) -> None:
        self.mount_root = mount_root
        self.allowed = tuple(allowed)
        self.idle_seconds = idle_seconds
        self._run = runner
        self._lock = threading.Lock()
        self._mounts: dict[str, _Mount] = {}

    def check_allowed(self, url: str) -> None:
        """INVALID_ARGUMENT for a malformed store URL; PERMISSION_DENIED unless the node's
        setting lists the store (or one above it)."""
        parts = _store_url(url)
        if any(entry.covers(parts) for entry in self.allowed):
            return
        served = ", ".join(map(str, self.allowed)) or "none"
        raise errors.PermissionDenied(
            f"secondary store {shown(url, 200)} is not one this node serves (served: {served}); "
            f"add it to the node setting {SETTING} if it is a secondary store of this zone"
        )

    @contextmanager
    def open(self, url: str) -> Iterator[Store]:
        self.check_allowed(url)
        parts = urlsplit(url)
        if parts.scheme == "file":
            root = Path(unquote(parts.path))
            if not root.is_dir():
                raise errors.FailedPrecondition(
                    f"secondary store directory {root} ({url}) does not exist on this host"
                )
            yield Store(url, root)
        else:
            path = unquote(parts.path).rstrip("/") or "/"
            with self._mounted(f"{parts.hostname}:{path}") as root:
                yield Store(url, root)

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
