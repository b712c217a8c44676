"""Records an RPC used from a replica's cache before the shared database confirmed them.

On a shared database a management replica keeps its pool records with their versions and must
not act on one another replica has changed. Reading the version on every call costs a round
trip; instead, an RPC that declares holds reads the cached record unconfirmed, and the lease
its holds take confirms the versions in the same round trip (`sql_state.SqlState`). An RPC
that ends without taking a lease, or with an error, has them confirmed at its end. A record
found changed raises `Stale` before anything was done under it (a handler changes nothing
before it holds what it changes), and the RPC runs again, reading the new record.

A store adds what it read with `note`; outside an RPC that declares holds (job threads,
start-up, reads) there is no scope and the store confirms at once, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from spcs.common import errors

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3  # a record that changes under every run of an RPC is changing non-stop


class Stale(Exception):
    """A record the RPC used had changed: run the RPC again."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass
class Scope:
    """One run of an RPC: versions used but not yet confirmed, and those confirmed."""

    pending: dict[str, int] = field(default_factory=dict)
    confirmed: dict[str, int] = field(default_factory=dict)
    # the store's check of pending versions (raises Stale); set by the store that noted them
    confirm: Callable[[dict[str, int]], None] | None = None

    def note(self, key: str, version: int, confirm: Callable[[dict[str, int]], None]) -> None:
        if self.confirmed.get(key) != version:
            self.pending[key] = version
            self.confirm = confirm

    def take(self) -> dict[str, int]:
        """The pending versions, for a store to confirm with its next statement; they count
        as confirmed once `confirmed_now` is called."""
        return dict(self.pending)

    def confirmed_now(self, versions: dict[str, int]) -> None:
        for key, version in versions.items():
            if self.pending.get(key) == version:
                del self.pending[key]
            self.confirmed[key] = version

    def finish(self) -> None:
        if self.pending and self.confirm is not None:
            versions = self.take()
            self.confirm(versions)
            self.confirmed_now(versions)


_SCOPE: ContextVar[Scope | None] = ContextVar("spcs_unconfirmed", default=None)


def current() -> Scope | None:
    return _SCOPE.get()


@contextmanager
def _scoped() -> Iterator[Scope]:
    scope = Scope()
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def run(call: Callable[[], T], name: str) -> T:
    """`call` (an RPC's handler) with unconfirmed reads allowed; run again when one was stale.
    Its versions are confirmed before it returns, and before its error is raised (an error
    decided on a stale record, such as a pool in maintenance that another replica has just
    enabled, is not the answer)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with _scoped() as scope:
                try:
                    reply = call()
                except Stale:
                    raise
                except Exception:
                    scope.finish()
                    raise
                scope.finish()
                return reply
        except Stale as stale:
            if attempt == ATTEMPTS:
                raise errors.Conflict(
                    f"{stale.what} changed on another replica during each of {ATTEMPTS} runs "
                    f"of {name}; retry when it has settled"
                ) from None
            log.info(
                "%s used %s, which another replica had changed: running it again", name, stale.what
            )
    raise AssertionError("unreachable")
