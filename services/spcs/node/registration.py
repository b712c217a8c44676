"""Announcing this node to the management service, at start and then periodically.

A region may run several management replicas (`spcs.node.targets`): the node registers with
each of them, every replica on its own thread, so that one that is down or does not answer never
holds up the others. The node keeps serving whatever management does: a replica that cannot be
reached is retried with a growing delay (1 s doubling to 30 s, jittered so that many nodes do not
return at once), and the node logs once when a replica goes down and once when it is back, not
on every attempt. RegisterNode is keyed by the host id, so announcing again is harmless.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import grpc

from spcs import __version__
from spcs.common import errors
from spcs.common.tls import TlsFiles, open_channel
from spcs.node.targets import Replica, Resolve, Target, all_replicas, replicas_of, system_resolve
from spcs.storpool.client import StorPoolClient
from spcs.v1 import hosts_pb2, hosts_pb2_grpc

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
CALL_TIMEOUT = 10.0
# until a replica has answered with its refresh_seconds
DEFAULT_REFRESH_SECONDS = 30.0
# a dns:/// name that does not resolve is asked again this soon
RESOLVE_RETRY_SECONDS = 5.0


class ClusterId:
    """This host's StorPool cluster id: SP_CLUSTER_ID from its StorPool config, else what
    StorPool itself shows (`StorPoolClient.local_cluster_id`), learned once and kept. "" while
    neither knows it; the management service then does not connect the host."""

    def __init__(self, configured: str | None, api: StorPoolClient) -> None:
        self._value = configured or ""
        self._api = api
        self._lock = threading.Lock()

    def __call__(self) -> str:
        if self._value:
            return self._value
        with self._lock:
            if not self._value:
                try:
                    found = self._api.local_cluster_id()
                except errors.SpcsError as error:
                    log.warning(
                        "SP_CLUSTER_ID is not set and StorPool could not tell it: %s",
                        error.message,
                    )
                    return ""
                if found:
                    log.info("SP_CLUSTER_ID is not set; StorPool shows cluster %s", found)
                    self._value = found
        return self._value


class Backoff:
    """Delays between attempts at a replica that does not answer: `first`, doubling up to
    `most`, each within +-20% so that nodes that lost a replica together do not return to it
    in step."""

    def __init__(self, first: float = RETRY_FIRST_SECONDS, most: float = RETRY_MAX_SECONDS):
        self.first = first
        self.most = most
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.most, self._next * 2)
        return delay * random.uniform(0.8, 1.2)


class ReplicaRegistration:
    """Registration with one management replica: its channel, its loop, its up/down state."""

    def __init__(
        self,
        replica: Replica,
        request: hosts_pb2.RegisterNodeRequest,
        tls: TlsFiles | None,
        cluster_id: Callable[[], str] | None,
        on_registered: Callable[[float], None],
    ) -> None:
        self.replica = replica
        self.request = hosts_pb2.RegisterNodeRequest()
        self.request.CopyFrom(request)
        # asked before each announcement while the request has no cluster id yet
        self._cluster_id = cluster_id
        self._on_registered = on_registered
        self._channel = open_channel(replica.address, tls, server_name=replica.server_name)
        self._stub = hosts_pb2_grpc.NodeRegistryStub(self._channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"register {replica.address}", daemon=True
        )
        self._backoff = Backoff()
        self._down_since: float | None = None
        self.registered = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def register_once(self) -> float:
        """One announcement; returns the seconds until the next one."""
        if self._cluster_id is not None and not self.request.storpool_cluster_id:
            self.request.storpool_cluster_id = self._cluster_id()
        try:
            reply = self._stub.RegisterNode(self.request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return self._failed(error)
        self._backoff.reset()
        refresh = max(1.0, float(reply.refresh_seconds or DEFAULT_REFRESH_SECONDS))
        self._succeeded()
        self._on_registered(refresh)
        return refresh

    def _succeeded(self) -> None:
        host = self.request.host_id
        if self._down_since is not None and self.registered.is_set():
            down = time.monotonic() - self._down_since
            log.info(
                "registered again with management at %s as host %s (after %.0fs of failed "
                "attempts)",
                self.replica,
                host,
                down,
            )
        elif not self.registered.is_set():
            log.info("registered with management at %s as host %s", self.replica, host)
        self._down_since = None
        self.registered.set()

    def _failed(self, error: grpc.RpcError) -> float:
        if self._down_since is None:
            log.warning(
                "cannot register with management at %s (%s: %s); the node keeps serving and "
                "retries, at least every %.0fs",
                self.replica,
                error.code().name,
                error.details(),
                self._backoff.most,
            )
            self._down_since = time.monotonic()
        return self._backoff.next()

    def _loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            delay = self.register_once()

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = CALL_TIMEOUT + 1) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._channel.close()


class Registrar:
    """Registration with every management replica the `management` setting names: one
    `ReplicaRegistration` per replica, and for dns:/// entries a thread that resolves the names
    again every refresh round, starting and stopping replicas as the name's addresses change."""

    def __init__(
        self,
        targets: Sequence[Target],
        request: hosts_pb2.RegisterNodeRequest,
        tls: TlsFiles | None = None,
        cluster_id: Callable[[], str] | None = None,
        resolve: Resolve = system_resolve,
    ) -> None:
        self.targets = tuple(targets)
        self.request = request
        self._tls = tls
        self._cluster_id = cluster_id
        self._resolve = resolve
        self._lock = threading.Lock()
        self.replicas: dict[str, ReplicaRegistration] = {}
        self._resolved: dict[Target, list[Replica]] = {}
        self._unresolved: set[Target] = set()
        self._refresh_seconds = DEFAULT_REFRESH_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="register-resolve", daemon=True)
        self.registered = threading.Event()  # with at least one replica

    def start(self) -> None:
        self.refresh()
        if any(target.expand for target in self.targets):
            self._thread.start()

    def _registered(self, refresh_seconds: float) -> None:
        self._refresh_seconds = refresh_seconds
        self.registered.set()

    def _replicas_of(self, target: Target) -> list[Replica]:
        """The target's replicas now; for a name that does not resolve, those it had."""
        try:
            found = replicas_of(target, self._resolve)
        except OSError as error:
            if target not in self._unresolved:
                log.warning(
                    "cannot resolve management %s (%s); the node keeps registering with the "
                    "%d addresses it had and tries again in %.0fs",
                    target,
                    error.strerror or error,
                    len(self._resolved.get(target, [])),
                    RESOLVE_RETRY_SECONDS,
                )
                self._unresolved.add(target)
            return self._resolved.get(target, [])
        if target in self._unresolved:
            log.info("management %s resolves again: %s", target, ", ".join(map(str, found)))
            self._unresolved.discard(target)
        self._resolved[target] = found
        return found

    def refresh(self) -> None:
        """Resolve the targets; start registering with new replicas, stop with gone ones."""
        wanted = all_replicas(self._replicas_of(target) for target in self.targets)
        with self._lock:
            if self._stop.is_set():
                return
            gone = [self.replicas.pop(a) for a in list(self.replicas) if a not in wanted]
            started = []
            for address, replica in wanted.items():
                if address not in self.replicas:
                    registration = ReplicaRegistration(
                        replica, self.request, self._tls, self._cluster_id, self._registered
                    )
                    self.replicas[address] = registration
                    started.append(registration)
        for registration in gone:
            log.info(
                "management at %s is no longer among the addresses of %s; stopped "
                "registering with it",
                registration.replica.address,
                registration.replica.via,
            )
            registration.stop()
        for registration in started:
            registration.start()

    def _loop(self) -> None:
        while not self._stop.wait(
            RESOLVE_RETRY_SECONDS if self._unresolved else self._refresh_seconds
        ):
            self.refresh()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            registrations = list(self.replicas.values())
        for registration in registrations:
            registration.signal_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=CALL_TIMEOUT + 1)
        deadline = time.monotonic() + CALL_TIMEOUT + 1
        for registration in registrations:
            registration.stop(timeout=max(0.0, deadline - time.monotonic()))


def request_for(
    host_id: str, address: str, client_id: int, cluster_id: str, max_copies: int
) -> hosts_pb2.RegisterNodeRequest:
    return hosts_pb2.RegisterNodeRequest(
        host_id=host_id,
        address=address,
        storpool_client_id=client_id,
        storpool_cluster_id=cluster_id,
        version=__version__,
        max_copies=max_copies,
    )
