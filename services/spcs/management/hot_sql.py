"""The statements every mutating call runs, written out for each engine: reading its pool, and
taking and releasing a lease (`sql_state.SqlState`). On MariaDB a lease is taken in one round
trip (`take_batch`: its statements sent together) when nothing stands in the way, else in a
transaction of four (lock its keys' rows, read their holds, write its own, commit) that finds
out what does; it is released in one.

They run through SQLAlchemy's connection (its pool, transactions and errors) but not through
its statement building: on MariaDB, building the Core statements of one call (a pool read, a
lease taken and released) cost more CPU than their round trips to the server (measured on the
2-core VM: 6.5 ms a call through Core against 3.3 ms as these strings; issue 13's note). The
tables are those of `schema.py`; `tests/management/test_state_store.py` runs both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row

from spcs.management.schema import pools


@dataclass(frozen=True)
class Dialect:
    """How one engine spells what these statements need."""

    mark: str  # the DBAPI's parameter marker
    now: str  # the database's clock, in Unix seconds ("?" where this host passes it)
    upsert: str  # the end of an INSERT into lease_keys that refreshes `touched` instead
    lock: str  # how a SELECT locks the rows it read until the transaction ends


SQLITE = Dialect("?", "?", " ON CONFLICT (key_digest) DO UPDATE SET touched = excluded.touched", "")
MYSQL = Dialect(
    "%s",
    "UNIX_TIMESTAMP(NOW(6))",
    " ON DUPLICATE KEY UPDATE touched = VALUES(touched)",
    " FOR UPDATE",
)


def dialect(conn: Connection) -> Dialect:
    return SQLITE if conn.dialect.name == "sqlite" else MYSQL


def _marks(d: Dialect, count: int) -> str:
    return ", ".join([d.mark] * count)


@cache
def pool_query(d: Dialect) -> str:
    columns = ", ".join(f"pools.{column.name}" for column in pools.columns)
    return (
        f"SELECT {columns}, pool_hosts.host_id FROM pools LEFT OUTER JOIN pool_hosts "
        f"ON pools.uuid = pool_hosts.pool_uuid WHERE pools.uuid = {d.mark} "
        "ORDER BY pool_hosts.host_id"
    )


def read_pool(conn: Connection, uuid: str) -> Sequence[Row[Any]]:
    return conn.exec_driver_sql(pool_query(dialect(conn)), (uuid,)).all()


def pool_version(conn: Connection, uuid: str) -> int | None:
    """The pool's version (`schema.pools`), None if there is no such pool."""
    sql = f"SELECT version FROM pools WHERE uuid = {dialect(conn).mark}"
    found = conn.exec_driver_sql(sql, (uuid,)).first()
    return None if found is None else int(found[0])


def pool_versions(conn: Connection, uuids: Sequence[str]) -> dict[str, int]:
    """The versions of those of the pools that exist."""
    sql = f"SELECT uuid, version FROM pools WHERE uuid IN ({_marks(dialect(conn), len(uuids))})"
    return {str(row[0]): int(row[1]) for row in conn.exec_driver_sql(sql, tuple(uuids))}


@cache
def _touch_keys(d: Dialect, count: int) -> str:
    rows = ", ".join([f"({d.mark}, {d.now})"] * count)
    return f"INSERT INTO lease_keys (key_digest, touched) VALUES {rows}{d.upsert}"


@cache
def _holds_on(d: Dialect, count: int) -> str:
    return (
        "SELECT `key`, mode, lease_id, owner, label, request_id, "
        f"expires > {d.now} AS live, {d.now} - started AS age FROM lease_holds "
        f"WHERE key_digest IN ({_marks(d, count)}) ORDER BY started, lease_id{d.lock}"
    )


@cache
def _drop_leases(d: Dialect, count: int) -> str:
    return f"DELETE FROM lease_holds WHERE lease_id IN ({_marks(d, count)})"


@cache
def _new_holds(d: Dialect, count: int) -> str:
    row = f"({_marks(d, 7)}, {d.now}, {d.now} + {d.mark})"
    return (
        "INSERT INTO lease_holds (lease_id, key_digest, `key`, mode, owner, label, request_id, "
        f"started, expires) VALUES {', '.join([row] * count)}"
    )


class Clock:
    """The parameters for `now` in a statement: none on MariaDB (its own clock), this host's
    time on SQLite, one value for the whole transaction."""

    def __init__(self, conn: Connection, now: float) -> None:
        self.value = [now] if dialect(conn) is SQLITE else []

    def __call__(self, times: int = 1) -> list[float]:
        return self.value * times


def touch_keys(conn: Connection, clock: Clock, digests: Sequence[str]) -> None:
    """Create (or refresh) the lock row of each key, locking them until the transaction ends."""
    params: list[object] = []
    for digest in digests:
        params += [digest, *clock()]
    conn.exec_driver_sql(_touch_keys(dialect(conn), len(digests)), tuple(params))


def holds_on(conn: Connection, clock: Clock, digests: Sequence[str]) -> Sequence[Row[Any]]:
    """The holds on these keys with their leases (locked), whether each lease is live and how
    long it has been held."""
    params = (*clock(2), *digests)
    return conn.exec_driver_sql(_holds_on(dialect(conn), len(digests)), params).all()


def drop_leases(conn: Connection, lease_ids: Sequence[int]) -> None:
    conn.exec_driver_sql(_drop_leases(dialect(conn), len(lease_ids)), tuple(lease_ids))


@dataclass(frozen=True)
class NewLease:
    lease_id: int
    owner: str
    label: str
    request_id: str
    ttl: float


def new_holds(
    conn: Connection, clock: Clock, lease: NewLease, holds: Sequence[tuple[str, str, str]]
) -> None:
    """The lease's rows: (digest, key, mode) of each of its holds."""
    params: list[object] = []
    for digest, key, mode in holds:
        params += [lease.lease_id, digest, key, mode, lease.owner, lease.label, lease.request_id]
        params += [*clock(), *clock(), lease.ttl]
    conn.exec_driver_sql(_new_holds(dialect(conn), len(holds)), tuple(params))


@cache
def _take_batch(holds: int, exclusive: int, shared: int, pools: int) -> str:
    now = MYSQL.now
    # whether anything stands in the way, into a session variable: the insert then reads no
    # table (an INSERT ... SELECT from its own table goes through a temporary table)
    blocked = ["EXISTS (SELECT 1 FROM lease_holds WHERE lease_id = %s)"]
    if exclusive:
        blocked.append(
            "EXISTS (SELECT 1 FROM lease_holds WHERE key_digest IN "
            f"({_marks(MYSQL, exclusive)}) AND expires > {now})"
        )
    if shared:
        blocked.append(
            "EXISTS (SELECT 1 FROM lease_holds WHERE key_digest IN "
            f"({_marks(MYSQL, shared)}) AND expires > {now} AND mode = 'exclusive')"
        )
    if pools:
        versions = " OR ".join(["(uuid = %s AND version = %s)"] * pools)
        blocked.append(f"(SELECT COUNT(*) FROM pools WHERE {versions}) <> {pools}")
    row = f"SELECT %s, %s, %s, %s, %s, %s, %s, {now}, {now} + %s FROM DUAL WHERE @spcs_blocked = 0"
    return "; ".join(
        [
            "START TRANSACTION",  # READ COMMITTED (the session's, `sql.open_engine`)
            _touch_keys(MYSQL, holds),
            f"SELECT {' OR '.join(blocked)} INTO @spcs_blocked",
            "INSERT INTO lease_holds (lease_id, key_digest, `key`, mode, owner, label, "
            f"request_id, started, expires) {' UNION ALL '.join([row] * holds)}",
            "COMMIT",
        ]
    )


TAKE_COUNTED = 3  # the statement of `_take_batch` whose rows tell whether the lease was taken


def take_batch(
    lease: NewLease, holds: Sequence[tuple[str, str, str]], versions: dict[str, int]
) -> tuple[str, list[object]]:
    """MariaDB/MySQL: the whole take of a lease (`sql_state._Take`) as one batch of statements
    for `Database.batch`, in one round trip: lock the keys' rows, then insert every hold of the
    lease unless a live lease of another holds one of its keys in a mode that does not go with
    it, or this lease is there already (the batch sent again after a broken connection), or
    a pool of `versions` (uuid → the version the caller used) has another version now; all
    or none, so the inserted count is the number of holds or 0 (then the full take, in
    `_Take.run`, finds out why). Expired holds are ignored here, not removed (the periodic
    sweep does): a renewal only extends a lease that has not expired, so none comes back."""
    digests = [digest for digest, _key, _mode in holds]
    exclusive = [digest for digest, _key, mode in holds if mode == "exclusive"]
    shared = [digest for digest, _key, mode in holds if mode != "exclusive"]
    params: list[object] = [*digests, lease.lease_id, *exclusive, *shared]  # in text order
    for uuid, version in sorted(versions.items()):
        params += [uuid, version]
    for digest, key, mode in holds:
        params += [lease.lease_id, digest, key, mode, lease.owner, lease.label, lease.request_id]
        params.append(lease.ttl)
    return _take_batch(len(holds), len(exclusive), len(shared), len(versions)), params


def release(conn: Connection, lease_id: int) -> bool:
    return bool(conn.exec_driver_sql(_drop_leases(dialect(conn), 1), (lease_id,)).rowcount)
