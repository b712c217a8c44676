"""The management service's state: what neither CloudStack nor StorPool can tell us, and the
interface every store of it implements.

StorPool (names and tags) is the source of truth for volumes and snapshots. The state store
keeps only pools (with their StorPool connection, token included), which hosts are connected to
which pool, template-cache entries, registered nodes and the operations (`OperationStore`,
shared by every replica), so a restart loses nothing. `spcs.management.sql_state.SqlState`
implements it on SQLite (the embedded default) and on MariaDB/MySQL (shared by several
replicas); the domain (`Pools`,
`NodeDirectory`, `TemplateCache`, `HostEvents`) sees only `StateStore`. `LeaseStore` keeps the
holds of `spcs.common.holds` for every replica of one database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from google.longrunning import operations_pb2

from spcs.common import errors, validate
from spcs.common.holds import Hold, Mode
from spcs.common.operations import Journal
from spcs.management.pool_url import Connection
from spcs.storpool import names
from spcs.v1 import lifecycle_pb2

# A node announces itself every REFRESH seconds; after STALE without news it is unhealthy.
REFRESH_SECONDS = 30
STALE_SECONDS = 3 * REFRESH_SECONDS
DEFAULT_MAX_COPIES = 2  # the node's own default, for nodes that do not announce theirs

# Pool details that keep snapshots on primary only (no backup to secondary).
BYPASS_DETAILS = {"snapshot.backup.to.secondary": "false", "sp.bypass.secondary.storage": "true"}
# The Java plugin's pool setting: seconds a volume's backup snapshot outlives the volume
DELETE_AFTER_DETAIL = "storpool.delete.after.interval"
MAX_DELETE_AFTER = 10 * 365 * 86400  # StorPool takes a date; ten years is "keep"


def delete_after_seconds(details: dict[str, str]) -> int:
    """The pool's delay-delete interval (0: off). INVALID_ARGUMENT for a value that is not
    whole seconds from 0 to ten years, naming the detail."""
    text = details.get(DELETE_AFTER_DETAIL, "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) > MAX_DELETE_AFTER:
        raise errors.InvalidArgument(
            f"pool detail {DELETE_AFTER_DETAIL} {validate.shown(text)} is not a number of "
            f"seconds from 0 to {MAX_DELETE_AFTER}; 0 or no detail turns the backup off"
        )
    return int(text)


@dataclass
class PoolRecord:
    uuid: str
    name: str
    zone_id: str
    scope: lifecycle_pb2.PoolScope.ValueType
    state: lifecycle_pb2.PoolState.ValueType
    conn: Connection
    capacity_bytes: int
    capacity_iops: int
    used_bytes: int
    tags: list[str]
    details: dict[str, str]
    hypervisor: str
    cluster_id: str
    pod_id: str
    fingerprint: str
    hosts: list[str] = field(default_factory=list)

    @property
    def template(self) -> str:
        return self.conn.template

    @property
    def delete_after(self) -> int:
        return delete_after_seconds(self.details)

    @property
    def bypass_secondary(self) -> bool:
        return any(self.details.get(k, "").lower() == v for k, v in BYPASS_DETAILS.items())

    def message(self) -> lifecycle_pb2.Pool:
        return lifecycle_pb2.Pool(
            uuid=self.uuid,
            name=self.name,
            zone_id=self.zone_id,
            scope=self.scope,
            state=self.state,
            sp_template=self.template,
            api_endpoint=self.conn.endpoint,
            url_form=self.conn.form,
            capacity_bytes=self.capacity_bytes,
            capacity_iops=self.capacity_iops,
            used_bytes=self.used_bytes,
            tags=self.tags,
            details=self.details,
            connected_host_ids=self.hosts,
            path=names.BYID_DIR + "/",
        )


@dataclass(frozen=True)
class PoolChanges:
    """What UpdatePool may change."""

    capacity_bytes: int
    capacity_iops: int
    tags: list[str]
    details: dict[str, str]
    conn: Connection


@dataclass(frozen=True)
class CacheEntry:
    """A template cached on a pool as a StorPool snapshot."""

    template_uuid: str
    snapshot_name: str
    global_id: str
    size: int = 0


@dataclass(frozen=True)
class NodeRecord:
    host_id: str
    address: str
    client_id: int
    cluster_id: str
    version: str
    last_seen: float
    client_running: bool
    max_copies: int = DEFAULT_MAX_COPIES

    @property
    def healthy(self) -> bool:
        return time.time() - self.last_seen < STALE_SECONDS


class StateStore(Protocol):
    """Every method is one transaction; readers see every write that returned before."""

    @property
    def journal(self) -> Journal: ...

    @property
    def operations(self) -> OperationStore: ...

    # ---- pools ------------------------------------------------------------------------------
    def pool(self, uuid: str) -> PoolRecord | None: ...
    def pools(self) -> list[PoolRecord]: ...
    def add_pool(self, pool: PoolRecord) -> None: ...
    def set_pool_state(self, uuid: str, state: lifecycle_pb2.PoolState.ValueType) -> None: ...
    def update_pool(self, uuid: str, changes: PoolChanges) -> None: ...
    def set_pool_used(self, uuid: str, used: int) -> None: ...
    def remove_pool(self, uuid: str) -> None: ...

    # ---- hosts connected to pools -------------------------------------------------------
    def connect_host(self, pool_uuid: str, host_id: str, client_id: int) -> None: ...
    def disconnect_host(self, host_id: str, pool_uuids: Iterable[str] | None = None) -> int: ...
    def pools_of_host(self, host_id: str) -> list[str]: ...

    # ---- the template cache ----------------------------------------------------------------
    def put_cache_entry(self, pool_uuid: str, entry: CacheEntry) -> None: ...
    def drop_cache_entry(self, pool_uuid: str, template_uuid: str) -> None: ...
    def cache_entries(self, pool_uuid: str) -> list[CacheEntry]: ...

    # ---- nodes ------------------------------------------------------------------------------
    def register_node(self, node: NodeRecord) -> None: ...
    def forget_node(self, host_id: str) -> bool: ...
    def set_client_running(self, host_id: str, running: bool) -> None: ...
    def node(self, host_id: str) -> NodeRecord | None: ...
    def nodes(self) -> list[NodeRecord]: ...

    # ---- the store itself ---------------------------------------------------------------
    def ping(self) -> None:
        """Raise if the store cannot answer (for the readiness probe)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class LeaseRecord:
    """One key held under a lease (what `LeaseStore.leases` lists)."""

    lease_id: int
    key: str
    mode: Mode
    owner: str  # the replica that took it
    label: str  # the operation, as conflicts name it
    request_id: str
    expires: float  # Unix seconds, by the database's clock


class LeaseStore(Protocol):
    """Holds as leases in a database, shared by every replica on it. A lease is what one
    operation holds (several keys, each shared or exclusive) until it is released or, when its
    owner stops renewing it, until it expires; expired leases hold nothing."""

    def take_leases(self, holds: Sequence[Hold], *, owner: str, label: str, ttl: float) -> int:
        """Take every hold for `ttl` seconds, all or none, and return the lease id; raise
        `errors.Conflict` (the message `spcs.common.locks` gives, naming the holder's label
        and replica) when another lease holds a key in a mode that conflicts."""
        ...

    def release_lease(self, lease_id: int) -> bool:
        """Give the lease up; False if it was not held (released, or expired and removed)."""
        ...

    def renew_leases(self, owner: str, ttl: float) -> int:
        """Extend every unexpired lease of `owner` to `ttl` seconds from now; returns how
        many were extended (one that expired is lost: another replica may hold it now)."""
        ...

    def leases(self) -> list[LeaseRecord]:
        """What is held now, by key then lease id (for tests and operators)."""
        ...


@dataclass(frozen=True)
class OperationRow:
    """One operation as the region knows it (a row of `OperationStore`)."""

    name: str
    fingerprint: str
    operation: operations_pb2.Operation
    owner: str  # the replica that runs (or last ran) it
    attempt: int  # bumped by each claim: a replica writes the row only under its own attempt
    heartbeat: float  # when the owner last wrote it, by the database's clock
    cancel: bool  # a cancel was asked for (on any replica)


@dataclass(frozen=True)
class Claim:
    """What `OperationStore.claim` decided: `row` is the operation now; `claimed` says this
    caller runs it (a new row, or a new attempt replacing `previous`)."""

    claimed: bool
    row: OperationRow
    previous: OperationRow | None = None


class OperationStore(Protocol):
    """Operations shared by every replica of a region: one row per operation id, which one
    replica at a time owns and keeps beating while it runs."""

    def claim(
        self,
        name: str,
        fingerprint: str,
        operation: operations_pb2.Operation,
        owner: str,
        retry: Callable[[OperationRow], bool],
    ) -> Claim:
        """Insert the operation as `owner`'s, or when a row exists and `retry(row)` says it
        may start again (a failed attempt with the same arguments), take it over with the next
        attempt; otherwise leave it. One replica wins a race, by the primary key."""
        ...

    def unclaim(self, claim: Claim) -> None:
        """Undo a claim whose job could not start (its holds conflicted)."""
        ...

    def save(self, row_name: str, attempt: int, owner: str, op: operations_pb2.Operation) -> bool:
        """Write the owner's state of its attempt; False when the row is no longer its own."""
        ...

    def beat(
        self, owner: str, running: Mapping[str, tuple[int, operations_pb2.Operation]]
    ) -> tuple[set[str], set[str]]:
        """Write the owner's running operations with a fresh heartbeat, never over one that
        has finished; (the names no longer its own or finished, the names a cancel was asked
        for)."""
        ...

    def row(self, name: str) -> OperationRow | None: ...

    def page(self, done: bool | None, offset: int, size: int) -> list[OperationRow]:
        """Operations oldest first (`done` filters), `size` from `offset`."""
        ...

    def request_cancel(self, name: str) -> OperationRow | None:
        """Mark a running operation for cancelling; None when there is no such operation."""
        ...

    def delete(self, name: str) -> OperationRow | None:
        """Remove a finished operation; the row as it was (a running one is not removed)."""
        ...

    def take_over(
        self,
        stale_seconds: float | None,
        interrupt: Callable[[OperationRow], operations_pb2.Operation],
        owner: str,
    ) -> list[OperationRow]:
        """End the running operations whose owner has not beaten for `stale_seconds` (None:
        every running one) with `interrupt(row)`, recorded as `owner`'s; the rows as they were."""
        ...

    def prune(self, keep: int) -> int:
        """Remove the oldest finished operations beyond the newest `keep`."""
        ...
