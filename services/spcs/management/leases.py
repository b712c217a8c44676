"""Holds shared by every management replica: leases in the state store.

`LeasedLocks` is the lock manager of a management service whose state store keeps leases
(`state.LeaseStore`): a hold is a row with this replica as its owner and an expiry, so a
conflicting operation on any replica gets the same ABORTED answer, naming the holder, as on one
replica. A background thread renews this replica's leases every third of their lifetime; when a
replica dies its leases expire within `ttl` seconds and the objects are free again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from spcs.common import errors
from spcs.common.holds import Hold
from spcs.common.locks import Locks
from spcs.management.state import LeaseStore

log = logging.getLogger(__name__)

# A dead replica's holds are free again after at most this long (the issue asks for ~15 s).
LEASE_SECONDS = 15.0


def replica_id() -> str:
    """This process's name as other replicas see it: host, pid and a random part (a restarted
    process on the same host and pid is another replica)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeasedLocks(Locks):
    def __init__(self, store: LeaseStore, owner: str, ttl: float = LEASE_SECONDS) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self, wanted: list[Hold], operation: str) -> Callable[[], None]:
        holds = wanted
        if not holds:
            return lambda: None
        # the store records the request id and this replica beside the label
        label = operation
        lease = self.store.take_leases(holds, owner=self.owner, label=label, ttl=self.ttl)
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            try:
                self.store.release_lease(lease)
            except errors.SpcsError as error:
                # it expires on its own within ttl; the caller's outcome stands
                log.warning("could not release lease %s (%s): %s", lease, label, error.message)

        return release

    # ---- renewal --------------------------------------------------------------------------

    def start(self) -> None:
        """Renew this replica's leases in the background until `stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew, name="leases", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _renew(self) -> None:
        failing = False
        while not self._stop.wait(self.ttl / 3):
            try:
                self.store.renew_leases(self.owner, self.ttl)
            except Exception as error:  # the database may be away for a while: keep trying
                if not failing:
                    log.warning("cannot renew the leases of replica %s: %s", self.owner, error)
                failing = True
            else:
                if failing:
                    log.info("leases of replica %s renewed again", self.owner)
                failing = False
