"""StorPool device links on this host: where they are, waiting for them, their size.

StorPool's block client makes `/dev/storpool/<name>` and `/dev/storpool-byid/<globalId>` appear
when an object is attached here. The node works under a configurable device root (default
`/dev`), so the CloudStack path `/dev/storpool-byid/<gid>` maps to
`<root>/storpool-byid/<gid>`; with the default root they are the same path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from spcs.common import errors
from spcs.storpool import names

POLL_SECONDS = 0.05


class Devices:
    def __init__(self, root: Path) -> None:
        self.root = root

    def byid(self, global_id: str) -> Path:
        return self.root / "storpool-byid" / global_id

    def cloudstack_path(self, global_id: str) -> str:
        """The path CloudStack stores (always under /dev, whatever our root is)."""
        return names.byid_path(global_id)

    def wait_present(self, path: Path, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() >= deadline:
                raise errors.DeadlineExceeded(
                    f"device {path} for {what} did not appear within {timeout:.0f}s after the "
                    "attach; check that the StorPool client (storpool_block) runs on this host"
                )
            time.sleep(POLL_SECONDS)

    def wait_absent(self, path: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while os.path.lexists(path):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    @staticmethod
    def size(path: Path) -> int:
        """Size of a block device or a file (seeking to the end works for both)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
