"""Removing the temporary StorPool objects that interrupted jobs left behind.

Jobs name their temporaries deterministically (download volumes, point-in-time snapshots) and
tag them with their operation id (`names.OPERATION_TAG`); a volume a copy creates and fills
carries the copy's operation id (`names.FILLING_TAG`) until it is complete. The sweep removes
such an object only when its operation is not running (`is_running`), so it never touches the
work of a job that is still going, here or — once operations are shared — on another replica.
Temporaries without an operation tag (made by an older spcs) count as left over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from spcs.common import errors
from spcs.management.pools import Pools
from spcs.storpool import names
from spcs.storpool.records import StorPoolObject

log = logging.getLogger(__name__)

TEMPORARY_PREFIXES = ("cs-tmpldl-", "cs-tmpsnap-", "cs-tmpvol-")


def sweep(pools: Pools, is_running: Callable[[str], bool]) -> int:
    """Delete the temporary objects and the half-filled volumes of jobs that no longer run, in
    every pool's StorPool; returns how many."""
    removed = 0
    seen: set[str] = set()
    for pool in pools.all():
        if pool.conn.endpoint in seen:
            continue
        seen.add(pool.conn.endpoint)
        api = pools.api(pool)
        try:
            for volume in api.volumes():
                filling = volume.tags.get(names.FILLING_TAG, "")
                if (filling and not is_running(filling)) or _left_over(volume, is_running):
                    removed += int(api.volume_delete(volume.ref))
                    log.warning("removed %s left by an interrupted job", volume.name)
            for snapshot in api.snapshots():
                if not snapshot.deleted and _left_over(snapshot, is_running):
                    removed += int(api.snapshot_delete(snapshot.ref))
                    log.warning("removed %s left by an interrupted job", snapshot.name)
        except errors.SpcsError as error:
            log.warning(
                "could not sweep temporary objects at %s: %s", pool.conn.endpoint, error.message
            )
    return removed


def _left_over(obj: StorPoolObject, is_running: Callable[[str], bool]) -> bool:
    """A temporary whose operation no longer runs (or that names none)."""
    if not obj.name.startswith(TEMPORARY_PREFIXES):
        return False
    operation = obj.tags.get(names.OPERATION_TAG, "")
    return not (operation and is_running(operation))


def sweep_in_background(pools: Pools, is_running: Callable[[str], bool]) -> threading.Thread:
    thread = threading.Thread(target=sweep, args=(pools, is_running), name="recovery", daemon=True)
    thread.start()
    return thread
