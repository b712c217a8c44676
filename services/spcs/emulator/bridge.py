"""`Bridge`: the in-process registry of locations (emulators) that can see each other.

StorPool connects the clusters of different locations through its bridge service; here the
emulators that share one `Bridge` object are those locations. Each emulator joins with its
location id (the first part of its cluster id) and its human-readable location name when it
starts and leaves when it stops. A location that left stays known under the id and name it
registered with, but is unreachable: nothing can be fetched from it until its emulator starts
again. One location holds one cluster (no sub-clusters).

The bridge only hands out `Location` records; the callers read a reachable location's state
through its `Cluster` (never while holding their own cluster's lock, so two locations asking
each other at once can not deadlock).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spcs.emulator.cluster import Cluster


class BridgeError(Exception):
    """A location can not join: another running one has its id or its name."""


@dataclass(frozen=True)
class Location:
    id: str
    name: str
    cluster: Cluster | None  # None = unreachable (its emulator is stopped)

    @property
    def reachable(self) -> bool:
        return self.cluster is not None


class Bridge:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locations: dict[str, Location] = {}  # by location id

    def join(self, location_id: str, name: str, cluster: Cluster) -> None:
        """Register a running location; a stopped one of the same id or name is replaced
        (its emulator came back, maybe renamed)."""
        with self._lock:
            for loc in self._locations.values():
                if loc.reachable and (loc.id == location_id or loc.name == name):
                    raise BridgeError(
                        f"location {loc.name} (id {loc.id}) is already served by a running "
                        f"emulator on this bridge; {name} (id {location_id}) can not join"
                    )
            stale = [k for k, v in self._locations.items() if v.name == name]
            for key in [*stale, location_id]:
                self._locations.pop(key, None)
            self._locations[location_id] = Location(location_id, name, cluster)

    def leave(self, cluster: Cluster) -> None:
        """The location of `cluster` becomes unreachable (it stays known)."""
        with self._lock:
            for key, loc in self._locations.items():
                if loc.cluster is cluster:
                    self._locations[key] = Location(loc.id, loc.name, None)

    def locations(self) -> list[Location]:
        """Every known location, reachable or not, sorted by name."""
        with self._lock:
            return sorted(self._locations.values(), key=lambda loc: loc.name)

    def find(self, name: str) -> Location | None:
        """The location of that name, if one is known."""
        with self._lock:
            for loc in self._locations.values():
                if loc.name == name:
                    return loc
        return None
