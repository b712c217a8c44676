"""Refusals shared by several operations: snapshots still recovering from a remote location, and
snapshots still exported to one (see `spcs.emulator.remote`)."""

from __future__ import annotations

from spcs.emulator.errors import ApiError, invalid
from spcs.emulator.model import Volume


def recovering_error(snap: Volume) -> ApiError:
    return invalid(
        f"snapshot {snap.ref} is still recovering from location {snap.remote_location}; "
        "wait until recoveringFromRemote is false"
    )


def check_recovered(snap: Volume) -> None:
    """A snapshot whose bytes are still being fetched can not be read from: not attached,
    cloned, reverted to or exported."""
    if snap.recovering:
        raise recovering_error(snap)


def check_not_exported(snap: Volume) -> None:
    """An exported snapshot can not be deleted: remote locations may still be fetching it
    (CloudStack's plugin looks for "still exported" in the reason)."""
    if snap.exports:
        where = "location" if len(snap.exports) == 1 else "locations"
        raise invalid(
            f"snapshot {snap.ref} is still exported to {where} {', '.join(snap.exports)}; "
            "unexport it first"
        )
