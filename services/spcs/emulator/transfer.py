"""Background transfers of snapshots copied from another location (recoveringFromRemote).

``SnapshotFromRemote`` creates the local snapshot as a sparse file of the remote one's size,
marked recovering; a transfer thread then fetches its bytes: it reads the source location's
data file of that global id (found through the `Bridge`) in 4 MiB chunks and writes each at the
same offset into the local file, outside the cluster lock, and commits ``recovering=False``
when the last chunk is in. All-zero chunks are not written (the copy stays sparse), and neither
are chunks the local file already holds, so a resumed transfer only sends what is missing.

The chunks each transfer writes are paced to the emulator's ``remote_bandwidth`` (bytes per
second, per transfer; changeable while transfers run), so a recovery can be watched: the local
file's allocation grows.

Before each chunk the transfer checks that it should go on; it stops (logged, the snapshot stays
recovering until a ``SnapshotReconcile`` or the next start of the emulator resumes it) when the
source location is unreachable, the source snapshot is no longer exported to this location, the
local snapshot was deleted, this emulator stops, or a ``RemoteTransfer`` fault fires (see
`spcs.emulator.faults`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spcs.emulator.faults import Faults

if TYPE_CHECKING:
    from spcs.emulator.cluster import Cluster

log = logging.getLogger(__name__)

CHUNK = 4 << 20
DEFAULT_BANDWIDTH = 512 << 20
_POLL = 0.05  # the longest pacing sleep: how soon a stop or a bandwidth change is seen

Written = tuple[float, int] | None  # (when, bytes) of the last chunk written, None: none


class Pacer:
    """The bandwidth limit of one emulator's transfers, changeable while they run."""

    def __init__(self, bandwidth: int | None) -> None:
        self.bandwidth = bandwidth  # bytes per second; None or 0: unpaced

    def wait(self, last: Written, stop: threading.Event) -> bool:
        """Wait until the last chunk written fits the bandwidth; False if stopped meanwhile."""
        if last is None:
            return not stop.is_set()
        started, nbytes = last
        while not stop.is_set():
            bandwidth = self.bandwidth  # read each round: a change applies at once
            left = started + nbytes / bandwidth - time.monotonic() if bandwidth else 0.0
            if left <= 0:
                return True
            stop.wait(min(left, _POLL))
        return False


class _Stopped(Exception):
    """The transfer must stop (the reason is the message)."""


@dataclass(eq=False)
class Transfer:
    gid: str
    source: str  # the source location's name
    stop: threading.Event = field(default_factory=threading.Event)
    why: str = ""  # why it was asked to stop


class Transfers:
    """The transfers of one running emulator, at most one per snapshot."""

    def __init__(self, cluster: Cluster, faults: Faults, pacer: Pacer) -> None:
        self._cluster = cluster
        self._faults = faults
        self._pacer = pacer
        self._lock = threading.Lock()  # taken inside the cluster lock, never around it
        self._active: dict[str, Transfer] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self, gid: str, source: str) -> None:
        """Fetch snapshot `gid` from location `source` unless that already runs (or the
        emulator is stopping)."""
        with self._lock:
            current = self._active.get(gid)
            if self._closed or (current is not None and not current.stop.is_set()):
                return
            transfer = Transfer(gid, source)
            thread = threading.Thread(
                target=self._run, args=(transfer,), name=f"spcs-transfer-{gid}", daemon=True
            )
            self._active[gid] = transfer
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
        log.info("transfer of snapshot ~%s from location %s started", gid, source)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(g for g, t in self._active.items() if not t.stop.is_set())

    def is_running(self, gid: str) -> bool:
        return gid in self.running()

    def cancel(self, gid: str, why: str) -> None:
        """Stop the transfer of `gid`, if any, without waiting for it."""
        with self._lock:
            transfer = self._active.pop(gid, None)
        if transfer is not None:
            transfer.why = why
            transfer.stop.set()

    def close(self) -> None:
        """Stop every transfer and wait for its thread (the emulator is stopping)."""
        with self._lock:
            self._closed = True
            active, threads = list(self._active.values()), list(self._threads)
        for transfer in active:
            transfer.why = "this emulator is stopping"
            transfer.stop.set()
        for thread in threads:
            thread.join()

    def resume_all(self) -> None:
        """On start: continue every snapshot still recovering whose source is reachable."""
        with self._cluster.read() as state:
            pending = [
                (v.gid, v.ref, v.remote_location)
                for v in state.volumes.values()
                if v.recovering and v.remote_location
            ]
        for gid, ref, source in pending:
            loc = self._cluster.bridge.find(source)
            if loc is None or not loc.reachable:
                log.info(
                    "snapshot %s waits for location %s, which is not reachable; "
                    "SnapshotReconcile resumes it",
                    ref,
                    source,
                )
                continue
            self.start(gid, source)

    # The thread.

    def _run(self, transfer: Transfer) -> None:
        try:
            self._copy(transfer)
            self._finish(transfer)
        except _Stopped as stopped:
            level = logging.INFO if transfer.stop.is_set() else logging.WARNING
            log.log(
                level,
                "transfer of snapshot ~%s from location %s stopped: %s; the snapshot stays "
                "recovering (SnapshotReconcile resumes it)",
                transfer.gid,
                transfer.source,
                stopped,
            )
        except OSError as exc:
            log.warning(
                "transfer of snapshot ~%s from location %s stopped: a file operation failed "
                "(%s); SnapshotReconcile resumes it",
                transfer.gid,
                transfer.source,
                exc,
            )
        except Exception:
            log.exception("transfer of snapshot ~%s failed unexpectedly", transfer.gid)
        finally:
            with self._lock:
                if self._active.get(transfer.gid) is transfer:
                    del self._active[transfer.gid]

    def _copy(self, transfer: Transfer) -> None:
        cluster = self._cluster
        with cluster.read() as state:
            snap = state.volumes.get(transfer.gid)
            size = snap.size if snap is not None else 0
        if snap is None:
            raise _Stopped("the local snapshot is gone")
        dst = os.open(cluster.data_path(transfer.gid), os.O_RDWR)
        src: int | None = None
        try:
            last: Written = None
            for offset in range(0, size, CHUNK):
                if not self._pacer.wait(last, transfer.stop):
                    raise _Stopped(transfer.why)
                path = self._source_path(transfer, first=offset == 0)
                if src is None:
                    src = os.open(path, os.O_RDONLY)
                last = _copy_chunk(src, dst, offset, min(CHUNK, size - offset))
        finally:
            os.close(dst)
            if src is not None:
                os.close(src)

    def _source_path(self, transfer: Transfer, *, first: bool) -> str:
        """The source's data file, if the transfer may go on with the next chunk."""
        if transfer.stop.is_set():
            raise _Stopped(transfer.why)
        fault = self._faults.transfer_chunk(first=first)
        if fault is not None:
            raise _Stopped(fault)
        loc = self._cluster.bridge.find(transfer.source)
        if loc is None or loc.cluster is None:
            raise _Stopped(f"location {transfer.source} is not reachable")
        here = self._cluster.location_name
        with loc.cluster.read() as state:
            snap = state.volumes.get(transfer.gid)
            if snap is None or not snap.snapshot:
                raise _Stopped(f"the snapshot is gone from location {transfer.source}")
            if here not in snap.exports:
                raise _Stopped(f"it is no longer exported to location {here}")
        return loc.cluster.data_path(transfer.gid)

    def _finish(self, transfer: Transfer) -> None:
        cluster = self._cluster
        # under the cluster lock, so that a delete (which cancels under it) can not slip in
        # between the check and the commit
        with cluster.lock:
            snap = cluster.state.volumes.get(transfer.gid)
            if transfer.stop.is_set() or snap is None or not snap.recovering:
                raise _Stopped(transfer.why or "the local snapshot is gone")
            with cluster.change() as txn:
                txn.state.volumes[transfer.gid].recovering = False
        log.info("snapshot %s recovered from location %s", snap.ref, transfer.source)


def _copy_chunk(src: int, dst: int, offset: int, length: int) -> Written:
    """Copy one chunk unless it is all zeroes or already there; (when, bytes) if written."""
    data = os.pread(src, length, offset)
    if not data or data.count(0) == len(data) or os.pread(dst, len(data), offset) == data:
        return None
    started = time.monotonic()
    os.pwrite(dst, data, offset)
    return started, len(data)
