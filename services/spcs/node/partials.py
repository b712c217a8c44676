"""What this node's jobs are writing on secondary storage, so that nothing partial outlives them.

The data mover writes a file on secondary storage as `.<name>.spcs-partial.<pid>.<n>` next to
its target and renames it into place at the end; on a failure or a cancel it removes it, but a
node killed mid-copy leaves it behind. A template backup also has a moment when its image is in
place but its template.properties is not. So each job records its target in the node's
database before writing and forgets it once the result is complete; when a job fails, and when
the node starts, whatever an unfinished job left is removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from spcs.common import errors, holds
from spcs.common.locks import KeyedLocks
from spcs.common.sqlite import Database
from spcs.node.secondary import Store

log = logging.getLogger(__name__)

PARTIAL_MARK = ".spcs-partial."
TABLE = """
    CREATE TABLE writing (
        operation TEXT NOT NULL,
        url TEXT NOT NULL,
        path TEXT NOT NULL,
        pid INTEGER NOT NULL,
        placed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (operation, url, path)
    )
"""


def partials_of(target: Path, pid: int | None = None) -> list[Path]:
    """The data mover's temporary files for `target` (of one process, or of any)."""
    pattern = f".{target.name}{PARTIAL_MARK}{'' if pid is None else f'{pid}.'}*"
    return sorted(target.parent.glob(pattern))


def remove_leftovers(target: Path, pid: int | None, placed: bool) -> int:
    """Remove the partial files of `target` (and `target` itself when `placed`: it is in place
    but the result it belongs to was never completed); returns how many were removed."""
    removed = 0
    for stale in partials_of(target, pid):
        stale.unlink(missing_ok=True)
        removed += 1
    if placed and target.exists():
        target.unlink()
        removed += 1
    return removed


class WriteJournal:
    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def writing(
        self, operation: str, url: str, relative: str, target: Path
    ) -> Iterator[Callable[[], None]]:
        """Record that `operation` writes `target` (`relative` in the store at `url`) for the
        block. The block calls the yielded `placed()` once the target is in place but the
        result is not yet complete; if the block fails, its leftovers are removed."""
        pid = os.getpid()
        key = (operation, url, relative)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO writing(operation, url, path, pid, placed) VALUES (?, ?, ?, ?, 0) "
                "ON CONFLICT(operation, url, path) DO UPDATE SET pid = excluded.pid, placed = 0",
                (*key, pid),
            )
        state = {"placed": False}

        def placed() -> None:
            state["placed"] = True
            with self._db.transaction() as tx:
                tx.execute(
                    "UPDATE writing SET placed = 1 WHERE operation = ? AND url = ? AND path = ?",
                    key,
                )

        try:
            yield placed
        except BaseException:
            removed = remove_leftovers(target, pid, state["placed"])
            if removed:
                log.info("removed %d file(s) of %s left by the failed copy", removed, target)
            raise
        finally:
            with self._db.transaction() as tx:
                tx.execute("DELETE FROM writing WHERE operation = ? AND url = ? AND path = ?", key)

    def clean(
        self, open_store: Callable[[str], AbstractContextManager[Store]], locks: KeyedLocks
    ) -> int:
        """Remove what jobs of earlier runs of this node left (run at start). An entry whose
        store cannot be reached now stays for the next start. Returns how many files went."""
        removed = 0
        for row in self._db.query("SELECT * FROM writing WHERE pid != ?", (os.getpid(),)):
            placed = bool(row["placed"])
            try:
                # a job of this run writing the same file again owns it now: only the old
                # run's partial files (named with its pid) are ours to remove then
                release = locks.acquire(
                    [holds.Hold(holds.secondary_file(row["url"], row["path"]), holds.EXCLUSIVE)],
                    "cleaning up after an interrupted job",
                )
            except errors.Conflict:
                release, placed = (lambda: None), False
            try:
                with open_store(row["url"]) as store:
                    target = store.resolve(row["path"], "path")
                    count = remove_leftovers(target, row["pid"], placed)
            except errors.SpcsError as error:
                log.warning(
                    "cannot clean %s in %s now (%s); trying again at the next start",
                    row["path"],
                    row["url"],
                    error.message,
                )
                continue
            finally:
                release()
            if count:
                log.warning(
                    "removed %d file(s) of %s left by interrupted job %s",
                    count,
                    target,
                    row["operation"],
                )
            removed += count
            with self._db.transaction() as tx:
                tx.execute(
                    "DELETE FROM writing WHERE operation = ? AND url = ? AND path = ?",
                    (row["operation"], row["url"], row["path"]),
                )
        return removed
