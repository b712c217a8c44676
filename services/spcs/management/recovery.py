"""Removing the temporary StorPool objects that interrupted jobs left behind.

Jobs name their temporaries deterministically (download volumes, point-in-time snapshots) and
tag them with their operation id (`names.OPERATION_TAG`); a volume a copy creates and fills
carries the copy's operation id (`names.FILLING_TAG`) until it is complete, and so does a
snapshot arriving from another zone. The sweep removes
such an object only when its operation is not running (`is_running`: running on any replica,
as the shared operations say), so it never touches the work of a job that is still going, here
or on another replica. Temporaries without an operation tag (made by an older spcs) count as
left over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial

from spcs.common import errors
from spcs.management import objects
from spcs.management.nodecalls import NodeCalls
from spcs.management.pools import Pools
from spcs.management.state import OperationRow
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolObject
from spcs.v1 import types_pb2

log = logging.getLogger(__name__)

TEMPORARY_PREFIXES = ("cs-tmpldl-", "cs-tmpsnap-", "cs-tmpvol-")
SWEEP_SECONDS = 600.0


def sweep(pools: Pools, is_running: Callable[[str], bool]) -> int:
    """Delete the temporary objects and the half-filled volumes of jobs that no longer run, in
    every pool's StorPool; returns how many."""
    removed = 0
    seen: set[str] = set()
    for pool in pools.all():
        if pool.conn.endpoint in seen:
            continue
        seen.add(pool.conn.endpoint)
        try:
            removed += _sweep(pools.api(pool), is_running)
        except errors.SpcsError as error:
            log.warning(
                "could not sweep temporary objects at %s: %s", pool.conn.endpoint, error.message
            )
    return removed


def _sweep(api: StorPoolClient, is_running: Callable[[str], bool]) -> int:
    # each object is checked just before it is removed: an operation may have started again
    removed = 0
    for volume in api.volumes():
        filling = volume.tags.get(names.FILLING_TAG, "")
        if (filling and not is_running(filling)) or _left_over(volume, is_running):
            removed += _remove(volume.name, partial(api.volume_delete, volume.ref))
    for snapshot in api.snapshots():
        if snapshot.deleted:
            continue
        # a snapshot still arriving from another zone (CopySnapshot) whose copy died
        filling = snapshot.tags.get(names.FILLING_TAG, "")
        if filling and not is_running(filling):
            removed += _remove(snapshot.name, partial(api.snapshot_delete, snapshot.ref))
        elif _left_over(snapshot, is_running):
            remove = partial(objects.delete_temporary, api, snapshot.global_id)
            removed += _remove(snapshot.name, remove)
    return removed


def _remove(name: str, remove: Callable[[], bool]) -> int:
    try:
        gone = remove()
    except errors.NotFound:  # a retry of its operation removed it first
        return 0
    except errors.SpcsError as error:  # e.g. still attached: the next sweep
        log.warning("could not remove %s: %s", name, error.message)
        return 0
    if gone:
        log.warning("removed %s left by an interrupted job", name)
    return int(gone)


def _left_over(obj: StorPoolObject, is_running: Callable[[str], bool]) -> bool:
    """A temporary whose operation no longer runs (or that names none)."""
    if not obj.name.startswith(TEMPORARY_PREFIXES):
        return False
    operation = obj.tags.get(names.OPERATION_TAG, "")
    return not (operation and is_running(operation))


def stop_node_jobs(calls: NodeCalls, rows: Iterable[OperationRow]) -> None:
    """Cancel what the operations of a dead replica still run on nodes (the host each was
    last on), so a retry does not meet them; in the background, since a node may be slow."""

    def stop() -> None:
        for row in rows:
            meta = types_pb2.OperationMetadata()
            row.operation.metadata.Unpack(meta)
            if meta.host_id:
                calls.cancel_jobs_of(meta.host_id, row.name.removeprefix("operations/"))

    threading.Thread(target=stop, name="stop-node-jobs", daemon=True).start()


class Sweeper:
    """Sweeps one at a time in the background: at start, whenever `request` is called (a dead
    replica's operations were taken over) and every `every` seconds, for what an earlier sweep
    could not remove (a StorPool that did not answer)."""

    def __init__(
        self, pools: Pools, is_running: Callable[[str], bool], every: float = SWEEP_SECONDS
    ) -> None:
        self._pools = pools
        self._is_running = is_running
        self._every = every
        self._wanted = threading.Event()
        self._stopped = False
        self.swept = 0  # sweeps done, for tests
        self._thread = threading.Thread(target=self._loop, name="recovery", daemon=True)

    def start(self) -> None:
        self._wanted.set()
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopped = True
        self._wanted.set()

    def _loop(self) -> None:
        while True:
            self._wanted.wait(self._every)
            self._wanted.clear()
            if self._stopped:
                return
            try:
                sweep(self._pools, self._is_running)
            except Exception as error:  # the state database did not answer: next time
                log.warning("could not sweep temporary objects: %s", error)
            self.swept += 1
