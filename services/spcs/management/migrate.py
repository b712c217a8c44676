"""Moving an install's state from its SQLite file into MariaDB/MySQL (`spcs migrate-db`).

Everything is copied through the store's own methods (`StateStore`, the journal), so the target
gets exactly what a management service would have written: pools with their StorPool connection
(token included) and used space, the hosts connected to each pool, the template cache, the
registered nodes and the finished operations of the journal. Operations still running belong to
the service that ran them and are not copied (a service marks them interrupted when it starts).

It refuses to run when the source is in use (a live `spcs management` holds the SQLite file's
lock, `sql_state.lock_sqlite`, or the source holds unexpired leases) and when the target holds
any pool, node or operation: it never merges into a live region's database. A run that fails
half-way leaves a partial target; empty it (drop and create the database again) and run it
again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from spcs.management.sql import shown
from spcs.management.sql_state import SqlState, lock_sqlite


@dataclass
class Moved:
    """What was copied (and the running operations that were left behind)."""

    pools: int = 0
    hosts: int = 0
    cache_entries: int = 0
    nodes: int = 0
    operations: int = 0
    running: int = 0

    def summary(self, source: str, target: str) -> str:
        return (
            f"moved {source} to {target}: {self.pools} pools, {self.hosts} connected hosts, "
            f"{self.cache_entries} template-cache entries, {self.nodes} nodes, "
            f"{self.operations} finished operations ({self.running} running ones not copied)"
        )


class Refused(Exception):
    """The move would be unsafe; the message says what to do."""


def migrate_database(source: Path, target: URL, password: str | None) -> str:
    """Copy the SQLite state at `source` into `target`; returns the summary line. Raises
    Refused, DatabaseError or SpcsError (the database did not answer)."""
    lock = lock_sqlite(source, exclusive=True)  # held to the end: no service starts on it
    try:
        src = SqlState(source)
        try:
            dst = SqlState(target, password)
            try:
                moved = _copy(src, dst, shown(target))
            finally:
                dst.close()
        finally:
            src.close()
    finally:
        os.close(lock)
    return moved.summary(str(source), shown(target))


def _check(src: SqlState, dst: SqlState, target: str) -> None:
    held = src.leases()
    if held:
        raise Refused(
            f"{src.name} holds {len(held)} unexpired leases (a management service is using "
            "it); stop every spcs management on it and run spcs migrate-db again"
        )
    if dst.pools() or dst.nodes() or next(iter(dst.journal.load()), None) is not None:
        raise Refused(
            f"{target} already holds pools, nodes or operations; spcs migrate-db never "
            "merges into a database in use: give it an empty database"
        )


def _copy(src: SqlState, dst: SqlState, target: str) -> Moved:
    _check(src, dst, target)
    moved = Moved()
    nodes = src.nodes()
    clients = {node.host_id: node.client_id for node in nodes}
    for pool in src.pools():
        dst.add_pool(pool)
        dst.set_pool_used(pool.uuid, pool.used_bytes)
        for host_id in pool.hosts:
            # the StorPool client id a host connected with is its node's (HostEvents)
            dst.connect_host(pool.uuid, host_id, clients.get(host_id, 0))
            moved.hosts += 1
        for entry in src.cache_entries(pool.uuid):
            dst.put_cache_entry(pool.uuid, entry)
            moved.cache_entries += 1
        moved.pools += 1
    for node in nodes:
        dst.register_node(node)
        dst.set_client_running(node.host_id, node.client_running)
        moved.nodes += 1
    for name, fingerprint, operation in src.journal.load():  # oldest first, as they were
        if not operation.done:
            moved.running += 1
            continue
        dst.journal.save(name, fingerprint, operation)
        moved.operations += 1
    return moved
