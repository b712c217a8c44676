"""`spcs management` on MariaDB (`--database-url`, `--database-password-file`) with the emulator
and two nodes (tests/stacks.py): what the gRPC calls change is in MariaDB's tables, a database
that goes away makes calls UNAVAILABLE naming it, the password is in no log and no error, and
the database and user that docs/deploy.md has the reader create are all the service needs."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import grpc
import pytest

from spcs.v1 import lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, rpc_error, running_stack
from tests.stacks import MariaDB, mariadb_installed, mariadb_server
from tests.support import REPO


def own_user(mariadb: MariaDB, url: str) -> tuple[str, str, str]:
    """A user of this test's own on the database at `url` (so the test may drop it): its URL,
    name and password."""
    database = url.rsplit("/", 1)[1]
    user, password = f"e2e_{secrets.token_hex(4)}", secrets.token_hex(16)
    with mariadb.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        cursor.execute(f"GRANT ALL PRIVILEGES ON {database}.* TO '{user}'@'127.0.0.1'")
    return url.replace("spcs@", f"{user}@"), user, password


def drop_user(mariadb: MariaDB, user: str) -> None:
    """The user is gone and its connections are cut: the database is away for the service."""
    with mariadb.root() as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP USER '{user}'@'127.0.0.1'")
        cursor.execute("SELECT id FROM information_schema.processlist WHERE user = %s", (user,))
        for (connection,) in cursor.fetchall():
            cursor.execute(f"KILL {int(connection)}")


def test_management_on_mariadb(mariadb: MariaDB, tmp_path: Path):
    url, user, password = own_user(mariadb, mariadb.new_database())
    database = url.rsplit("/", 1)[1]
    password_file = tmp_path / "database.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    args = ["--database-url", url, "--database-password-file", str(password_file)]
    workdir = tmp_path / "stack"
    with running_stack(workdir, management_args=args) as mgmt:  # InitializePool, AttachZone
        pool = mgmt.pool_uuid
        volume = mgmt.create_volume(64 * MIB)
        assert volume.path and any(v.size == 64 * MIB for v in mgmt.api.volumes())

        def rows(sql: str) -> list[tuple]:
            return mariadb.rows(database, sql)

        assert rows("SELECT uuid, state, api_token FROM pools") == [
            (pool, lifecycle_pb2.POOL_STATE_UP, mgmt.stack.emulator.token)
        ]
        assert rows("SELECT pool_uuid, host_id FROM pool_hosts ORDER BY host_id") == [
            (pool, "host-1"),
            (pool, "host-2"),
        ]
        assert [r[0] for r in rows("SELECT host_id FROM nodes ORDER BY host_id")] == [
            "host-1",
            "host-2",
        ]
        assert rows("SELECT version_num FROM alembic_version") == [("0004",)]
        assert not (workdir / "management.db").exists()  # --db is not used

        drop_user(mariadb, user)
        error = rpc_error(mgmt.lifecycle.GetPool, lifecycle_pb2.PoolRef(pool_uuid=pool))
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        shown = url.replace(f"{user}@", f"{user}:***@")
        assert error.details().startswith(f"the state database {shown} did not answer: ")
        assert "Access denied" in error.details() and password not in error.details()
        management_log = mgmt.stack.management.log_path
    logs = {path.name: path.read_text(errors="replace") for path in workdir.rglob("*.log")}
    logs |= {path.name: path.read_text(errors="replace") for path in workdir.rglob("*.stderr")}
    assert f"state database: {shown}" in logs[management_log.name]
    assert [name for name, text in logs.items() if password in text] == []


HA_SECTION = "## High availability: replicas on a shared database"


def documented_statements() -> list[str]:
    """The SQL statements of the HA section of docs/deploy.md, as the page shows them."""
    page = (REPO / "docs" / "deploy.md").read_text()
    section = page.split(HA_SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block is not None, f"no ```sql block in {HA_SECTION!r} of docs/deploy.md"
    return [line for line in block[1].splitlines() if line.strip()]


def test_the_documented_database_and_grants_are_enough(tmp_path: Path):
    if not mariadb_installed():
        pytest.skip("mariadb-server is not installed")
    statements = documented_statements()
    assert any("GRANT" in s for s in statements) and "CHANGE-ME" in " ".join(statements)
    password = secrets.token_hex(12)
    with mariadb_server(tmp_path / "db", bare=True) as server:
        with server.root() as conn, conn.cursor() as cursor:
            for statement in statements:  # as root, with the password replaced
                cursor.execute(statement.replace("CHANGE-ME", password))
        password_file = tmp_path / "database.password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        url = f"mysql+pymysql://spcs@127.0.0.1:{server.port}/spcs"
        args = ["--database-url", url, "--database-password-file", str(password_file)]
        with running_stack(tmp_path / "stack", management_args=args) as mgmt:
            volume = mgmt.create_volume(8 * MIB)
            snapshot = mgmt.take_snapshot(volume.path)
            snapshot.store.CopyFrom(mgmt.primary())
            done = mgmt.copy(
                types_pb2.DataObject(snapshot=snapshot),
                types_pb2.DataObject(
                    snapshot=types_pb2.Snapshot(
                        uuid=snapshot.uuid, path="snapshots/2/9", store=mgmt.secondary()
                    )
                ),
            )
            assert done.kind == "snapshot-to-secondary"
            rows = server.rows("spcs", "SELECT COUNT(*) FROM operations WHERE done = 1")
            assert rows == [(1,)]
            assert server.rows("spcs", "SELECT COUNT(*) FROM pools") == [(1,)]


def test_connections_the_database_dropped_are_replaced(mariadb: MariaDB, tmp_path: Path):
    """The server cuts every connection of the service (a restart, a failover of a proxy):
    a call meets at most one UNAVAILABLE and the next call works, on new connections."""
    url, user, password = own_user(mariadb, mariadb.new_database())
    password_file = tmp_path / "database.password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    args = ["--database-url", url, "--database-password-file", str(password_file)]
    with running_stack(tmp_path / "stack", management_args=args) as mgmt:
        mgmt.create_volume(MIB)
        with mariadb.root() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT id FROM information_schema.processlist WHERE user = %s", (user,))
            cut = [int(connection) for (connection,) in cursor.fetchall()]
            for connection in cut:
                cursor.execute(f"KILL {connection}")
        assert cut
        failures = []
        for _ in range(3):
            try:
                volume = mgmt.create_volume(MIB)
                break
            except grpc.RpcError as error:
                failures.append(error.code())
        else:
            raise AssertionError(f"no call worked after the cut: {failures}")
        assert failures in ([], [grpc.StatusCode.UNAVAILABLE]), failures
        assert volume.path
        assert mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=mgmt.pool_uuid)).name
