"""The state store on SQL: SQLite (the embedded default, `--db`) or MariaDB/MySQL (a database
several management replicas share), one implementation for both (SQLAlchemy Core; the tables
in `schema.py`, their migrations in `migrations/`).

Nothing is cached in the process: every read goes to the database (a pool with its hosts is
one indexed query), so a change made through one replica is seen by the next call on any other.
Every method is one transaction. Leases (`state.LeaseStore`): see `take_leases`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

from google.longrunning import operations_pb2
from sqlalchemy import (
    Connection,
    Row,
    Select,
    Table,
    delete,
    exc,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import URL, make_url

from spcs.common import unconfirmed
from spcs.common.errors import Conflict, SpcsError
from spcs.common.holds import EXCLUSIVE, Hold, Mode
from spcs.common.locks import Lease, conflict_message, merged
from spcs.common.logs import REQUEST_ID
from spcs.common.sqlite import DatabaseError
from spcs.management import hot_sql
from spcs.management.pool_url import Connection as PoolConnection
from spcs.management.schema import (
    lease_holds,
    lease_keys,
    nodes,
    operations,
    pool_hosts,
    template_cache,
)
from spcs.management.schema import pools as pools_table
from spcs.management.sql import Database, clock, is_sqlite, migrate
from spcs.management.sql_operations import SqlOperations
from spcs.management.state import (
    CacheEntry,
    LeaseRecord,
    NodeRecord,
    PoolChanges,
    PoolRecord,
)
from spcs.v1 import lifecycle_pb2

T = TypeVar("T")

log = logging.getLogger(__name__)

# Expired leases and lock rows of keys nobody took for this long are removed at most this often.
SWEEP_SECONDS = 60.0
KEY_ROW_SECONDS = 3600.0


def _upsert(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, object]], update: Iterable[str]
) -> None:
    """Insert `rows`, or where the primary key exists, set the `update` columns."""
    columns = list(update)
    if conn.dialect.name == "sqlite":
        lite = sqlite.insert(table).values(list(rows))
        conn.execute(
            lite.on_conflict_do_update(
                index_elements=list(table.primary_key.columns),
                set_={name: lite.excluded[name] for name in columns},
            )
        )
    else:
        my = mysql.insert(table).values(list(rows))
        conn.execute(my.on_duplicate_key_update({name: my.inserted[name] for name in columns}))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SqlJournal:
    """The operations journal (`spcs.common.operations.Journal`) in the `operations` table;
    each save records this replica as the operation's owner and the time as its heartbeat."""

    def __init__(self, db: Database, owner: str = "") -> None:
        self._db = db
        self.owner = owner

    def save(self, name: str, fingerprint: str, operation: operations_pb2.Operation) -> None:
        now = time.time()
        row = {
            "name": name,
            "fingerprint": fingerprint,
            "done": int(operation.done),
            "data": operation.SerializeToString(),
            "updated": now,
            "owner": self.owner,
            "heartbeat": now,
            "created": now,
        }
        changed = [name for name in row if name not in ("name", "created")]
        self._db.write(lambda c: _upsert(c, operations, [row], changed))

    def load(self) -> Iterator[tuple[str, str, operations_pb2.Operation]]:
        query = select(operations.c.name, operations.c.fingerprint, operations.c.data)
        rows = self._db.read(lambda c: c.execute(query.order_by(operations.c.updated)).all())
        for name, fingerprint, data in rows:
            yield name, fingerprint, operations_pb2.Operation.FromString(data)

    def forget(self, name: str) -> None:
        self._db.write(lambda c: c.execute(delete(operations).where(operations.c.name == name)))


class SqlState:
    """`StateStore` and `LeaseStore` on the database at `url` (`sqlite:///PATH` or a Path,
    `mysql+pymysql://USER@HOST/DB`); `password` is set into the URL (it is never shown).
    The schema is migrated when it opens; `replica` is what the journal records as owner."""

    def __init__(
        self, url: str | URL | Path, password: str | None = None, *, replica: str = ""
    ) -> None:
        if isinstance(url, Path):
            parsed = URL.create("sqlite", database=str(url))
        else:
            parsed = make_url(url) if isinstance(url, str) else url
        if password is not None:
            parsed = parsed.set(password=password)
        if is_sqlite(parsed) and parsed.database:
            _private_file(Path(parsed.database))
        self._db = Database(parsed)
        self.name = self._db.name
        try:
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise
        log.info("state database: %s", self.name)
        self.journal = SqlJournal(self._db, replica)
        self.operations = SqlOperations(self._db)
        # Pools are read on every call and change rarely. On SQLite one process owns the file,
        # so its records are kept in memory and dropped on each write; on a shared database a
        # replica keeps the records with their versions and confirms the version on every call
        # (with the call's lease, `spcs.common.unconfirmed`, or one small query), so a change
        # by one replica is seen by the next call on any other.
        self._cache: dict[str, PoolRecord] | None = {} if is_sqlite(parsed) else None
        self._versioned: dict[str, tuple[int, PoolRecord]] = {}
        self._cache_lock = threading.Lock()
        self._generation = 0
        self._swept = 0.0

    # ---- pools ------------------------------------------------------------------------------

    def _pools_query(self) -> Select[Any]:
        joined = pools_table.outerjoin(pool_hosts)
        return select(pools_table, pool_hosts.c.host_id).select_from(joined)

    def pool(self, uuid: str) -> PoolRecord | None:
        if self._cache is not None:
            with self._cache_lock:
                cached, generation = self._cache.get(uuid), self._generation
            if cached is not None:
                return cached
        else:
            current = self._current(uuid)
            if current is not None:
                return current
        rows = self._db.read(lambda c: hot_sql.read_pool(c, uuid))
        record = _pool(rows) if rows else None
        with self._cache_lock:
            if record is None:
                self._versioned.pop(uuid, None)
            elif self._cache is None:
                version = int(rows[0].version)
                self._versioned[uuid] = (version, record)
                scope = unconfirmed.current()
                if scope is not None:  # read just now: as good as confirmed
                    scope.confirmed_now({uuid: version})
            elif generation == self._generation:  # no write raced this read
                self._cache[uuid] = record
        return record

    def _current(self, uuid: str) -> PoolRecord | None:
        """This replica's copy of the pool if the database still has its version; in an RPC
        that holds what it changes, the copy unconfirmed (its lease confirms it)."""
        with self._cache_lock:
            kept = self._versioned.get(uuid)
        if kept is None:
            return None
        scope = unconfirmed.current()
        if scope is not None:
            scope.note(uuid, kept[0], self._confirm_pools)
            return kept[1]
        version = self._db.read(lambda c: hot_sql.pool_version(c, uuid))
        if version == kept[0]:
            return kept[1]
        self._forget_pools([uuid])
        return None

    def _confirm_pools(self, versions: dict[str, int]) -> None:
        """Raise Stale unless every pool still has the version it had when it was used."""
        found = self._db.read(lambda c: hot_sql.pool_versions(c, sorted(versions)))
        try:
            _check_versions(versions, found)
        except unconfirmed.Stale:
            self._forget_pools(versions)
            raise

    def _forget_pools(self, uuids: Iterable[str]) -> None:
        with self._cache_lock:
            for uuid in uuids:
                self._versioned.pop(uuid, None)

    def _pool_write(self, work: Callable[[Connection], T]) -> T:
        """A write to pools or their hosts: the cached records are dropped (all of them:
        writes are rare, and a host's disconnect changes pools not named here). What the RPC
        used unconfirmed is confirmed first: nothing is written on a stale record."""
        scope = None if self._cache is not None else unconfirmed.current()
        if scope is not None:
            scope.finish()
        try:
            return self._db.write(work)
        finally:
            with self._cache_lock:
                if self._cache is not None:
                    self._generation += 1
                    self._cache.clear()
                self._versioned.clear()

    def pools(self) -> list[PoolRecord]:
        order = (pools_table.c.name, pools_table.c.uuid, pool_hosts.c.host_id)
        rows = self._db.read(lambda c: c.execute(self._pools_query().order_by(*order)).all())
        return [_pool(list(group)) for _, group in groupby(rows, key=lambda row: row.uuid)]

    def add_pool(self, pool: PoolRecord) -> None:
        row = {
            "uuid": pool.uuid,
            "name": pool.name,
            "zone_id": pool.zone_id,
            "scope": pool.scope,
            "state": pool.state,
            **_connection_columns(pool.conn),
            "sp_template": pool.conn.template,
            "capacity_bytes": pool.capacity_bytes,
            "capacity_iops": pool.capacity_iops,
            "tags": json.dumps(pool.tags),
            "details": json.dumps(pool.details),
            "hypervisor": pool.hypervisor,
            "cluster_id": pool.cluster_id,
            "pod_id": pool.pod_id,
            "fingerprint": pool.fingerprint,
            "created": time.time(),
        }
        self._pool_write(lambda c: c.execute(insert(pools_table).values(row)))

    def _update_pool(self, uuid: str, **values: object) -> None:
        bumped = {**values, "version": pools_table.c.version + 1}
        change = update(pools_table).where(pools_table.c.uuid == uuid).values(bumped)
        self._pool_write(lambda c: c.execute(change))

    def set_pool_state(self, uuid: str, state: lifecycle_pb2.PoolState.ValueType) -> None:
        self._update_pool(uuid, state=state)

    def update_pool(self, uuid: str, changes: PoolChanges) -> None:
        self._update_pool(
            uuid,
            capacity_bytes=changes.capacity_bytes,
            capacity_iops=changes.capacity_iops,
            tags=json.dumps(changes.tags),
            details=json.dumps(changes.details),
            **_connection_columns(changes.conn),
        )

    def set_pool_used(self, uuid: str, used: int) -> None:
        self._update_pool(uuid, used_bytes=used)

    def remove_pool(self, uuid: str) -> None:
        # its hosts and cache entries go with it (ON DELETE CASCADE)
        self._pool_write(lambda c: c.execute(delete(pools_table).where(pools_table.c.uuid == uuid)))

    # ---- hosts connected to pools -------------------------------------------------------

    def connect_host(self, pool_uuid: str, host_id: str, client_id: int) -> None:
        row = {
            "pool_uuid": pool_uuid,
            "host_id": host_id,
            "client_id": client_id,
            "connected": time.time(),
        }
        bump = _bump(pools_table.c.uuid == pool_uuid)

        def connect(conn: Connection) -> None:
            _upsert(conn, pool_hosts, [row], ("client_id", "connected"))
            conn.execute(bump)

        self._pool_write(connect)

    def disconnect_host(self, host_id: str, pool_uuids: Iterable[str] | None = None) -> int:
        which = pool_hosts.c.host_id == host_id
        if pool_uuids is not None:
            which = which & pool_hosts.c.pool_uuid.in_(list(pool_uuids))
        bump = _bump(pools_table.c.uuid.in_(select(pool_hosts.c.pool_uuid).where(which)))

        def disconnect(conn: Connection) -> int:
            conn.execute(bump)
            return int(conn.execute(delete(pool_hosts).where(which)).rowcount)

        return self._pool_write(disconnect)

    def pools_of_host(self, host_id: str) -> list[str]:
        query = (
            select(pool_hosts.c.pool_uuid)
            .where(pool_hosts.c.host_id == host_id)
            .order_by(pool_hosts.c.pool_uuid)
        )
        return list(self._db.read(lambda c: c.execute(query).scalars().all()))

    # ---- the template cache ----------------------------------------------------------------

    def put_cache_entry(self, pool_uuid: str, entry: CacheEntry) -> None:
        row = {
            "pool_uuid": pool_uuid,
            "template_uuid": entry.template_uuid,
            "snapshot_name": entry.snapshot_name,
            "global_id": entry.global_id,
            "size": entry.size,
            "created": time.time(),
        }
        changed = ("snapshot_name", "global_id", "size")
        self._db.write(lambda c: _upsert(c, template_cache, [row], changed))

    def drop_cache_entry(self, pool_uuid: str, template_uuid: str) -> None:
        dropped = delete(template_cache).where(
            template_cache.c.pool_uuid == pool_uuid,
            template_cache.c.template_uuid == template_uuid,
        )
        self._db.write(lambda c: c.execute(dropped))

    def cache_entries(self, pool_uuid: str) -> list[CacheEntry]:
        query = (
            select(template_cache)
            .where(template_cache.c.pool_uuid == pool_uuid)
            .order_by(template_cache.c.template_uuid)
        )
        rows = self._db.read(lambda c: c.execute(query).all())
        return [CacheEntry(r.template_uuid, r.snapshot_name, r.global_id, r.size) for r in rows]

    # ---- nodes ------------------------------------------------------------------------------

    def register_node(self, node: NodeRecord) -> None:
        row = {
            "host_id": node.host_id,
            "address": node.address,
            "client_id": node.client_id,
            "cluster_id": node.cluster_id,
            "version": node.version,
            "last_seen": node.last_seen,
            "max_copies": node.max_copies,
        }
        # client_running is the host's own state (set_client_running), kept on re-registration
        changed = [name for name in row if name != "host_id"]
        self._db.write(lambda c: _upsert(c, nodes, [row], changed))

    def forget_node(self, host_id: str) -> bool:
        forgotten = delete(nodes).where(nodes.c.host_id == host_id)
        return bool(self._db.write(lambda c: c.execute(forgotten).rowcount))

    def set_client_running(self, host_id: str, running: bool) -> None:
        change = update(nodes).where(nodes.c.host_id == host_id).values(client_running=running)
        self._db.write(lambda c: c.execute(change))

    def node(self, host_id: str) -> NodeRecord | None:
        query = select(nodes).where(nodes.c.host_id == host_id)
        row = self._db.read(lambda c: c.execute(query).first())
        return _node(row) if row is not None else None

    def nodes(self) -> list[NodeRecord]:
        query = select(nodes).order_by(nodes.c.host_id)
        return [_node(row) for row in self._db.read(lambda c: c.execute(query).all())]

    # ---- leases -----------------------------------------------------------------------------

    def take_leases(self, holds: Sequence[Hold], *, owner: str, label: str, ttl: float) -> int:
        """All or none, in one transaction: lock the row of each key in `lease_keys` (sorted,
        so two takers never wait on each other in a cycle; on SQLite the transaction is
        BEGIN IMMEDIATE, which serializes every writer), read the leases on those keys (their
        rows locked too, so a renewal cannot revive one this take finds expired), refuse on a
        conflict, drop the expired ones, insert the new lease's holds. A lease with no holds
        is only an id: nothing to write."""
        if not ttl > 0:
            raise ValueError(f"a lease lives for more than 0 seconds, not {ttl}")
        wanted = {_digest(key): (key, mode) for key, mode in merged(holds).items()}
        scope = None if self._db.sqlite else unconfirmed.current()
        # the pools the RPC used unconfirmed: the take checks their versions too
        versions = scope.take() if scope is not None else {}
        taken = _Take(owner, label, REQUEST_ID.get(), ttl, wanted, versions)
        if not wanted:
            return taken.lease_id
        try:
            # MariaDB: one round trip when nothing stands in the way, the full take when it does
            if self._db.sqlite or not self._db.batch(*taken.batch(), hot_sql.TAKE_COUNTED):
                self._db.write(taken.run)
        except unconfirmed.Stale:
            self._forget_pools(versions)
            raise
        if scope is not None:
            scope.confirmed_now(versions)
        self._sweep_now_and_then()
        return taken.lease_id

    def release_lease(self, lease_id: int) -> bool:
        return self._db.write_one(lambda conn: hot_sql.release(conn, lease_id))

    def renew_leases(self, owner: str, ttl: float) -> int:
        def renew(conn: Connection) -> int:
            now = clock(conn)
            live = (lease_holds.c.owner == owner, lease_holds.c.expires > now)
            count = select(func.count(lease_holds.c.lease_id.distinct())).where(*live)
            renewed = int(conn.execute(count).scalar_one())
            conn.execute(update(lease_holds).where(*live).values(expires=now + ttl))
            return renewed

        renewed = self._db.write(renew)
        self._sweep_now_and_then()
        return renewed

    def leases(self) -> list[LeaseRecord]:
        def held(conn: Connection) -> list[Row[Any]]:
            query = (
                select(lease_holds)
                .where(lease_holds.c.expires > clock(conn))
                .order_by(lease_holds.c.key, lease_holds.c.started, lease_holds.c.lease_id)
            )
            return list(conn.execute(query).all())

        return [
            LeaseRecord(r.lease_id, r.key, Mode(r.mode), r.owner, r.label, r.request_id, r.expires)
            for r in self._db.read(held)
        ]

    def _sweep_now_and_then(self) -> None:
        """Remove expired leases, and lock rows of keys not taken for an hour (safe at any
        time: a taker creates its key's row again), at most every SWEEP_SECONDS."""
        if time.monotonic() - self._swept < SWEEP_SECONDS:
            return
        self._swept = time.monotonic()

        def sweep(conn: Connection) -> None:
            now = clock(conn)
            conn.execute(delete(lease_holds).where(lease_holds.c.expires <= now))
            conn.execute(delete(lease_keys).where(lease_keys.c.touched < now - KEY_ROW_SECONDS))

        try:
            self._db.write(sweep)
        except (SpcsError, exc.SQLAlchemyError) as error:  # only housekeeping: try next time
            log.warning("could not remove expired leases from %s: %s", self.name, error)

    # ---- the store itself ---------------------------------------------------------------

    def ping(self) -> None:
        self._db.read(lambda c: c.execute(text("SELECT 1")).scalar())

    def close(self) -> None:
        self._db.close()


class _Take:
    """One take_leases transaction (run again from the start after a deadlock)."""

    def __init__(
        self,
        owner: str,
        label: str,
        request_id: str,
        ttl: float,
        wanted: dict[str, tuple[str, Mode]],
        versions: dict[str, int],
    ) -> None:
        self.owner, self.label, self.request_id, self.ttl = owner, label, request_id, ttl
        self.wanted = wanted
        self.versions = versions  # pool uuid → the version the RPC used (`take_batch`)
        # chosen here, not by the database: the lease is only its rows in lease_holds
        self.lease_id = secrets.randbits(62) + 1

    def _lease(self) -> tuple[hot_sql.NewLease, list[tuple[str, str, str]]]:
        lease = hot_sql.NewLease(self.lease_id, self.owner, self.label, self.request_id, self.ttl)
        return lease, [(d, key, mode.value) for d, (key, mode) in sorted(self.wanted.items())]

    def batch(self) -> tuple[str, list[object]]:
        """The take in one batch (MariaDB): it takes the lease, or changes nothing."""
        return hot_sql.take_batch(*self._lease(), self.versions)

    def run(self, conn: Connection) -> None:
        # on MariaDB every statement reads the database's clock itself (no round trip for it)
        now = hot_sql.Clock(conn, time.time())
        digests = sorted(self.wanted)
        if self.versions:
            _check_versions(self.versions, hot_sql.pool_versions(conn, sorted(self.versions)))
        hot_sql.touch_keys(conn, now, digests)
        current = hot_sql.holds_on(conn, now, digests)
        if any(row.lease_id == self.lease_id for row in current):
            return  # taken already: the batch committed, then its connection broke
        self._refuse_conflicts([r for r in current if r.live])
        expired = sorted({r.lease_id for r in current if not r.live})
        if expired:
            hot_sql.drop_leases(conn, expired)
        hot_sql.new_holds(conn, now, *self._lease())

    def _refuse_conflicts(self, live: list[Row[Any]]) -> None:
        """Conflict (as `spcs.common.locks` words it) on the first key, in key order, that a
        live lease holds in a mode that does not go with ours."""
        for key, mode in sorted(self.wanted.values()):
            blockers = [
                Lease(
                    row.label,
                    row.request_id,
                    Mode(row.mode),
                    started=time.monotonic() - float(row.age),
                    owner=row.owner,
                )
                for row in live
                if row.key == key and (mode is EXCLUSIVE or Mode(row.mode) is EXCLUSIVE)
            ]
            if blockers:
                raise Conflict(conflict_message(self.label, key, mode, blockers))


def _check_versions(used: dict[str, int], found: dict[str, int]) -> None:
    changed = sorted(uuid for uuid, version in used.items() if found.get(uuid) != version)
    if changed:
        raise unconfirmed.Stale(f"pool {changed[0]}")


def _connection_columns(conn: PoolConnection) -> dict[str, object]:
    return {
        "api_host": conn.host,
        "api_port": conn.port,
        "api_token": conn.token,
        "url_form": conn.form,
    }


def _pool(rows: Sequence[Row[Any]]) -> PoolRecord:
    """A pool from its rows of pools LEFT JOIN pool_hosts (one row per connected host)."""
    row = rows[0]
    return PoolRecord(
        uuid=row.uuid,
        name=row.name,
        zone_id=row.zone_id,
        scope=row.scope,
        state=row.state,
        conn=PoolConnection(
            row.api_host, row.api_port, row.api_token, row.sp_template, row.url_form
        ),
        capacity_bytes=row.capacity_bytes,
        capacity_iops=row.capacity_iops,
        used_bytes=row.used_bytes,
        tags=json.loads(row.tags),
        details=json.loads(row.details),
        hypervisor=row.hypervisor,
        cluster_id=row.cluster_id,
        pod_id=row.pod_id,
        fingerprint=row.fingerprint,
        hosts=[r.host_id for r in rows if r.host_id is not None],
    )


def _node(row: Row[Any]) -> NodeRecord:
    return NodeRecord(
        row.host_id,
        row.address,
        row.client_id,
        row.cluster_id,
        row.version,
        row.last_seen,
        bool(row.client_running),
        row.max_copies,
    )


# ---- who uses an SQLite file ------------------------------------------------------------------
# SQLite has no notion of a service: `spcs management` holds an advisory flock on `<db>.lock`
# (shared, so several processes on one file behave as before) for as long as it runs, and
# `spcs migrate-db` takes it exclusively, without waiting, so it refuses a file a live service
# uses and no service starts on a file being moved. The kernel drops the lock when the process
# ends, however it ends; the lock file itself stays (it holds nothing).


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def lock_sqlite(database: Path, *, exclusive: bool) -> int:
    """Take the flock on `<database>.lock` (created 0600) without waiting; returns its file
    descriptor (the lock lives until it is closed); DatabaseError when another process holds
    it in a conflicting mode."""
    path = lock_path(database)
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if exclusive:
            raise DatabaseError(
                f"{database} is in use by a running spcs management (it holds {path}); stop "
                "it first"
            ) from None
        raise DatabaseError(
            f"{database} is being moved by spcs migrate-db (it holds {path}); start spcs "
            "management when that has finished, on the database it moved the state to"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _private_file(path: Path) -> None:
    """An SQLite file is created 0600: it holds StorPool API tokens."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _bump(which: Any) -> Any:
    """The statement that bumps the version of the pools `which` selects."""
    return update(pools_table).where(which).values(version=pools_table.c.version + 1)
