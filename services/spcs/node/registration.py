"""Announcing this node to the management service, at start and then periodically.

The node keeps serving when management is down or unreachable: registration just retries on
the next tick (and logs once per outage, not on every attempt).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from spcs import __version__
from spcs.common import errors
from spcs.common.tls import TlsFiles, open_channel
from spcs.storpool.client import StorPoolClient
from spcs.v1 import hosts_pb2, hosts_pb2_grpc

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
CALL_TIMEOUT = 10.0


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


class Registrar:
    def __init__(
        self,
        management: str,
        request: hosts_pb2.RegisterNodeRequest,
        tls: TlsFiles | None = None,
        cluster_id: Callable[[], str] | None = None,
    ) -> None:
        self.management = management
        self.request = request
        # asked before each announcement while the request has no cluster id yet
        self._cluster_id = cluster_id
        self._channel = open_channel(management, tls)
        self._stub = hosts_pb2_grpc.NodeRegistryStub(self._channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="register", daemon=True)
        self._failing = False
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
            if not self._failing:
                log.warning(
                    "cannot register with management at %s (%s: %s); the node keeps "
                    "serving and retries every %.0fs",
                    self.management,
                    error.code().name,
                    error.details(),
                    RETRY_SECONDS,
                )
            self._failing = True
            return RETRY_SECONDS
        if self._failing or not self.registered.is_set():
            log.info(
                "registered with management at %s as host %s", self.management, self.request.host_id
            )
        self._failing = False
        self.registered.set()
        return max(1.0, float(reply.refresh_seconds or 30))

    def _loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            delay = self.register_once()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CALL_TIMEOUT + 1)
        self._channel.close()


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
