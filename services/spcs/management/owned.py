"""What a copy makes for itself, and the one rule for removing it.

A copy may create StorPool objects on its way: the volume it fills, a point-in-time snapshot
it reads, a download volume, a template's cache snapshot. `owning` scopes each: when the copy
fails or is cancelled, an object this copy created is removed (never one that was there before:
that is the caller's); a scratch object (point-in-time snapshot, download volume) is removed
when the copy succeeds too. Removal failing never hides the copy's own error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from spcs.common import errors

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Owned(Generic[T]):
    obj: T
    what: str  # for the log: "volume ~gid", "template cache snapshot ..."
    remove: Callable[[], object]
    created: bool = True  # False: it existed before this copy (it is left alone on failure)
    scratch: bool = False  # removed when the copy ends, whatever the outcome


@contextmanager
def owning(owned: Owned[T]) -> Iterator[T]:
    try:
        yield owned.obj
    except BaseException:
        if owned.created or owned.scratch:
            _remove(owned)
        raise
    if owned.scratch:
        owned.remove()


def _remove(owned: Owned[T]) -> None:
    try:
        owned.remove()
    except errors.SpcsError as error:
        # the copy's own error is what the caller needs; this one goes to the log
        log.warning("could not remove %s after the copy failed: %s", owned.what, error.message)
