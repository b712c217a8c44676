"""The operations journal in SQLite: finished jobs stay readable, interrupted ones are known."""

from __future__ import annotations

import time
from collections.abc import Iterable

from google.longrunning import operations_pb2

from spcs.common.sqlite import Database


class SqliteJournal:
    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, name: str, fingerprint: str, operation: operations_pb2.Operation) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO operations(name, fingerprint, done, data, updated) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "fingerprint=excluded.fingerprint, done=excluded.done, data=excluded.data, "
                "updated=excluded.updated",
                (
                    name,
                    fingerprint,
                    int(operation.done),
                    operation.SerializeToString(),
                    time.time(),
                ),
            )

    def load(self) -> Iterable[tuple[str, str, operations_pb2.Operation]]:
        for row in self._db.query(
            "SELECT name, fingerprint, data FROM operations ORDER BY updated"
        ):
            yield row["name"], row["fingerprint"], operations_pb2.Operation.FromString(row["data"])

    def forget(self, name: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM operations WHERE name = ?", (name,))
