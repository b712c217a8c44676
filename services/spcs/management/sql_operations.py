"""Operations shared by every replica (`state.OperationStore`) in the `operations` table.

A row is claimed by inserting it (the primary key decides a race between replicas) or, for a
retry after a failure, by bumping its `attempt` under a row lock; every later write of the
owner names its attempt, so a replica that was presumed dead and taken over cannot overwrite
what another replica now runs. Heartbeats are the database's clock, which every replica shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.longrunning import operations_pb2
from sqlalchemy import Connection, delete, exc, insert, select, update

from spcs.management.schema import operations
from spcs.management.sql import Database, clock
from spcs.management.state import Claim, OperationRow

_COLUMNS = (
    operations.c.name,
    operations.c.fingerprint,
    operations.c.data,
    operations.c.owner,
    operations.c.attempt,
    operations.c.heartbeat,
    operations.c.cancel,
)


def _row(found: Any) -> OperationRow:  # a Row of _COLUMNS
    return OperationRow(
        name=found.name,
        fingerprint=found.fingerprint,
        operation=operations_pb2.Operation.FromString(found.data),
        owner=found.owner,
        attempt=int(found.attempt),
        heartbeat=float(found.heartbeat),
        cancel=bool(found.cancel),
    )


def _select(conn: Connection, name: str, *, lock: bool = False) -> OperationRow | None:
    query = select(*_COLUMNS).where(operations.c.name == name)
    found = conn.execute(query.with_for_update() if lock else query).first()
    return _row(found) if found is not None else None


def _state(op: operations_pb2.Operation, now: float) -> dict[str, object]:
    return {"done": int(op.done), "data": op.SerializeToString(), "updated": now}


class SqlOperations:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(
        self,
        name: str,
        fingerprint: str,
        operation: operations_pb2.Operation,
        owner: str,
        retry: Callable[[OperationRow], bool],
    ) -> Claim:
        def work(conn: Connection) -> Claim:
            now = clock(conn)
            ours = OperationRow(name, fingerprint, operation, owner, 1, now, False)
            found = _select(conn, name, lock=True)
            values = {
                **_state(operation, now),
                "fingerprint": fingerprint,
                "owner": owner,
                "heartbeat": now,
                "cancel": 0,
            }
            if found is None:
                conn.execute(insert(operations).values(name=name, attempt=1, created=now, **values))
                return Claim(True, ours)
            if not found.operation.done or not retry(found):
                return Claim(False, found)
            attempt = found.attempt + 1
            conn.execute(
                update(operations)
                .where(operations.c.name == name, operations.c.attempt == found.attempt)
                .values(attempt=attempt, created=now, **values)
            )
            return Claim(
                True,
                OperationRow(name, fingerprint, operation, owner, attempt, now, False),
                previous=found,
            )

        try:
            return self._db.write(work)
        except exc.IntegrityError:  # another replica inserted it between our read and insert
            return self._db.write(work)

    def unclaim(self, claim: Claim) -> None:
        row, previous = claim.row, claim.previous
        ours = (
            operations.c.name == row.name,
            operations.c.attempt == row.attempt,
            operations.c.owner == row.owner,
        )

        def work(conn: Connection) -> None:
            if previous is None:
                conn.execute(delete(operations).where(*ours))
                return
            conn.execute(
                update(operations)
                .where(*ours)
                .values(
                    **_state(previous.operation, clock(conn)),
                    fingerprint=previous.fingerprint,
                    owner=previous.owner,
                    attempt=previous.attempt,
                    heartbeat=previous.heartbeat,
                    cancel=int(previous.cancel),
                )
            )

        self._db.write(work)

    def save(self, name: str, attempt: int, owner: str, op: operations_pb2.Operation) -> bool:
        def work(conn: Connection) -> bool:
            now = clock(conn)
            written = conn.execute(
                update(operations)
                .where(
                    operations.c.name == name,
                    operations.c.attempt == attempt,
                    operations.c.owner == owner,
                )
                .values(heartbeat=now, **_state(op, now))
            )
            return bool(written.rowcount)

        return self._db.write(work)

    def beat(
        self, owner: str, running: Mapping[str, tuple[int, operations_pb2.Operation]]
    ) -> tuple[set[str], set[str]]:
        if not running:
            return set(), set()

        def work(conn: Connection) -> tuple[set[str], set[str]]:
            now = clock(conn)
            lost: set[str] = set()
            for name, (attempt, op) in running.items():
                written = conn.execute(
                    update(operations)
                    .where(
                        operations.c.name == name,
                        operations.c.attempt == attempt,
                        operations.c.owner == owner,
                        # the job may have ended (and been recorded) since this state was
                        # read: a beat never makes a finished operation running again
                        operations.c.done == 0,
                    )
                    .values(heartbeat=now, **_state(op, now))
                )
                if not written.rowcount:
                    lost.add(name)
            asked = conn.execute(
                select(operations.c.name).where(
                    operations.c.name.in_(list(running)),
                    operations.c.owner == owner,
                    operations.c.cancel != 0,
                )
            )
            return lost, {name for (name,) in asked} - lost

        return self._db.write(work)

    def row(self, name: str) -> OperationRow | None:
        return self._db.read(lambda conn: _select(conn, name))

    def page(self, done: bool | None, offset: int, size: int) -> list[OperationRow]:
        query = select(*_COLUMNS).order_by(operations.c.created, operations.c.name)
        if done is not None:
            query = query.where(operations.c.done == int(done))
        query = query.offset(offset).limit(size)
        return self._db.read(lambda conn: [_row(found) for found in conn.execute(query)])

    def request_cancel(self, name: str) -> OperationRow | None:
        def work(conn: Connection) -> OperationRow | None:
            conn.execute(
                update(operations)
                .where(operations.c.name == name, operations.c.done == 0)
                .values(cancel=1)
            )
            return _select(conn, name)

        return self._db.write(work)

    def delete(self, name: str) -> OperationRow | None:
        def work(conn: Connection) -> OperationRow | None:
            found = _select(conn, name, lock=True)
            if found is not None and found.operation.done:
                conn.execute(delete(operations).where(operations.c.name == name))
            return found

        return self._db.write(work)

    def take_over(
        self,
        stale_seconds: float | None,
        interrupt: Callable[[OperationRow], operations_pb2.Operation],
        owner: str,
    ) -> list[OperationRow]:
        def work(conn: Connection) -> list[OperationRow]:
            now = clock(conn)
            query = select(*_COLUMNS).where(operations.c.done == 0)
            if stale_seconds is not None:
                query = query.where(operations.c.heartbeat < now - stale_seconds)
            taken = [_row(found) for found in conn.execute(query.with_for_update())]
            for row in taken:
                conn.execute(
                    update(operations)
                    .where(operations.c.name == row.name, operations.c.attempt == row.attempt)
                    .values(attempt=row.attempt + 1, owner=owner, **_state(interrupt(row), now))
                )
            return taken

        return self._db.write(work)

    def prune(self, keep: int) -> int:
        def work(conn: Connection) -> int:
            old = conn.execute(
                select(operations.c.name)
                .where(operations.c.done == 1)
                .order_by(operations.c.updated.desc())
                .offset(keep)
                .limit(1000)
            ).all()
            if old:
                conn.execute(delete(operations).where(operations.c.name.in_([n for (n,) in old])))
            return len(old)

        return self._db.write(work)
