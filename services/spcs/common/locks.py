"""Per-key try-locks: a second conflicting operation on the same object fails at once.

Handlers never wait for a lock (a blocked worker thread would turn one slow volume into a
server-wide stall); they get `Conflict` (ABORTED) naming what holds the key, and the caller
retries with backoff. Leases are in memory: after a restart nothing is held, and operations
converge from the state StorPool reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from spcs.common.errors import Conflict
from spcs.common.logs import REQUEST_ID


@dataclass
class Lease:
    operation: str
    request_id: str
    started: float = field(default_factory=time.monotonic)


class KeyedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, Lease] = {}

    @contextmanager
    def hold(self, *keys: str, operation: str) -> Iterator[None]:
        """Hold every key for the block, or raise Conflict without holding any."""
        release = self.acquire(*keys, operation=operation)
        try:
            yield
        finally:
            release()

    def acquire(self, *keys: str, operation: str) -> Callable[[], None]:
        """Take every key or raise Conflict; returns the function that releases them."""
        wanted = sorted(set(keys))
        with self._guard:
            for key in wanted:
                lease = self._held.get(key)
                if lease is not None:
                    age = time.monotonic() - lease.started
                    raise Conflict(
                        f"{lease.operation} on {key} is already in progress (request "
                        f"{lease.request_id}, {age:.0f}s); retry when it has finished"
                    )
            for key in wanted:
                self._held[key] = Lease(operation, REQUEST_ID.get())

        def release() -> None:
            with self._guard:
                for key in wanted:
                    self._held.pop(key, None)

        return release

    def held(self) -> dict[str, Lease]:
        with self._guard:
            return dict(self._held)
