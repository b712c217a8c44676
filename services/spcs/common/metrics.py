"""Every Prometheus metric the services export, in one place (the official `prometheus_client`).

A service serves them over HTTP at `metrics_listen` (`GET /metrics`), off unless that is set.
Labels take only bounded values: RPC methods (the proto's), gRPC codes, StorPool call names (the
facade's methods), copy kinds, hold table entries, outcomes; never an object's uuid or name.

Each replica of the management service exports what it served and ran itself, so the region's
figure of a counter or a gauge is the sum over the replicas (`sum by (...)` in the dashboard,
`deploy/grafana/spcs.json`).
"""

from __future__ import annotations

import logging
import threading
from time import monotonic

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from spcs import __version__

log = logging.getLogger(__name__)

# seconds: from a cached answer (1 ms) to a slow StorPool (10 s), and past a node's default
# wait for a device (30 s)
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# seconds a copy waits or runs: up to hours for a large template over a slow link
COPY_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# bytes per second a copy reached: 1 MB/s to 10 GB/s
THROUGHPUT = (1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9, 3e9, 1e10)

BUILD = Info("spcs_build", "the spcs build that runs: version, and which service")

RPC_SECONDS = Histogram(
    "spcs_rpc_duration_seconds",
    "RPCs served: time from the request to the answer, by method and gRPC status code",
    ("method", "code"),
    buckets=LATENCY,
)
RPCS = Counter("spcs_rpcs", "RPCs served, by method and gRPC status code", ("method", "code"))

STORPOOL_SECONDS = Histogram(
    "spcs_storpool_call_duration_seconds",
    "StorPool API calls, retries included, by call and outcome (ok, error, transient)",
    ("call", "outcome"),
    buckets=LATENCY,
)
STORPOOL_RETRIES = Counter(
    "spcs_storpool_retries", "StorPool API calls sent again after a transient failure", ("call",)
)
STORPOOL_TRANSIENT = Counter(
    "spcs_storpool_transient_errors",
    "transient StorPool API failures (busy, unreachable, timed out), each attempt's",
    ("call",),
)

COPIES = Counter("spcs_copies", "copies that ended, by kind and outcome", ("kind", "outcome"))
COPY_BYTES = Counter("spcs_copy_bytes", "bytes written by copies, by kind", ("kind",))
COPY_QUEUED_SECONDS = Histogram(
    "spcs_copy_queued_seconds",
    "time a copy waited for a free copy slot, by kind",
    ("kind",),
    buckets=COPY_SECONDS,
)
COPY_RUNNING_SECONDS = Histogram(
    "spcs_copy_running_seconds",
    "time a copy ran, by kind and outcome",
    ("kind", "outcome"),
    buckets=COPY_SECONDS,
)
COPY_THROUGHPUT = Histogram(
    "spcs_copy_throughput_bytes_per_second",
    "bytes per second of the copies that succeeded, by kind",
    ("kind",),
    buckets=THROUGHPUT,
)
COPIES_ACTIVE = Gauge("spcs_copies_active", "copies running now")
COPIES_QUEUED = Gauge("spcs_copies_queued", "copies waiting for a copy slot now")

HOLDS_HELD = Gauge("spcs_holds_held", "holds on objects this process has taken and not released")
HOLD_CONFLICTS = Counter(
    "spcs_hold_conflicts",
    "calls and jobs refused (ABORTED) because another operation held an object, by operation",
    ("operation",),
)

DEVICE_SECONDS = Histogram(
    "spcs_node_device_duration_seconds",
    "a node's attach and detach of StorPool volumes and snapshots, by action and outcome",
    ("action", "outcome"),
    buckets=LATENCY,
)
DEVICE_WAIT_TIMEOUTS = Counter(
    "spcs_node_device_wait_timeouts",
    "attaches whose device did not appear on the host in time",
)

OPERATIONS_RUNNING = Gauge(
    "spcs_operations_running", "long-running operations this process runs now, by kind", ("kind",)
)
OPERATIONS_ENDED = Counter(
    "spcs_operations_ended",
    "long-running operations that ended on this process, by kind and state (done, failed, "
    "cancelled)",
    ("kind", "state"),
)


class JobClock:
    """One copy job's metrics (`spcs.common.operations`): it counts as active while it runs and
    as queued while it waits for a copy slot; at its end its outcome, bytes, times and rate."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._started = self._mark = monotonic()
        self._queued_for = 0.0
        self._queued = self._waited = self._ended = False
        self._lock = threading.Lock()
        COPIES_ACTIVE.inc()
        OPERATIONS_RUNNING.labels(kind).inc()

    def queued(self, waiting: bool) -> None:
        with self._lock:
            if waiting == self._queued:
                return
            now = monotonic()
            if waiting:
                self._mark, self._waited = now, True
                COPIES_ACTIVE.dec()
                COPIES_QUEUED.inc()
            else:
                self._queued_for += now - self._mark
                COPY_QUEUED_SECONDS.labels(self.kind).observe(now - self._mark)
                COPIES_QUEUED.dec()
                COPIES_ACTIVE.inc()
            self._queued = waiting

    def ended(self, state: str, written: int) -> None:
        """`state`: done, failed or cancelled; `written`: the bytes the copy wrote."""
        self.queued(False)
        with self._lock:
            if self._ended:  # once: the gauges never go below what runs
                return
            self._ended = True
            running = max(monotonic() - self._started - self._queued_for, 0.0)
            if not self._waited:  # every copy counts in the time queued, 0 if it never waited
                COPY_QUEUED_SECONDS.labels(self.kind).observe(0.0)
        COPIES_ACTIVE.dec()
        OPERATIONS_RUNNING.labels(self.kind).dec()
        OPERATIONS_ENDED.labels(self.kind, state).inc()
        COPIES.labels(self.kind, state).inc()
        COPY_RUNNING_SECONDS.labels(self.kind, state).observe(running)
        if written > 0:
            COPY_BYTES.labels(self.kind).inc(written)
            if state == "done" and running > 0:
                COPY_THROUGHPUT.labels(self.kind).observe(written / running)


def describe_build(service: str) -> None:
    BUILD.info({"version": __version__, "service": service})


class Endpoint:
    """`GET /metrics` on (host, port) in a thread of its own; port 0 picks a free one."""

    def __init__(self, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
        self._server = server
        self._thread: threading.Thread = thread
        self.host, self.port = host, int(server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
