"""Pool operations that reach into StorPool: deletion (refused while the pool holds data) and
capacity statistics."""

from __future__ import annotations

import logging

from spcs.common import errors, holds
from spcs.common.locks import Locks
from spcs.management.pools import Pools
from spcs.management.templates import TemplateCache
from spcs.storpool import names

log = logging.getLogger(__name__)

# Objects spcs keeps for itself; they do not count as the pool's data.
OWN_PREFIXES = ("cs-tmpl-", "cs-tmpldl-", "cs-tmpsnap-", "cs-tmpvol-")


class PoolLifecycle:
    def __init__(self, pools: Pools, templates: TemplateCache, locks: Locks) -> None:
        self.pools = pools
        self.templates = templates
        self.locks = locks

    def delete(self, uuid: str) -> tuple[bool, int]:
        """(deleted, template snapshots removed). A missing pool is (False, 0)."""
        pool = self.pools.find(uuid)
        if pool is None:
            return False, 0
        with self.locks.hold("DeletePool", pool=holds.pool(uuid)):
            api = self.pools.api(pool)
            volumes = [
                v
                for v in api.volumes()
                if v.template == pool.template and not v.name.startswith(OWN_PREFIXES)
            ]
            snapshots = [
                s
                for s in api.snapshots()
                if s.template == pool.template
                and not s.deleted
                and not s.name.startswith(OWN_PREFIXES)
                and s.tags.get("cs") != names.CS_TEMPLATE
            ]
            if volumes or snapshots:
                shown = ", ".join(o.name for o in [*volumes, *snapshots][:5])
                raise errors.FailedPrecondition(
                    f"pool {pool.name} still holds {len(volumes)} volume(s) and "
                    f"{len(snapshots)} snapshot(s) in StorPool template {pool.template} "
                    f"({shown}{', ...' if len(volumes) + len(snapshots) > 5 else ''}); delete "
                    "them in CloudStack first"
                )
            removed = self.templates.drop_all(pool)
            self.pools.remove(uuid)
        log.info(
            "pool %s (%s) deleted; %d cached template snapshot(s) removed", pool.name, uuid, removed
        )
        return True, removed

    def storage_stats(self, uuid: str) -> tuple[int, int]:
        """(capacity, used) from StorPool's template status; used is kept on the pool."""
        pool = self.pools.get(uuid)
        status = self.pools.api(pool).template_status(pool.template)
        used = max(0, status.capacity - status.free)
        self.pools.set_used(uuid, used)
        return status.capacity, used
