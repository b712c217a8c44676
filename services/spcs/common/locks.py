"""Per-key try-locks with shared and exclusive holds: a conflicting operation fails at once.

Handlers never wait for a lock (a blocked worker thread would turn one slow volume into a
server-wide stall); they get `Conflict` (ABORTED) naming what holds the key, and the caller
retries with backoff. Shared holds of one key are counted, so any number of readers run
together; an exclusive hold needs the key free. Which operation takes which holds is declared
in `spcs.common.holds`. Leases are in memory: after a restart nothing is held, and operations
converge from the state StorPool reports.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from spcs.common import holds as declared
from spcs.common import metrics
from spcs.common.errors import Conflict
from spcs.common.holds import EXCLUSIVE, Hold, Mode
from spcs.common.logs import REQUEST_ID

# a waiting job tries again after 50 ms, then less and less often, at least once a second
WAIT_POLL_SECONDS = (0.05, 1.0)


@dataclass
class Lease:
    operation: str
    request_id: str
    mode: Mode
    started: float = field(default_factory=time.monotonic)
    owner: str = ""  # the replica holding it, for leases kept in a shared database


def merged(wanted: Iterable[Hold]) -> dict[str, Mode]:
    """One mode per key: exclusive wins when an operation names a key twice."""
    modes: dict[str, Mode] = {}
    for hold in wanted:
        if modes.get(hold.key) is not EXCLUSIVE:
            modes[hold.key] = hold.mode
    return modes


class Locks(abc.ABC):
    """The lock manager seam: `KeyedLocks` in this process, or leases in a shared database
    (`spcs.management.leases.LeasedLocks`) so that every replica sees every hold."""

    @contextmanager
    def hold(
        self, operation: str, *, label: str | None = None, **objects: str | Iterable[str] | None
    ) -> Iterator[None]:
        """Hold what the table declares for `operation` on `objects` (role=key) for the block,
        or raise Conflict without holding anything."""
        release = self.acquire(declared.holds(operation, **objects), label or operation)
        try:
            yield
        finally:
            release()

    def acquire(self, wanted: Iterable[Hold], operation: str) -> Callable[[], None]:
        """Take every hold or raise Conflict; returns the function that releases them."""
        return self._counted(list(wanted), operation, refusal=True)

    @abc.abstractmethod
    def _take(self, wanted: list[Hold], operation: str) -> Callable[[], None]:
        """`acquire` itself, in this lock manager."""

    def _counted(self, wanted: list[Hold], operation: str, *, refusal: bool) -> Callable[[], None]:
        """`_take`, with the metrics: holds held, and refusals by operation (the first word of
        its label: a table entry or a copy kind, never an object)."""
        try:
            release = self._take(wanted, operation)
        except Conflict:
            if refusal:
                metrics.HOLD_CONFLICTS.labels(operation.split(" ", 1)[0]).inc()
            raise
        count = len(merged(wanted))
        metrics.HOLDS_HELD.inc(count)
        once = threading.Lock()

        def counted_release() -> None:
            if once.acquire(blocking=False):
                metrics.HOLDS_HELD.dec(count)
            release()

        return counted_release

    def waiting(
        self,
        wanted: Iterable[Hold],
        operation: str,
        check: Callable[[], None],
    ) -> Callable[[], None]:
        """Take every hold, waiting while another operation has them: for job threads only,
        never an RPC's. `check()` runs before each try and raises to give up (a cancel)."""
        holds = list(wanted)
        poll = WAIT_POLL_SECONDS[0]
        while True:
            check()
            try:
                return self._counted(holds, operation, refusal=False)  # it waits: no refusal
            except Conflict:
                time.sleep(poll)
                poll = min(poll * 1.5, WAIT_POLL_SECONDS[1])


class KeyedLocks(Locks):
    """Holds kept in this process's memory (the node; a single management service)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, list[Lease]] = {}

    def _take(self, wanted: list[Hold], operation: str) -> Callable[[], None]:
        modes = merged(wanted)
        with self._guard:
            for key, mode in sorted(modes.items()):
                blockers = [
                    lease
                    for lease in self._held.get(key, ())
                    if mode is EXCLUSIVE or lease.mode is EXCLUSIVE
                ]
                if blockers:
                    raise Conflict(conflict_message(operation, key, mode, blockers))
            leases = {key: Lease(operation, REQUEST_ID.get(), mode) for key, mode in modes.items()}
            for key, lease in leases.items():
                self._held.setdefault(key, []).append(lease)

        def release() -> None:
            with self._guard:
                for key, lease in leases.items():
                    held = self._held.get(key, [])
                    if lease in held:
                        held.remove(lease)
                    if not held:
                        self._held.pop(key, None)

        return release

    def held(self) -> dict[str, list[Lease]]:
        with self._guard:
            return {key: list(leases) for key, leases in self._held.items()}


def conflict_message(operation: str, key: str, mode: Mode, blockers: list[Lease]) -> str:
    """What a conflicting `operation` is told: the first holder (its label, request, replica
    when it has one, and for how long it has held the key) and how many more there are."""
    first = blockers[0]
    age = time.monotonic() - first.started
    more = f" and {len(blockers) - 1} more" if len(blockers) > 1 else ""
    replica = f", replica {first.owner}" if first.owner else ""
    return (
        f"{operation} needs {key} {mode.value}, but {first.operation} holds it {first.mode.value} "
        f"(request {first.request_id}{replica}, {age:.0f}s){more}; retry when it has finished"
    )


# the names these had before they were shared with the lease store
_merged = merged
_conflict_message = conflict_message
