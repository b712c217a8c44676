"""Time an RPC spent waiting on StorPool and on the state database, for its log line.

The interceptor opens a tally per RPC; the StorPool facade adds each API call's duration to the
tally of the RPC it serves, the management state database each transaction's. The log line then
shows how much of the RPC's time was StorPool's and the database's, which tells an operator
whether a slow call is spcs, the storage or the database.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

STORPOOL, DATABASE = 0, 1

# One mutable cell per RPC (seconds on STORPOOL, on DATABASE); None outside an RPC (job
# threads, start-up).
_TALLY: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "spcs_upstream_seconds", default=None
)


def open_tally() -> tuple[list[float], contextvars.Token[list[float] | None]]:
    cell = [0.0, 0.0]
    return cell, _TALLY.set(cell)


def close_tally(token: contextvars.Token[list[float] | None]) -> None:
    _TALLY.reset(token)


def add(seconds: float, upstream: int = STORPOOL) -> None:
    cell = _TALLY.get()
    if cell is not None:
        cell[upstream] += seconds


@contextmanager
def timed(upstream: int) -> Iterator[None]:
    """The block's time, added to the RPC's tally of `upstream`."""
    if _TALLY.get() is None:
        yield
        return
    started = time.monotonic()
    try:
        yield
    finally:
        add(time.monotonic() - started, upstream)
