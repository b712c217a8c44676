"""The management service's state store (`SqlState`): the StateStore, its operations journal and
the LeaseStore, each test on SQLite and on MariaDB (a private server, tests/stacks.py), the
assertions on what the store then holds; two stores on one database act as two replicas."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from google.longrunning import operations_pb2
from sqlalchemy import create_engine, exc, inspect, text

from spcs.common import unconfirmed
from spcs.common.errors import Conflict, FailedPrecondition
from spcs.common.holds import EXCLUSIVE, SHARED, Hold, Mode
from spcs.common.locks import KeyedLocks, Lease, conflict_message
from spcs.common.logs import REQUEST_ID
from spcs.common.settings import add_options
from spcs.management import hot_sql, settings
from spcs.management.pool_url import Connection
from spcs.management.schema import metadata
from spcs.management.sql_state import SqlState, _digest, _Take
from spcs.management.state import CacheEntry, NodeRecord, PoolChanges, PoolRecord
from spcs.v1 import lifecycle_pb2
from tests.support import SPCS

UP = lifecycle_pb2.POOL_STATE_UP
MAINTENANCE = lifecycle_pb2.POOL_STATE_MAINTENANCE
ZONE = lifecycle_pb2.POOL_SCOPE_ZONE


@pytest.fixture(params=["sqlite", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(URL, password) of an empty database of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}", None
    server = request.getfixturevalue("mariadb")
    return server.new_database(), server.password


@pytest.fixture
def store(database: tuple[str, str | None]) -> Iterator[SqlState]:
    opened = SqlState(*database, replica="replica-a")
    yield opened
    opened.close()


@pytest.fixture
def other(database: tuple[str, str | None], store: SqlState) -> Iterator[SqlState]:
    """A second replica on the same database."""
    opened = SqlState(*database, replica="replica-b")
    yield opened
    opened.close()


@pytest.fixture
def request_id() -> Iterator[str]:
    token = REQUEST_ID.set("req-1")
    yield "req-1"
    REQUEST_ID.reset(token)


def pool(uuid: str, name: str | None = None, **fields) -> PoolRecord:
    values = dict(
        uuid=uuid,
        name=name or f"name of {uuid}",
        zone_id="zone-1",
        scope=ZONE,
        state=UP,
        conn=Connection("10.0.0.1", 81, "token-123", "hybrid", "SP_API_HTTP"),
        capacity_bytes=1 << 40,
        capacity_iops=1000,
        used_bytes=0,
        tags=["fast", "ssd"],
        details={"a": "1", "ü": "ß"},
        hypervisor="KVM",
        cluster_id="cluster-1",
        pod_id="pod-1",
        fingerprint="f" * 64,
    )
    values.update(fields)
    return PoolRecord(**values)


def node(host_id: str, **fields) -> NodeRecord:
    values = dict(
        host_id=host_id,
        address=f"{host_id}:9711",
        client_id=3,
        cluster_id="emu.a",
        version="0.1.0",
        last_seen=time.time(),
        client_running=False,
    )
    values.update(fields)
    return NodeRecord(**values)


def operation(name: str, done: bool = False) -> operations_pb2.Operation:
    return operations_pb2.Operation(name=name, done=done)


# ---- pools, hosts, the template cache, nodes -----------------------------------------------------


def test_pools_add_update_state_remove(store: SqlState):
    store.add_pool(pool("p-2", "beta"))
    store.add_pool(pool("p-1", "alpha", used_bytes=0))
    assert store.pool("p-2") == pool("p-2", "beta")
    assert [p.uuid for p in store.pools()] == ["p-1", "p-2"]  # by name
    assert store.pool("p-3") is None

    store.set_pool_state("p-2", MAINTENANCE)
    store.set_pool_used("p-2", 12345)
    new_conn = Connection("10.0.0.2", 8080, "token-456", "hybrid", "storpool://")
    store.update_pool("p-2", PoolChanges(2 << 40, 5, ["slow"], {"b": "2"}, new_conn))
    changed = store.pool("p-2")
    assert changed == pool(
        "p-2",
        "beta",
        state=MAINTENANCE,
        used_bytes=12345,
        capacity_bytes=2 << 40,
        capacity_iops=5,
        tags=["slow"],
        details={"b": "2"},
        conn=new_conn,
    )
    assert changed.conn.token == "token-456"
    assert store.pool("p-1") == pool("p-1", "alpha")  # the other pool untouched

    store.connect_host("p-2", "host-1", 1)
    store.put_cache_entry("p-2", CacheEntry("tmpl-1", "snap-1", "gid-1", 10))
    store.remove_pool("p-2")
    assert store.pool("p-2") is None and [p.uuid for p in store.pools()] == ["p-1"]
    # its hosts and cache entries went with it
    assert store.pools_of_host("host-1") == [] and store.cache_entries("p-2") == []


def test_hosts_connect_and_disconnect(store: SqlState):
    for uuid in ("p-1", "p-2", "p-3"):
        store.add_pool(pool(uuid))
        store.connect_host(uuid, "host-1", 1)
    store.connect_host("p-1", "host-2", 2)
    store.connect_host("p-1", "host-2", 7)  # again: updated, not doubled
    assert store.pool("p-1").hosts == ["host-1", "host-2"]
    assert [p.hosts for p in store.pools()] == [["host-1", "host-2"], ["host-1"], ["host-1"]]
    assert store.pools_of_host("host-1") == ["p-1", "p-2", "p-3"]

    assert store.disconnect_host("host-1", ["p-2", "p-missing"]) == 1
    assert store.pools_of_host("host-1") == ["p-1", "p-3"]
    assert store.disconnect_host("host-1", []) == 0
    assert store.disconnect_host("host-1") == 2
    assert store.pools_of_host("host-1") == [] and store.pools_of_host("host-2") == ["p-1"]
    assert store.disconnect_host("host-1") == 0


def test_template_cache_entries(store: SqlState):
    store.add_pool(pool("p-1"))
    store.add_pool(pool("p-2"))
    store.put_cache_entry("p-1", CacheEntry("tmpl-b", "snap-b", "gid-b", 20))
    store.put_cache_entry("p-1", CacheEntry("tmpl-a", "snap-a", "gid-a"))
    store.put_cache_entry("p-2", CacheEntry("tmpl-a", "snap-other", "gid-o", 5))
    store.put_cache_entry("p-1", CacheEntry("tmpl-b", "snap-b2", "gid-b2", 30))  # replaced
    assert store.cache_entries("p-1") == [
        CacheEntry("tmpl-a", "snap-a", "gid-a", 0),
        CacheEntry("tmpl-b", "snap-b2", "gid-b2", 30),
    ]
    store.drop_cache_entry("p-1", "tmpl-a")
    store.drop_cache_entry("p-1", "tmpl-missing")
    assert store.cache_entries("p-1") == [CacheEntry("tmpl-b", "snap-b2", "gid-b2", 30)]
    assert store.cache_entries("p-2") == [CacheEntry("tmpl-a", "snap-other", "gid-o", 5)]


def test_nodes(store: SqlState):
    first = node("host-2", max_copies=4)
    store.register_node(first)
    store.register_node(node("host-1"))
    assert store.node("host-2") == first and store.node("host-3") is None
    assert [n.host_id for n in store.nodes()] == ["host-1", "host-2"]
    assert store.node("host-1").max_copies == 2

    store.set_client_running("host-2", True)
    assert store.node("host-2").client_running is True
    again = node("host-2", address="10.1.1.1:9711", client_id=9, version="0.2", max_copies=1)
    store.register_node(again)  # a re-registration keeps what the host said about its client
    assert store.node("host-2") == NodeRecord(**{**again.__dict__, "client_running": True})
    store.set_client_running("host-2", False)
    assert store.node("host-2").client_running is False

    assert store.forget_node("host-2") is True and store.forget_node("host-2") is False
    assert [n.host_id for n in store.nodes()] == ["host-1"]


def test_journal_round_trip_and_after_reopen(database, store: SqlState):
    store.journal.save("operations/a", "print-a", operation("operations/a"))
    store.journal.save("operations/b", "print-b", operation("operations/b", done=True))
    store.journal.save("operations/a", "print-a2", operation("operations/a", done=True))
    store.journal.save("operations/c", "print-c", operation("operations/c"))
    store.journal.forget("operations/c")
    store.journal.forget("operations/never")
    expected = [
        ("operations/b", "print-b", operation("operations/b", done=True)),
        ("operations/a", "print-a2", operation("operations/a", done=True)),  # saved last
    ]
    assert list(store.journal.load()) == expected
    store.close()
    reopened = SqlState(*database, replica="replica-c")
    try:
        assert list(reopened.journal.load()) == expected
        # the owner replica and heartbeat of each operation are recorded
        with reopened._db.engine.connect() as conn:
            rows = conn.execute(text("SELECT name, owner, heartbeat FROM operations")).all()
        assert {(name, owner) for name, owner, _ in rows} == {
            ("operations/a", "replica-a"),
            ("operations/b", "replica-a"),
        }
        assert all(abs(beat - time.time()) < 60 for _, _, beat in rows)
    finally:
        reopened.close()


# (SQLite is one replica's file, its pool records cached: the next test)
@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_a_change_through_one_replica_is_seen_through_the_other(store: SqlState, other: SqlState):
    store.add_pool(pool("p-1"))
    assert other.pool("p-1").state == UP
    store.set_pool_state("p-1", MAINTENANCE)
    assert other.pool("p-1").state == MAINTENANCE
    assert [p.state for p in other.pools()] == [MAINTENANCE]
    other.connect_host("p-1", "host-1", 1)
    assert store.pool("p-1").hosts == ["host-1"]
    other.register_node(node("host-1"))
    assert [n.host_id for n in store.nodes()] == ["host-1"]
    store.remove_pool("p-1")
    assert other.pool("p-1") is None and other.pools_of_host("host-1") == []


def test_on_sqlite_pool_records_are_cached_and_dropped_on_every_write(tmp_path: Path):
    """One process owns an SQLite file: a pool is read from the file once, then from memory
    until this store writes pools or their hosts."""
    store = SqlState(f"sqlite:///{tmp_path / 'one.db'}")
    try:
        store.add_pool(pool("p-1"))
        first = store.pool("p-1")
        assert store.pool("p-1") is first  # from memory
        store.set_pool_state("p-1", MAINTENANCE)
        assert store.pool("p-1").state == MAINTENANCE
        store.connect_host("p-1", "host-1", 1)
        assert store.pool("p-1").hosts == ["host-1"]
        store.disconnect_host("host-1")
        assert store.pool("p-1").hosts == []
        store.remove_pool("p-1")
        assert store.pool("p-1") is None
    finally:
        store.close()


def test_the_migrated_schema_is_the_defined_one(database, store: SqlState):
    url, password = database
    with store._db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert differences == [] and version == "0004"
    if url.startswith("mysql"):
        engine = create_engine(url.replace("spcs@", f"spcs:{password}@"))
        try:
            for table in inspect(engine).get_table_names():
                options = inspect(engine).get_table_options(table)
                assert options["mysql_engine"] == "InnoDB", table
                assert options["mysql_default charset"] == "utf8mb4", table
        finally:
            engine.dispose()


# ---- leases --------------------------------------------------------------------------------------


def hold(key: str, mode: Mode = EXCLUSIVE) -> list[Hold]:
    return [Hold(key, mode)]


def test_shared_leases_go_together(store: SqlState, other: SqlState):
    first = store.take_leases(hold("k", SHARED), owner="replica-a", label="Backup", ttl=30)
    second = other.take_leases(hold("k", SHARED), owner="replica-b", label="Clone", ttl=30)
    assert first != second
    held = store.leases()
    assert [(h.lease_id, h.key, h.mode, h.owner, h.label) for h in held] == [
        (first, "k", SHARED, "replica-a", "Backup"),
        (second, "k", SHARED, "replica-b", "Clone"),
    ]
    assert all(25 < h.expires - time.time() < 35 for h in held)


def test_an_exclusive_conflict_names_the_holder_and_its_replica(
    store: SqlState, other: SqlState, request_id: str
):
    store.take_leases(hold("storpool:gid-1", SHARED), owner="replica-a", label="Backup", ttl=30)
    with pytest.raises(Conflict) as raised:
        other.take_leases(hold("storpool:gid-1"), owner="replica-b", label="Delete", ttl=30)
    expected = conflict_message(
        "Delete",
        "storpool:gid-1",
        EXCLUSIVE,
        [Lease("Backup", request_id, SHARED, owner="replica-a")],
    )
    assert raised.value.message == expected
    assert expected == (
        "Delete needs storpool:gid-1 exclusive, but Backup holds it shared (request req-1, "
        "replica replica-a, 0s); retry when it has finished"
    )
    # the in-memory locks word it the same way, without the replica
    locks = KeyedLocks()
    locks.acquire(hold("storpool:gid-1", SHARED), "Backup")
    with pytest.raises(Conflict) as in_memory:
        locks.acquire(hold("storpool:gid-1"), "Delete")
    assert in_memory.value.message == expected.replace(", replica replica-a", "")
    # exclusive held: shared conflicts too, naming every holder's count
    other.take_leases(hold("storpool:gid-2"), owner="replica-b", label="Resize", ttl=30)
    refused = (
        r"^Clone needs storpool:gid-2 shared, but Resize holds it exclusive \(request req-1, "
        r"replica replica-b, \d+s\); retry when it has finished$"
    )
    with pytest.raises(Conflict, match=refused):
        store.take_leases(hold("storpool:gid-2", SHARED), owner="replica-a", label="Clone", ttl=30)
    assert [h.label for h in store.leases()] == ["Backup", "Resize"]  # nothing taken on conflict


def test_a_conflict_takes_nothing_and_names_more_holders(store: SqlState):
    store.take_leases(hold("b", SHARED), owner="r1", label="One", ttl=30)
    store.take_leases(hold("b", SHARED), owner="r2", label="Two", ttl=30)
    wanted = [Hold("a", EXCLUSIVE), Hold("b", EXCLUSIVE), Hold("c", SHARED)]
    refused = r"^Three needs b exclusive, but One holds it shared \(.*\) and 1 more; retry"
    with pytest.raises(Conflict, match=refused):
        store.take_leases(wanted, owner="r3", label="Three", ttl=30)
    assert sorted({h.key for h in store.leases()}) == ["b"]
    store.take_leases(hold("a"), owner="r3", label="Four", ttl=30)  # a was not taken


def test_expiry_frees_and_renewal_extends(store: SqlState, other: SqlState):
    short = store.take_leases(hold("k1"), owner="replica-a", label="Short", ttl=0.5)
    renewed = store.take_leases(hold("k2"), owner="replica-a", label="Renewed", ttl=0.5)
    elsewhere = other.take_leases(hold("k3"), owner="replica-b", label="Other", ttl=0.5)
    time.sleep(0.25)
    with pytest.raises(Conflict):
        other.take_leases(hold("k1"), owner="replica-b", label="Early", ttl=30)
    assert store.renew_leases("replica-a", 5) == 2  # k1 and k2, not replica-b's k3
    store.release_lease(short)
    time.sleep(0.5)  # past the first lifetime: k2 lives on renewed, k3 has expired
    with pytest.raises(Conflict, match="Renewed holds it exclusive"):
        other.take_leases(hold("k2"), owner="replica-b", label="Late", ttl=30)
    assert [(h.key, h.lease_id) for h in store.leases()] == [("k2", renewed)]
    taken = store.take_leases(hold("k3"), owner="replica-a", label="After", ttl=30)
    assert taken not in (short, renewed, elsewhere)
    assert other.renew_leases("replica-b", 5) == 0  # an expired lease is lost, not revived
    assert [(h.key, h.owner) for h in other.leases()] == [("k2", "replica-a"), ("k3", "replica-a")]


def test_expired_leases_are_removed(store: SqlState):
    kept = store.take_leases(hold("kept"), owner="replica-a", label="Kept", ttl=30)
    store.take_leases([Hold("gone", SHARED), Hold("x", EXCLUSIVE)], owner="a", label="G", ttl=0.2)
    time.sleep(0.3)
    # SQLite removes G's lease here; MariaDB's one-round-trip take passes it by (the sweep)
    store.take_leases(hold("x"), owner="replica-a", label="Takes", ttl=0.2)
    store.take_leases(hold("gone2"), owner="replica-a", label="Gone", ttl=0.2)
    time.sleep(0.3)
    store._swept = 0.0  # the sweep is due (it runs at most once a minute)
    assert store.renew_leases("replica-a", 30) == 1
    with store._db.engine.connect() as conn:
        keys = conn.execute(text("SELECT lease_id, `key` FROM lease_holds")).all()
    assert keys == [(kept, "kept")]
    with pytest.raises(ValueError):
        store.take_leases(hold("y"), owner="replica-a", label="Never", ttl=0)


def test_release_frees(store: SqlState, other: SqlState):
    lease = store.take_leases(
        [Hold("k1", EXCLUSIVE), Hold("k2", SHARED)], owner="replica-a", label="Op", ttl=30
    )
    with pytest.raises(Conflict):
        other.take_leases(hold("k2"), owner="replica-b", label="Op2", ttl=30)
    assert other.release_lease(lease) is True  # any replica may release it
    assert store.release_lease(lease) is False
    assert store.leases() == []
    other.take_leases(
        [Hold("k1", EXCLUSIVE), Hold("k2", EXCLUSIVE)], owner="b", label="Op3", ttl=30
    )


def test_one_key_named_twice_is_held_in_the_stronger_mode(store: SqlState):
    both = [Hold("k", SHARED), Hold("k", EXCLUSIVE), Hold("k", SHARED)]
    lease = store.take_leases(both, owner="replica-a", label="Copy", ttl=30)
    assert [(h.lease_id, h.key, h.mode) for h in store.leases()] == [(lease, "k", EXCLUSIVE)]
    with pytest.raises(Conflict):
        store.take_leases(hold("k", SHARED), owner="replica-b", label="Read", ttl=30)
    shared = store.take_leases([Hold("s", SHARED)] * 2, owner="replica-a", label="Read", ttl=30)
    assert [(h.key, h.mode) for h in store.leases() if h.lease_id == shared] == [("s", SHARED)]


def test_long_keys(store: SqlState):
    long_key = "secondary:nfs://server/export/" + "d/" * 2000 + "file.qcow2"
    store.take_leases(hold(long_key), owner="replica-a", label="Export", ttl=30)
    with pytest.raises(Conflict):
        store.take_leases(hold(long_key), owner="replica-b", label="Export", ttl=30)
    store.take_leases(hold(long_key + "2"), owner="replica-b", label="Export", ttl=30)
    assert [h.key for h in store.leases()] == [long_key, long_key + "2"]


def _mariadb(store: SqlState) -> None:
    if store._db.sqlite:
        pytest.skip("MariaDB's one-round-trip take; SQLite takes a lease in one transaction")


def test_a_take_sent_again_after_it_committed_takes_one_lease(store: SqlState, other: SqlState):
    """The batch is sent again when its connection broke, perhaps after it had committed: the
    second run finds the lease there, and neither it nor the full take conflicts with it."""
    _mariadb(store)
    wanted = {_digest("k1"): ("k1", EXCLUSIVE), _digest("k2"): ("k2", SHARED)}
    taken = _Take("replica-a", "Op", "req-1", 30, wanted, {})
    assert store._db.batch(*taken.batch(), hot_sql.TAKE_COUNTED) == 2
    assert store._db.batch(*taken.batch(), hot_sql.TAKE_COUNTED) == 0  # there already
    store._db.write(taken.run)  # the full take: it is this lease's, not a conflict
    assert sorted((h.lease_id, h.key, h.mode) for h in other.leases()) == [
        (taken.lease_id, "k1", EXCLUSIVE),
        (taken.lease_id, "k2", SHARED),
    ]
    with pytest.raises(Conflict, match="Op"):
        other.take_leases(hold("k1", SHARED), owner="replica-b", label="Read", ttl=30)


def test_a_failed_batch_leaves_nothing_and_its_connection_works(store: SqlState):
    _mariadb(store)
    failing = (
        "START TRANSACTION; INSERT INTO lease_keys (key_digest, touched) VALUES (%s, 1); "
        "INSERT INTO no_such_table VALUES (1); COMMIT"
    )
    for _ in range(30):  # more than the pool's connections: each is rolled back, not lost
        with pytest.raises(exc.ProgrammingError, match="no_such_table"):
            store._db.batch(failing, ["e" * 64], 1)
    with store._db.single.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM lease_keys").scalar() == 0
        assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 0
    lease = store.take_leases(hold("after"), owner="replica-a", label="After", ttl=30)
    assert [h.lease_id for h in store.leases()] == [lease]


def test_a_pool_used_unconfirmed_is_confirmed_by_the_lease(store: SqlState, other: SqlState):
    """In an RPC that holds what it changes (`spcs.common.unconfirmed`), a replica uses its
    copy of a pool without reading its version; the lease's take checks it. Changed by
    another replica: no lease, the copy dropped, and the RPC's next run sees the change."""
    _mariadb(store)
    store.add_pool(pool("p-1"))
    assert store.pool("p-1").state == UP  # kept with its version
    runs: list[int] = []

    def set_state(state: int) -> None:
        """The other replica's change, from a thread of its own (outside the RPC's scope)."""
        thread = threading.Thread(target=other.set_pool_state, args=("p-1", state))
        thread.start()
        thread.join()

    def rpc() -> int:
        runs.append(store.pool("p-1").state)
        if len(runs) == 1:
            set_state(MAINTENANCE)  # between its read and its lease
        return store.take_leases(hold("volume:v"), owner="replica-a", label="Op", ttl=30)

    lease = unconfirmed.run(rpc, "Op")
    assert runs == [UP, MAINTENANCE]
    assert [h.lease_id for h in other.leases()] == [lease]  # only the second run's
    store.release_lease(lease)

    # a run that takes no lease has its pools confirmed at its end, its error too
    other.set_pool_state("p-1", UP)

    def refuses() -> None:
        runs.append(store.pool("p-1").state)
        if store.pool("p-1").state == MAINTENANCE:
            raise FailedPrecondition("p-1 is in maintenance")

    runs.clear()
    unconfirmed.run(refuses, "Refuses")
    assert runs == [MAINTENANCE, UP]

    assert other.leases() == []


def test_racing_replicas_one_lease_wins_each_round(store: SqlState, other: SqlState):
    """8 threads on each of two stores (replicas) take the same exclusive key at once."""
    threads, rounds = 8, 5
    barrier = threading.Barrier(2 * threads)
    wins: list[list[tuple[str, int]]] = [[] for _ in range(rounds)]
    conflicts = [0] * rounds
    failures: list[BaseException] = []
    guard = threading.Lock()

    def racer(replica: SqlState, name: str) -> None:
        try:
            for number in range(rounds):
                barrier.wait(30)
                try:
                    lease = replica.take_leases(hold("hot"), owner=name, label="Race", ttl=30)
                except Conflict:
                    with guard:
                        conflicts[number] += 1
                else:
                    with guard:
                        wins[number].append((name, lease))
                barrier.wait(30)  # every racer has tried: the winner gives it up
                for winner, lease in wins[number]:
                    if winner == name:
                        replica.release_lease(lease)
                barrier.wait(30)
        except BaseException as error:
            failures.append(error)
            barrier.abort()

    workers = [
        threading.Thread(target=racer, args=(replica, f"{label}-{n}"))
        for label, replica in (("a", store), ("b", other))
        for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert failures == []
    assert [len(won) for won in wins] == [1] * rounds
    assert conflicts == [2 * threads - 1] * rounds
    assert store.leases() == []


# ---- migrations ----------------------------------------------------------------------------------

# The schema spcs's raw SQLite migrations made (PRAGMA user_version 3), as they wrote it.
LEGACY_SCHEMA = """
    CREATE TABLE nodes (
        host_id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        cluster_id TEXT NOT NULL DEFAULT '',
        version TEXT NOT NULL DEFAULT '',
        last_seen REAL NOT NULL,
        client_running INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE operations (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        done INTEGER NOT NULL,
        data BLOB NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE pools (
        uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        zone_id TEXT NOT NULL,
        scope INTEGER NOT NULL,
        state INTEGER NOT NULL,
        sp_template TEXT NOT NULL,
        api_host TEXT NOT NULL,
        api_port INTEGER NOT NULL,
        api_token TEXT NOT NULL,
        url_form TEXT NOT NULL,
        capacity_bytes INTEGER NOT NULL,
        capacity_iops INTEGER NOT NULL,
        used_bytes INTEGER NOT NULL DEFAULT 0,
        tags TEXT NOT NULL,
        details TEXT NOT NULL,
        hypervisor TEXT NOT NULL,
        cluster_id TEXT NOT NULL,
        pod_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE pool_hosts (
        pool_uuid TEXT NOT NULL REFERENCES pools(uuid) ON DELETE CASCADE,
        host_id TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        connected REAL NOT NULL,
        PRIMARY KEY (pool_uuid, host_id)
    );
    CREATE TABLE template_cache (
        pool_uuid TEXT NOT NULL REFERENCES pools(uuid) ON DELETE CASCADE,
        template_uuid TEXT NOT NULL,
        snapshot_name TEXT NOT NULL,
        global_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (pool_uuid, template_uuid)
    );
    ALTER TABLE nodes ADD COLUMN max_copies INTEGER NOT NULL DEFAULT 2;
"""
LEGACY_ROWS = [
    "INSERT INTO pools VALUES ('p-1', 'old pool', 'zone-1', 1, 2, 'hybrid', '10.0.0.1', 81, "
    "'token-123', 'SP_API_HTTP', 1099511627776, 1000, 77, '[\"fast\"]', '{\"a\": \"1\"}', "
    "'KVM', 'cluster-1', 'pod-1', 'print', 1.5)",
    "INSERT INTO pool_hosts VALUES ('p-1', 'host-1', 3, 2.5)",
    "INSERT INTO template_cache VALUES ('p-1', 'tmpl-1', 'snap-1', 'gid-1', 100, 3.5)",
    "INSERT INTO nodes(host_id, address, client_id, last_seen) VALUES ('host-1', 'h:9711', 3, 4.5)",
]


def legacy_file(path: Path) -> Path:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_SCHEMA)
    for row in LEGACY_ROWS:
        conn.execute(row)
    conn.execute(
        "INSERT INTO operations VALUES ('operations/x', 'print-x', 1, ?, 5.5)",
        (operation("operations/x", done=True).SerializeToString(),),
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    return path


def test_a_file_of_the_raw_schema_is_stamped_upgraded_and_keeps_its_rows(tmp_path: Path):
    path = legacy_file(tmp_path / "management.db")
    store = SqlState(path)
    try:
        assert store.pool("p-1") == pool(
            "p-1",
            "old pool",
            scope=1,
            state=2,
            used_bytes=77,
            tags=["fast"],
            details={"a": "1"},
            fingerprint="print",
            hosts=["host-1"],
        )
        assert store.cache_entries("p-1") == [CacheEntry("tmpl-1", "snap-1", "gid-1", 100)]
        assert store.node("host-1") == NodeRecord("host-1", "h:9711", 3, "", "", 4.5, False, 2)
        assert list(store.journal.load()) == [
            ("operations/x", "print-x", operation("operations/x", done=True))
        ]
        store.take_leases(hold("k"), owner="replica-a", label="New", ttl=30)  # 0002's tables
        with store._db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
            assert conn.execute(
                text("SELECT owner, heartbeat, attempt, cancel FROM operations")
            ).all() == [("", 0, 0, 0)]
            # an spcs of before Alembic refuses the file now, instead of misreading it
            assert conn.execute(text("PRAGMA user_version")).scalar() == 100
    finally:
        store.close()
    SqlState(path).close()  # opened again: nothing left to do


def test_an_early_raw_schema_is_refused(tmp_path: Path):
    import sqlite3

    from spcs.common.sqlite import DatabaseError

    path = tmp_path / "management.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(DatabaseError, match=re.escape(f"database {path} has schema 2 of an early")):
        SqlState(path)


def newer_than_this_spcs(url: str, password: str | None) -> None:
    store = SqlState(url, password)
    with store._db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    store.close()


def test_a_database_newer_than_this_spcs_is_refused(database):
    from spcs.common.sqlite import DatabaseError

    url, password = database
    newer_than_this_spcs(url, password)
    with pytest.raises(DatabaseError) as refused:
        SqlState(url, password)
    shown = url.replace("spcs@", "spcs:***@") if password else url.removeprefix("sqlite:///")
    assert str(refused.value) == (
        f"database {shown} has schema 0999, newer than this spcs knows (it knows up to 0004); "
        "upgrade spcs or use another --database-url"
    )


def test_spcs_management_refuses_a_newer_database(database, tmp_path: Path):
    url, password = database
    newer_than_this_spcs(url, password)
    argv = [*SPCS, "management", "--listen", "127.0.0.1:0", "--database-url", url]
    if password is not None:
        (tmp_path / "password").write_text(password + "\n")
        argv += ["--database-password-file", str(tmp_path / "password")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    where = url.replace("spcs@", "spcs:***@") if password else url.removeprefix("sqlite:///")
    assert (
        f"spcs management: cannot start: database {where} has schema 0999, newer than this spcs "
        "knows (it knows up to 0004); upgrade spcs or use another --database-url"
    ) in done.stderr.splitlines()
    assert password is None or password not in done.stderr


# ---- the settings that select the store ----------------------------------------------------------


def management_settings(argv: list[str], tmp_path: Path, monkeypatch, **env: str):
    """`spcs management` settings from `argv` and `env` (only), with a StorPool config and --db
    in `tmp_path`."""
    for key in [k for k in os.environ if k.startswith("SPCS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    add_options(parser, settings.OPTIONS)
    sp = tmp_path / "storpool.conf"
    sp.write_text("SP_API_HTTP_HOST=127.0.0.1\nSP_AUTH_TOKEN=tok\n")
    args = parser.parse_args(["--db", str(tmp_path / "db" / "m.db"), "--storpool-conf", str(sp)])
    args = parser.parse_args(argv, namespace=args)
    return settings.ManagementSettings.from_args(args)


def test_settings_choose_the_database_and_its_password(tmp_path: Path, monkeypatch):
    default = management_settings([], tmp_path, monkeypatch)
    assert default.state_url.render_as_string() == f"sqlite:///{tmp_path}/db/m.db"
    assert default.database_password is None

    url = "mysql+pymysql://spcs@db.example.com/spcs"
    from_env = management_settings(
        ["--database-url", url], tmp_path, monkeypatch, SPCS_DATABASE_PASSWORD="from-env"
    )
    assert from_env.database_password == "from-env"
    assert from_env.state_url.render_as_string() == url
    password_file = tmp_path / "password"
    password_file.write_text("from file \r\n")
    from_file = management_settings(
        ["--database-password-file", str(password_file)],
        tmp_path,
        monkeypatch,
        SPCS_DATABASE_URL=url,
        SPCS_DATABASE_PASSWORD="from-env",
    )
    assert from_file.database_password == "from file "  # the file wins; its newline is not kept
    assert "from file" not in repr(from_file)
    assert management_settings([], tmp_path, monkeypatch, SPCS_DATABASE_PASSWORD="").state_url
