"""Time an RPC spent waiting on StorPool, for its log line.

The interceptor opens a tally per RPC; the StorPool facade adds each API call's duration to the
tally of the RPC it serves. The log line then shows how much of the RPC's time was StorPool's,
which tells an operator whether a slow call is spcs or the storage.
"""

from __future__ import annotations

import contextvars

# One mutable cell per RPC; None outside an RPC (job threads, start-up).
_TALLY: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "spcs_storpool_seconds", default=None
)


def open_tally() -> tuple[list[float], contextvars.Token[list[float] | None]]:
    cell = [0.0]
    return cell, _TALLY.set(cell)


def close_tally(token: contextvars.Token[list[float] | None]) -> None:
    _TALLY.reset(token)


def add(seconds: float) -> None:
    cell = _TALLY.get()
    if cell is not None:
        cell[0] += seconds
