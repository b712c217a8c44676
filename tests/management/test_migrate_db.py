"""`spcs migrate-db`: the SQLite file of a real `spcs management` run (a pool, two connected hosts,
a volume, a template copied to a volume) moved into MariaDB by the command, the rows compared
one by one, then a management service on the moved database; and every refusal."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.longrunning import operations_pb2

from spcs.common.holds import EXCLUSIVE, Hold
from spcs.management.sql_state import SqlState, lock_sqlite
from spcs.v1 import lifecycle_pb2, lifecycle_pb2_grpc, types_pb2
from tests.management.helpers import MIB, new_id, running_stack
from tests.stacks import MariaDB, Service, start_management, start_service
from tests.support import run_spcs

POOL_COLUMNS = (
    "uuid, name, zone_id, scope, state, sp_template, api_host, api_port, api_token, url_form, "
    "capacity_bytes, capacity_iops, used_bytes, tags, details, hypervisor, cluster_id, pod_id, "
    "fingerprint"
)
NODE_COLUMNS = "host_id, address, client_id, cluster_id, version, last_seen, client_running"
COMPARED = {
    "pools": f"SELECT {POOL_COLUMNS} FROM pools ORDER BY uuid",
    "pool_hosts": (
        "SELECT pool_uuid, host_id, client_id FROM pool_hosts ORDER BY pool_uuid, host_id"
    ),
    "template_cache": (
        "SELECT pool_uuid, template_uuid, snapshot_name, global_id, size FROM template_cache "
        "ORDER BY pool_uuid, template_uuid"
    ),
    "nodes": f"SELECT {NODE_COLUMNS}, max_copies FROM nodes ORDER BY host_id",
    "operations": (
        "SELECT name, fingerprint, done, data FROM operations WHERE done = 1 ORDER BY name"
    ),
}


@dataclass(frozen=True)
class Source:
    db: Path  # the SQLite file a stopped spcs management left
    pool: lifecycle_pb2.Pool  # what GetPool answered while it ran


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    tmp = tmp_path_factory.mktemp("source")
    with running_stack(tmp) as mgmt:
        mgmt.create_volume(32 * MIB)
        template, _ = mgmt.template_on_secondary(201, size=8 * MIB)
        volume = types_pb2.Volume(uuid=new_id("vol"), size_bytes=16 * MIB, store=mgmt.primary())
        mgmt.copy(types_pb2.DataObject(template=template), types_pb2.DataObject(volume=volume))
        pool = mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=mgmt.pool_uuid))
    db = tmp / "management.db"
    assert db.exists()
    return Source(db, pool)


def copy_of(source: Source, directory: Path) -> Path:
    """A copy of the source file of this test's own (the module's file stays as it was)."""
    directory.mkdir(exist_ok=True)
    copy = directory / "m.db"
    with sqlite3.connect(source.db) as old, sqlite3.connect(copy) as new:
        old.backup(new)
    return copy


def password_file(mariadb: MariaDB, tmp: Path) -> Path:
    path = tmp / "db-password"
    path.write_text(mariadb.password + "\n")
    return path


def migrate_db(*args: str, env: dict[str, str] | None = None):
    result = run_spcs(["migrate-db", *args], env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def sqlite_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [tuple(row) for row in conn.execute(sql)]


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_moves_the_state_and_a_service_runs_on_it(
    source: Source, mariadb: MariaDB, tmp_path: Path
) -> None:
    db = copy_of(source, tmp_path / "src")
    running = operations_pb2.Operation(name="operations/still-running", done=False)
    store = SqlState(db)
    store.journal.save(running.name, "f" * 64, running)
    store.close()
    expected = {table: sqlite_rows(db, sql) for table, sql in COMPARED.items()}
    assert len(expected["pools"]) == 1 and len(expected["pool_hosts"]) == 2
    assert len(expected["nodes"]) == 2 and len(expected["template_cache"]) == 1
    assert expected["operations"] and expected["pools"][0][8]  # finished jobs; the API token

    target = mariadb.new_database()
    secret = password_file(mariadb, tmp_path)
    moved = migrate_db(
        "--from", f"sqlite:///{db}", "--to", target, "--to-password-file", str(secret)
    )
    assert moved.returncode == 0, moved.stderr
    operations = len(expected["operations"])
    assert moved.stdout.strip() == (
        f"moved {db} to {target}: 1 pools, 2 connected hosts, 1 template-cache entries, 2 nodes, "
        f"{operations} finished operations (1 running ones not copied)"
    )
    assert mariadb.password not in moved.stdout + moved.stderr
    name = database_of(target)
    for table, sql in COMPARED.items():
        assert [tuple(row) for row in mariadb.rows(name, sql)] == expected[table], table
    assert mariadb.rows(name, "SELECT name FROM operations WHERE done = 0") == []

    service = start_service(
        ["management", "--database-url", target, "--database-password-file", str(secret)],
        tmp_path,
        "moved",
    )
    try:
        with service.channel() as channel:
            stub = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel)
            pool = stub.GetPool(lifecycle_pb2.PoolRef(pool_uuid=source.pool.uuid))
        assert pool == source.pool
    finally:
        assert service.terminate() == 0
    assert mariadb.password not in service.log()


def test_refuses_a_target_in_use(source: Source, mariadb: MariaDB, tmp_path: Path) -> None:
    db = copy_of(source, tmp_path / "src")
    target = mariadb.new_database()
    env = {"SPCS_DATABASE_PASSWORD": mariadb.password}
    assert migrate_db("--from-db", str(db), "--to", target, env=env).returncode == 0
    again = migrate_db("--from-db", str(db), "--to", target, env=env)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip() == (
        f"spcs migrate-db: {target} already holds pools, nodes or operations; spcs migrate-db "
        "never merges into a database in use: give it an empty database"
    )
    assert mariadb.password not in again.stderr


def test_refuses_a_source_a_live_management_uses(
    source: Source, mariadb: MariaDB, tmp_path: Path, services: list[Service]
) -> None:
    db = copy_of(source, tmp_path)  # tmp_path/m.db: where start_management keeps its database
    live = start_management(tmp_path, services)
    target = mariadb.new_database()
    env = {"SPCS_DATABASE_PASSWORD": mariadb.password}
    refused = migrate_db("--from-db", str(db), "--to", target, env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"spcs migrate-db: {db} is in use by a running spcs management (it holds {db}.lock); "
        "stop it first"
    )
    assert mariadb.rows(database_of(target), "SHOW TABLES") == []  # not even the schema
    assert live.terminate() == 0
    assert migrate_db("--from-db", str(db), "--to", target, env=env).returncode == 0


def test_no_management_starts_on_a_file_being_moved(source: Source, tmp_path: Path) -> None:
    db = copy_of(source, tmp_path)
    fd = lock_sqlite(db, exclusive=True)  # what spcs migrate-db holds while it copies
    try:
        started = run_spcs(["management", "--db", str(db), "--listen", "127.0.0.1:0"])
    finally:
        os.close(fd)
    assert started.returncode == 1
    assert f"{db} is being moved by spcs migrate-db" in started.stderr


def test_refuses_a_source_holding_leases(source: Source, mariadb: MariaDB, tmp_path: Path) -> None:
    db = copy_of(source, tmp_path)
    store = SqlState(db)
    store.take_leases([Hold("volume:x", EXCLUSIVE)], owner="elsewhere", label="copy", ttl=600)
    store.close()
    target = mariadb.new_database()
    refused = migrate_db(
        "--from-db", str(db), "--to", target, env={"SPCS_DATABASE_PASSWORD": mariadb.password}
    )
    assert refused.returncode == 1
    assert "holds 1 unexpired leases" in refused.stderr
    assert "stop every spcs management on it" in refused.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--to", "mysql+pymysql://spcs@127.0.0.1/x"], "--from"),
        (["--from-db", "/nonexistent/m.db", "--to", "mysql+pymysql://spcs@h/x"], "--from-db"),
        (["--from", "mysql+pymysql://spcs@h/x", "--to", "mysql+pymysql://spcs@h/y"], "--from"),
        (["--from", "postgresql://h/x", "--to", "mysql+pymysql://spcs@h/y"], "--from"),
        (["--from-db", "DB"], "--to"),
        (["--from-db", "DB", "--to", "sqlite:///other.db"], "--to"),
        (["--from-db", "DB", "--to", "mysql+pymysql://spcs@/x"], "--to"),
        (["--from-db", "DB", "--to", "mysql+pymysql://spcs:SeCrEt-9@h/x"], "--to"),
        (
            ["--from-db", "DB", "--to", "mysql+pymysql://spcs@h/x", "--to-password-file", "/nope"],
            "--to-password-file",
        ),
    ],
)
def test_bad_options_exit_2_naming_the_option(args: list[str], named: str, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    SqlState(db).close()
    result = migrate_db(*[str(db) if arg == "DB" else arg for arg in args])
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and result.stdout == ""
    assert "SeCrEt-9" not in result.stderr


def test_a_wrong_password_is_one_line_without_it(
    source: Source, mariadb: MariaDB, tmp_path: Path
) -> None:
    db = copy_of(source, tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_text("Not-The-Password-42\n")
    target = mariadb.new_database()
    result = migrate_db("--from-db", str(db), "--to", target, "--to-password-file", str(wrong))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Not-The-Password-42" not in result.stderr and mariadb.password not in result.stderr
