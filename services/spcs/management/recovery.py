"""After a restart: remove the temporary StorPool objects that interrupted jobs left behind.

Jobs name their temporaries deterministically (download volumes, point-in-time snapshots), and
a volume a copy creates and fills carries the copy's operation id in a tag until it is complete,
so a job that died with the process left them recognisable. The operations journal already
marks those jobs FAILED ("interrupted"); this sweep makes sure nothing they created lingers. It
assumes one active management service per StorPool cluster (a second replica's running jobs
would look interrupted too).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from spcs.common import errors
from spcs.management.pools import Pools
from spcs.storpool import names

log = logging.getLogger(__name__)

TEMPORARY_PREFIXES = ("cs-tmpldl-", "cs-tmpsnap-", "cs-tmpvol-")


def sweep(pools: Pools, is_running: Callable[[str], bool]) -> int:
    """Delete every temporary object in every pool's StorPool, and the half-filled volumes of
    copies that no longer run; returns how many."""
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
                if volume.name.startswith(TEMPORARY_PREFIXES) or (
                    filling and not is_running(filling)
                ):
                    removed += int(api.volume_delete(volume.ref))
                    log.warning("removed %s left by an interrupted job", volume.name)
            for snapshot in api.snapshots():
                if snapshot.name.startswith(TEMPORARY_PREFIXES) and not snapshot.deleted:
                    removed += int(api.snapshot_delete(snapshot.ref))
                    log.warning("removed %s left by an interrupted job", snapshot.name)
        except errors.SpcsError as error:
            log.warning(
                "could not sweep temporary objects at %s: %s", pool.conn.endpoint, error.message
            )
    return removed


def sweep_in_background(pools: Pools, is_running: Callable[[str], bool]) -> threading.Thread:
    thread = threading.Thread(target=sweep, args=(pools, is_running), name="recovery", daemon=True)
    thread.start()
    return thread
