"""The management service's database connection, for SQLite and MariaDB/MySQL alike.

SQLAlchemy Core (no ORM) over the standard library's sqlite3 or PyMySQL, a pooled engine shared
by every thread. `Database` runs one unit of work in one transaction: writes are retried on a
deadlock or a lock wait (MariaDB) or a busy file (SQLite); a database that does not answer is
`errors.Unavailable` naming it (never with its password: URLs are shown with
`render_as_string(hide_password=True)`, and statement parameters, which hold API tokens, are
never put into errors or logs). `migrate` brings the schema to the newest Alembic revision when
the store opens.

SQLite as before: WAL, foreign keys, a 5 s busy timeout; writes begin with `BEGIN IMMEDIATE`
(and queue on a lock in this process), so a write never fails half-way on a lock upgrade.
MariaDB/MySQL: utf8mb4, strict SQL mode, READ COMMITTED, a ping before using a connection that
was idle for a while.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from pymysql.constants import CLIENT
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url

from spcs.common import errors, upstream_time
from spcs.common.sqlite import DatabaseError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
MYSQL_SCHEMES = ("mysql+pymysql", "mariadb+pymysql")
BUSY_MS = 5000
IDLE_PING_SECONDS = 5.0
# The schema spcs's SQLite files had before Alembic (PRAGMA user_version of its last raw
# migration), which is revision 0001; files Alembic manages get ALEMBIC_USER_VERSION, so that
# an older spcs refuses them ("newer than this spcs knows") instead of misreading them.
LEGACY_USER_VERSION = 3
LEGACY_REVISION = "0001"
ALEMBIC_USER_VERSION = 100
# MariaDB errors after which a transaction is simply run again: deadlock, lock wait timeout.
RETRIED_MYSQL_ERRORS = frozenset({1213, 1205})
ATTEMPTS = 5
MIGRATE_LOCK = "spcs-schema-migration"


def database_url(value: str) -> URL:
    """A --database-url: `sqlite:///PATH` or `mysql+pymysql://USER@HOST[:PORT]/DATABASE`
    (also `mariadb+pymysql://`). Errors never repeat a password the URL may hold."""
    try:
        url = make_url(value.strip())
    except (exc.ArgumentError, ValueError):
        raise ValueError(
            "not a database URL; use sqlite:///PATH or mysql+pymysql://USER@HOST/DATABASE"
        ) from None
    scheme = url.drivername
    if scheme in SQLITE_SCHEMES:
        if not url.database or url.database == ":memory:":
            raise ValueError("an SQLite URL needs a file: sqlite:///PATH (sqlite:////abs/path)")
        return url
    if scheme not in MYSQL_SCHEMES:
        raise ValueError(
            f"{scheme}:// is not supported; use sqlite:///PATH, or mysql+pymysql:// (also "
            "mariadb+pymysql://) for MariaDB/MySQL"
        )
    if not url.host or not url.database:
        raise ValueError(
            f"{url.render_as_string(hide_password=True)} needs a host and a database: "
            "mysql+pymysql://USER@HOST[:PORT]/DATABASE"
        )
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def shown(url: URL) -> str:
    """How a database is named in logs and errors: an SQLite file's path, or the URL with its
    password masked."""
    if is_sqlite(url) and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def open_engine(url: URL, *, autocommit: bool = False) -> Engine:
    """The engine of `url`; with `autocommit` (MariaDB/MySQL), one whose connections commit
    each statement, for reads and single-statement writes: no COMMIT or reset round trip."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": BUSY_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    engine = create_engine(
        url,
        hide_parameters=True,
        # connections are opened as needed and then kept, up to 24 an engine (48 a replica,
        # with the autocommit engine): no overflow connection is opened and closed again per
        # call under load (that cost more CPU than the call's statements); the most recently
        # used is taken first, so the others grow idle and are pinged before their next use
        pool_size=24,
        max_overflow=0,
        pool_use_lifo=True,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        # no ROLLBACK when a connection goes back to the pool: a transaction of `write` has
        # ended in COMMIT or ROLLBACK already, and autocommit connections have none
        pool_reset_on_return=None,
        connect_args={
            # FOUND_ROWS as SQLAlchemy sets it (rowcount = rows matched); several statements
            # in one round trip for `Database.batch` (parameters are still escaped by PyMySQL)
            "client_flag": CLIENT.FOUND_ROWS | (CLIENT.MULTI_STATEMENTS if autocommit else 0),
            "connect_timeout": 10,
            "read_timeout": 60,
            "write_timeout": 60,
            "init_command": "SET SESSION sql_mode = 'TRADITIONAL', innodb_lock_wait_timeout = 10",
        },
    )
    if autocommit:
        event.listen(engine, "connect", _read_committed)
    event.listen(engine, "checkout", _ping_when_idle)
    event.listen(engine, "checkin", _used)
    event.listen(engine, "after_cursor_execute", _count)
    if autocommit:
        # each statement has committed itself: SQLAlchemy's COMMIT or ROLLBACK when the
        # connection closes would be a round trip for nothing (PyMySQL sends them anyway)
        for name in ("do_commit", "do_rollback"):
            setattr(engine.dialect, name, _nothing)
    return engine


def _read_committed(dbapi_connection: Any, _record: object) -> None:
    """The autocommit engine's transactions (`Database.batch`) read what is committed, as
    the other engine's do (SQLAlchemy sets only autocommit on it, not an isolation level)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cursor.close()


def _nothing(_dbapi_connection: Any) -> None:
    return None


def _count(conn: Connection, *_args: object) -> None:
    ran = conn.info.get("spcs_ran")
    if ran is not None:
        ran[0] += 1


def _ping_when_idle(dbapi_connection: Any, record: Any, _proxy: object) -> None:
    """A connection idle for IDLE_PING_SECONDS is pinged before use, and replaced if the server
    dropped it (a restart, wait_timeout); a busy one is not, which saves a round trip per
    transaction (a ping on every checkout costs as much as a statement)."""
    if time.monotonic() - record.info.get("used", 0.0) < IDLE_PING_SECONDS:
        return
    try:
        dbapi_connection.ping(reconnect=False)
    except Exception:
        raise exc.DisconnectionError() from None  # the pool connects again


def _used(_dbapi_connection: Any, record: Any) -> None:
    record.info["used"] = time.monotonic()


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    # transactions are begun by _sqlite_begin, not by the sqlite3 module's own rules
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", f"busy_timeout={BUSY_MS}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("spcs_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _reason(error: exc.SQLAlchemyError) -> str:
    """The driver's own message (SQLAlchemy's text adds the statement and a link)."""
    if isinstance(error, exc.DBAPIError) and error.orig is not None:
        return str(error.orig)
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _retryable(error: exc.DBAPIError) -> bool:
    args = getattr(error.orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in RETRIED_MYSQL_ERRORS
    message = str(error.orig).lower()
    return "database is locked" in message or "database is busy" in message


UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)


def _run_batch(conn: Connection, statements: str, params: Sequence[object], counted: int) -> int:
    """`Database.batch` on one connection, through its DBAPI cursor: SQLAlchemy's result
    reads only a statement's first result."""
    dbapi = conn.dialect.loaded_dbapi
    fairy = conn.connection
    cursor = fairy.cursor()
    try:
        cursor.execute(statements, tuple(params))
        for _ in range(counted):
            cursor.nextset()
        count = int(cursor.rowcount)
        while cursor.nextset():
            pass
        cursor.close()
        return count
    except dbapi.Error as error:
        gone = conn.dialect.is_disconnect(error, fairy.dbapi_connection, cursor)
        with contextlib.suppress(dbapi.Error):
            cursor.close()
        if not gone:
            try:  # the server stopped at the failed statement, inside the transaction
                undo = fairy.cursor()
                undo.execute("ROLLBACK")
                undo.close()
            except dbapi.Error:
                gone = True
        if gone:
            conn.invalidate()
        raise exc.DBAPIError.instance(
            statements, None, error, dbapi.Error, connection_invalidated=gone
        ) from None


def clock(conn: Connection) -> float:
    """The database's clock, which every replica shares (SQLite: this host's)."""
    if conn.dialect.name == "sqlite":
        return time.time()
    return float(conn.execute(text("SELECT UNIX_TIMESTAMP(NOW(6))")).scalar_one())


class Database:
    """A pooled engine and the transactions the store runs on it."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.name = shown(url)
        self.sqlite = is_sqlite(url)
        self.engine = open_engine(url)
        # reads (each one statement, seeing what is committed) and one-statement writes
        self.single = self.engine if self.sqlite else open_engine(url, autocommit=True)
        # SQLite has one writer at a time: this process's writers queue here, not in the busy
        # handler's sleeps (other processes on the same file still meet the busy timeout)
        self._writing: contextlib.AbstractContextManager[object] = (
            threading.Lock() if self.sqlite else contextlib.nullcontext()
        )

    def read(self, work: Callable[[Connection], T]) -> T:
        """`work`'s statements, each seeing what is committed when it runs."""
        with upstream_time.timed(upstream_time.DATABASE):
            return self._read(work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        for attempt in (1, 2):
            try:
                with self.single.connect() as conn:
                    return work(conn)
            except exc.DBAPIError as error:
                if attempt == 1 and error.connection_invalidated:
                    continue  # a connection the server had dropped: once more, on a new one
                if isinstance(error, UNAVAILABLE):
                    raise self.unavailable(error) from None
                raise
            except exc.TimeoutError as error:
                raise self.unavailable(error) from None
        raise AssertionError("unreachable")

    def write(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction, committed when it returns; run again (from the start)
        after a deadlock or lock timeout, or when the server had dropped the connection before
        the transaction's first statement (nothing of it was done)."""
        with upstream_time.timed(upstream_time.DATABASE):
            return self._write(work)

    def _write(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            ran = [0]  # statements of this attempt that completed (`_count` adds to it)
            try:
                with self._writing, self.engine.connect() as conn:
                    conn.execution_options(spcs_write=True)
                    conn.info["spcs_ran"] = ran
                    try:
                        with conn.begin():
                            return work(conn)
                    finally:  # the counter belongs to this attempt, not to the connection
                        conn.info.pop("spcs_ran", None)
            except exc.DBAPIError as error:
                dropped = bool(error.connection_invalidated) and ran[0] == 0
                if attempt < ATTEMPTS and (_retryable(error) or dropped):
                    time.sleep(0.01 * attempt)
                    continue
                if isinstance(error, UNAVAILABLE):
                    raise self.unavailable(error) from None
                raise
            except exc.TimeoutError as error:  # no connection free in the pool
                raise self.unavailable(error) from None
        raise AssertionError("unreachable")

    def write_one(self, work: Callable[[Connection], T]) -> T:
        """`work`, one statement that commits by itself (MariaDB) or a transaction (SQLite)."""
        if self.sqlite:
            return self.write(work)
        return self.read(work)

    def batch(self, statements: str, params: Sequence[object], counted: int) -> int:
        """MariaDB/MySQL: `statements`, a transaction that begins and commits itself, sent in
        one round trip; the rows the `counted`-th statement (from 0) changed. After an error the
        transaction is rolled back (or the connection dropped) and the batch is sent again, as
        `write` does, after a deadlock, a lock wait or a dropped connection, so it must be
        safe to run twice (its first run may have committed before the connection broke)."""
        if self.sqlite:
            raise ValueError("a batch of statements is for MariaDB/MySQL, not SQLite")
        with upstream_time.timed(upstream_time.DATABASE):
            return self._batch(statements, params, counted)

    def _batch(self, statements: str, params: Sequence[object], counted: int) -> int:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.single.connect() as conn:
                    return _run_batch(conn, statements, params, counted)
            except exc.DBAPIError as error:
                if attempt < ATTEMPTS and (_retryable(error) or error.connection_invalidated):
                    time.sleep(0.01 * attempt)
                    continue
                if isinstance(error, UNAVAILABLE):
                    raise self.unavailable(error) from None
                raise
            except exc.TimeoutError as error:
                raise self.unavailable(error) from None
        raise AssertionError("unreachable")

    def unavailable(self, error: exc.SQLAlchemyError) -> errors.Unavailable:
        return errors.Unavailable(
            f"the state database {self.name} did not answer: {_reason(error)}; "
            "retry when it is back"
        )

    def close(self) -> None:
        self.engine.dispose()
        self.single.dispose()


# ---- migrations -------------------------------------------------------------------------------


def migrate(db: Database) -> None:
    """Bring the schema to the newest revision (creating it in an empty database); an SQLite
    file of spcs before Alembic is stamped 0001 first. A database whose revision this spcs does
    not know (made by a newer one) is refused, as is one that cannot be opened."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its INFO lines: the migrations' docstrings
    try:
        with db.engine.connect() as conn:
            conn.execution_options(spcs_write=True)
            with _migration_lock(conn), conn.begin():
                _migrate(conn, db.name)
    except exc.SQLAlchemyError as error:
        raise DatabaseError(f"cannot open the database {db.name}: {_reason(error)}") from None
    finally:
        alembic_log.setLevel(level)


@contextlib.contextmanager
def _migration_lock(conn: Connection) -> Any:
    """On MariaDB/MySQL, one replica migrates at a time (DDL there is not transactional);
    SQLite's BEGIN IMMEDIATE serializes already."""
    if conn.dialect.name == "sqlite":
        yield
        return
    got = conn.execute(text("SELECT GET_LOCK(:name, 60)"), {"name": MIGRATE_LOCK}).scalar()
    conn.commit()
    if got != 1:
        raise DatabaseError("another replica has been migrating the schema for 60 s")
    try:
        yield
    finally:
        conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATE_LOCK})
        conn.commit()


def _migrate(conn: Connection, name: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn  # what migrations/env.py migrates
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    context = MigrationContext.configure(conn)
    current = context.get_current_revision()
    if current is None:
        current = _legacy(conn, context, script, name)
    try:
        if current is not None:
            script.get_revision(current)
    except CommandError:
        raise DatabaseError(
            f"database {name} has schema {current}, newer than this spcs knows (it knows up "
            f"to {head}); upgrade spcs or use another --database-url"
        ) from None
    if current != head:
        command.upgrade(config, "head")
        log.info("database %s migrated to schema %s (from %s)", name, head, current or "none")
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA user_version = {ALEMBIC_USER_VERSION}")


def _legacy(
    conn: Connection, context: MigrationContext, script: ScriptDirectory, name: str
) -> str | None:
    """An SQLite file of spcs before Alembic: its raw schema 3 is revision 0001."""
    if conn.dialect.name != "sqlite":
        return None
    version = conn.exec_driver_sql("PRAGMA user_version").scalar()
    if not version:
        return None
    if version == LEGACY_USER_VERSION:
        context.stamp(script, LEGACY_REVISION)
        log.info("database %s: schema %d of spcs before Alembic is 0001", name, version)
        return LEGACY_REVISION
    if version < LEGACY_USER_VERSION:
        raise DatabaseError(
            f"database {name} has schema {version} of an early spcs; start the spcs that made "
            "it once (it migrates the file), then this one"
        )
    raise DatabaseError(
        f"database {name} has schema {version}, newer than this spcs knows; upgrade spcs or "
        "use another --database-url"
    )
