"""A small SQLite database with numbered migrations, shared by the services that keep state.

One connection, serialized by a lock (SQLite serializes writers anyway); WAL so readers (other
tools, an operator's `sqlite3`) do not block us. Each service passes its own migrations.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# The operations journal table every service's migrations include (see spcs.common.journal).
OPERATIONS_TABLE = """
    CREATE TABLE operations (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        done INTEGER NOT NULL,
        data BLOB NOT NULL,
        updated REAL NOT NULL
    )
"""


class Database:
    def __init__(self, path: Path, migrations: Sequence[str]) -> None:
        self.path = path
        self._migrations = tuple(migrations)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as error:
            raise DatabaseError(f"cannot open the database {path}: {error}") from None

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(self._migrations):
            raise DatabaseError(
                f"database {self.path} has schema {version}, newer than this spcs knows "
                f"({len(self._migrations)}); upgrade spcs or use another --db"
            )
        for number, script in enumerate(self._migrations[version:], start=version + 1):
            with self.transaction() as conn:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
            log.info("database %s migrated to schema %d", self.path, number)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class DatabaseError(Exception):
    """The database cannot be opened or has an unknown schema."""
