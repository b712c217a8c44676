"""The data directory: persisted state and the per-object data files.

Layout::

    <data>/state.json        the whole `State`, replaced atomically on every change
    <data>/objects/<gid>.raw one sparse file per volume or snapshot
    <data>/token             the API token, when the emulator generated one
    <data>/.lock             flock'ed while an emulator serves this directory

State is written to a temporary file and renamed over ``state.json``, so a
crashed or killed emulator leaves the old or the new world, never a torn one.
With ``durable=True`` the file and the directory are also fsync'ed, which
survives a power cut too but costs tens of milliseconds per change on a busy
disk (emulator choice: off by default). Data files written before a crash that
the state never referenced are deleted on the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets

import orjson

from spcs.emulator import blockdata
from spcs.emulator.model import State

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
OBJECTS_DIR = "objects"
TOKEN_FILE = "token"
LOCK_FILE = ".lock"


class DataDirBusyError(Exception):
    """Another emulator already serves this data directory."""


class Store:
    def __init__(self, data_dir: str, *, durable: bool = False) -> None:
        self.durable = durable
        os.makedirs(data_dir, exist_ok=True)
        self.dir = os.path.realpath(data_dir)
        self.objects_dir = os.path.join(self.dir, OBJECTS_DIR)
        os.makedirs(self.objects_dir, exist_ok=True)
        self._lock_fd: int | None = os.open(
            os.path.join(self.dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DataDirBusyError(f"{self.dir} is in use by another emulator") from exc

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def data_path(self, gid: str) -> str:
        return os.path.join(self.objects_dir, f"{gid}.raw")

    def scratch_path(self, gid: str) -> str:
        """A not-yet-existing path next to the data file, for build-then-rename."""
        return os.path.join(self.objects_dir, f"{gid}.raw.tmp-{secrets.token_hex(4)}")

    def load(self) -> State | None:
        path = os.path.join(self.dir, STATE_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        return State.from_json(data)

    def save(self, state: State) -> None:
        path = os.path.join(self.dir, STATE_FILE)
        tmp = f"{path}.tmp"
        # the whole state is written on every change: orjson writes the records (dataclasses)
        # as they are, 15x faster than the json module through State.to_json (0.4 against
        # 7.6 ms with 700 volumes on the 2-core VM)
        payload = orjson.dumps(state)
        with open(tmp, "wb") as f:
            f.write(payload)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if not self.durable:
            return
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def reconcile(self, state: State) -> None:
        """Delete unreferenced data files; recreate missing ones (as zeroes) loudly."""
        wanted = {f"{gid}.raw" for gid in state.volumes}
        for entry in os.listdir(self.objects_dir):
            if entry not in wanted:
                log.info("removing stale data file %s", entry)
                blockdata.remove(os.path.join(self.objects_dir, entry))
        for gid, vol in state.volumes.items():
            path = self.data_path(gid)
            if not os.path.exists(path):
                log.error("data file of %s %s is missing; recreating it empty", vol.kind, vol.ref)
                blockdata.create(path, vol.size)

    def token(self, given: str | None) -> str:
        """`given`, else the token saved in the data directory, else a new saved one."""
        path = os.path.join(self.dir, TOKEN_FILE)
        if given:
            return given
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            saved = f.read().strip()
            if saved:
                return saved
        # StorPool tokens are long decimal numbers; keep that shape.
        token = str(secrets.randbelow(9 * 10**18) + 10**18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        return token
