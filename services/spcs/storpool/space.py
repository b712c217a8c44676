"""The cluster's volume space (StorPool's VolumesSpace), cached per API endpoint.

StorPool has no per-volume space call: VolumesSpace lists every volume of the cluster. So the
facade keeps the last answer, refreshes it at most once per max age with single-flight refresh
(callers that find it stale while a fetch runs wait for that fetch), and keeps it true with the
changes this process makes (resizes, re-templates, deletes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from spcs.common import errors


@dataclass(frozen=True)
class VolumeSpace:
    """One volume's row of VolumesSpace (or a snapshot's of SnapshotsSpace): its virtual size,
    the bytes it occupies, and the summary fields stats report with them."""

    name: str
    global_id: str
    template: str
    size: int
    used: int
    iops: int | None = None  # StorPool's limits; None = none
    bw: int | None = None
    cs: str = ""  # the `cs` tag: what kind of CloudStack object it is


class SpaceView:
    """One VolumesSpace answer of the whole cluster, by global id and by name, kept up to date
    with the changes this process made since (resizes, re-templates, deletes)."""

    def __init__(self, rows: Iterable[VolumeSpace], taken: float) -> None:
        self.taken = taken  # time.monotonic() when the answer arrived
        self._lock = threading.Lock()
        self._by_gid: dict[str, VolumeSpace] = {}
        self._gid_of: dict[str, str] = {}
        for row in rows:
            self._put(row)

    def _put(self, row: VolumeSpace) -> None:
        self._by_gid[row.global_id] = row
        if not row.name.startswith("~"):
            self._gid_of[row.name] = row.global_id

    def _gid(self, ref: str) -> str | None:
        return ref[1:] if ref.startswith("~") else self._gid_of.get(ref)

    def find(self, ref: str) -> VolumeSpace | None:
        """The row of a volume by `~<gid>` or name; None if it was not in the answer."""
        with self._lock:
            gid = self._gid(ref)
            return self._by_gid.get(gid) if gid is not None else None

    def rows(self) -> list[VolumeSpace]:
        with self._lock:
            return list(self._by_gid.values())

    def add(self, row: VolumeSpace) -> None:
        with self._lock:
            self._put(row)

    def change(self, ref: str, *, size: int | None, template: str | None, gone: bool) -> None:
        with self._lock:
            gid = self._gid(ref)
            row = self._by_gid.get(gid) if gid is not None else None
            if row is None:
                return
            if gone:
                del self._by_gid[row.global_id]
                self._gid_of.pop(row.name, None)
                return
            self._by_gid[row.global_id] = VolumeSpace(
                row.name,
                row.global_id,
                template if template is not None else row.template,
                size if size is not None else row.size,
                row.used,
            )


class _Flight:
    """One VolumesSpace fetch in progress, which every concurrent caller waits for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.view: SpaceView | None = None
        self.error: BaseException | None = None
        # changes made while the fetch ran: its answer may predate them
        self.changes: list[tuple[str, int | None, str | None, bool]] = []

    def result(self) -> SpaceView:
        self.done.wait()
        if self.error is not None:
            error = self.error
            if isinstance(error, errors.SpcsError):  # a copy: each waiter raises its own
                raise type(error)(error.message, reason=error.reason) from None
            raise errors.Internal("reading StorPool's volume space failed; see the log")
        assert self.view is not None
        return self.view


class SpaceCache:
    """The cluster's volume space (VolumesSpace) for one API endpoint, fetched at most once per
    `max_age` seconds with single-flight refresh: callers that find it stale while a fetch
    runs wait for that fetch; fetches never run in parallel."""

    def __init__(self, fetch: Callable[[], list[VolumeSpace]]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._view: SpaceView | None = None
        self._flight: _Flight | None = None

    def view(self, max_age: float) -> SpaceView:
        """A view no older than `max_age` seconds (0: one that arrived after this call began,
        or the one a fetch already in flight brings)."""
        arrived = time.monotonic()
        with self._lock:
            view = self._view
            if view is not None and arrived - view.taken < max_age:
                return view
            flight = self._flight
            if flight is not None:
                leader = False
            else:
                leader, flight = True, _Flight()
                self._flight = flight
        if not leader:
            return flight.result()
        try:
            view = SpaceView(self._fetch(), time.monotonic())
        except BaseException as error:
            with self._lock:
                self._flight = None
            flight.error = error
            flight.done.set()
            raise
        with self._lock:
            for ref, size, template, gone in flight.changes:
                view.change(ref, size=size, template=template, gone=gone)
            self._view, self._flight = view, None
        flight.view = view
        flight.done.set()
        return view

    def change(
        self, ref: str, *, size: int | None = None, template: str | None = None, gone: bool = False
    ) -> None:
        """This process changed a volume: keep the cached row (and a fetch in flight) true."""
        if size is None and template is None and not gone:
            return
        with self._lock:
            if self._view is not None:
                self._view.change(ref, size=size, template=template, gone=gone)
            if self._flight is not None:
                self._flight.changes.append((ref, size, template, gone))
