"""Calls from management to node services: which node, with deadlines, retries and job following.

Data moves on a registered, healthy node connected to the pool (or the host the caller names).
A node runs at most `max_copies` copies at once (it says how many when it registers): a copy
that may run on any connected host goes to one with a free slot, or waits in the queue (its
operation says so) until one frees up; a copy pinned to a host waits for that host only. A node
that does not answer within PROBE_SECONDS is skipped and the copy goes to another host.

Every call has a deadline; UNAVAILABLE is retried with tenacity only for calls that are safe to
repeat (starting a job with the same operation id, reading or cancelling it, attach/detach,
probes). A node's status becomes the matching domain error, with the node named.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import grpc
import tenacity
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from spcs.common import errors
from spcs.common.operations import JobContext
from spcs.management.nodes import NodeDirectory
from spcs.management.state import NodeRecord, PoolRecord
from spcs.v1 import node_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from grpc import UnaryUnaryMultiCallable as Unary

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp")
CALL_TIMEOUT = 60.0
MAX_OPERATION_ID = 128
# How often a node job's progress is read back: the management operation lags it by at most
# this plus the node's own progress interval.
FOLLOW_SECONDS = 0.2
WAIT_SLICE = duration_pb2.Duration(nanos=int(FOLLOW_SECONDS * 1e9))
# A node that does not connect within this is skipped for other hosts, and left out of the
# choice for DOWN_SECONDS (or until it registers again).
PROBE_SECONDS = 2.0
DOWN_SECONDS = 30.0
# A node that answered RESOURCE_EXHAUSTED (slots taken by other callers) is retried after this.
BUSY_SECONDS = 1.0
CANCEL_TIMEOUT = 5.0


def node_operation_id(ctx: JobContext, step: str, global_id: str) -> str:
    """A node job's id: stable while one attempt replays it, new when a retry works on a
    re-created StorPool object (nodes require the same arguments under one id)."""
    name = f"{ctx.operation_id}.{step}.{global_id}"
    if len(name) <= MAX_OPERATION_ID:
        return name
    return f"{hashlib.sha256(name.encode()).hexdigest()[:48]}.{step}"


def _reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason in a failed call's rich status ("" if it has none)."""
    # the RpcError a call raises is also its grpc.Call; the stubs type only the Call
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    return errors.reason_of(status) if status is not None else ""


class _Slots:
    """Copies this service runs on each node, against what each node takes at once."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.running: dict[str, int] = {}
        self.down: dict[str, float] = {}  # host → when it was found not answering
        self.busy_until: dict[str, float] = {}

    def free(self, node: NodeRecord, now: float) -> bool:
        return (
            self.running.get(node.host_id, 0) < node.max_copies
            and self.busy_until.get(node.host_id, 0.0) <= now
        )

    def is_down(self, node: NodeRecord, now: float) -> bool:
        marked = self.down.get(node.host_id)
        if marked is None:
            return False
        if node.last_seen > marked or now - marked > DOWN_SECONDS:
            del self.down[node.host_id]  # it registered again, or it is time to try again
            return False
        return True


class NodeCalls:
    def __init__(self, nodes: NodeDirectory, retry_seconds: float = 30.0) -> None:
        self.nodes = nodes
        self.retry_seconds = retry_seconds
        self._slots = _Slots()

    # ---- choosing a node ------------------------------------------------------------------

    def candidates(self, pool: PoolRecord, preferred: str = "") -> list[NodeRecord]:
        """The nodes that may move data for `pool`: the preferred host, else the healthy ones
        connected to the pool (any healthy one when none is connected)."""
        if preferred:
            node = self.nodes.get(preferred)
            if not node.healthy:
                raise errors.Unavailable(
                    f"node of host {preferred} has not announced itself recently; check that "
                    "`spcs node` runs there"
                )
            return [node]
        healthy = [n for n in self.nodes.all() if n.healthy]
        candidates = [n for n in healthy if n.host_id in pool.hosts] or healthy
        if not candidates:
            raise errors.Unavailable(
                f"no healthy node service can move data for pool {pool.name}: start `spcs node` "
                "on a KVM host with StorPool and connect it (HostListener.HostConnect)"
            )
        return candidates

    def running(self, host_id: str) -> int:
        with self._slots.changed:
            return self._slots.running.get(host_id, 0)

    def _claim(self, ctx: JobContext, pool: PoolRecord, preferred: str) -> str:
        """Reserve a copy slot on a reachable node, waiting in the queue while there is none."""
        slots = self._slots
        wake = slots.changed
        ctx.on_cancel(lambda: _notify(wake))
        unreachable_since: float | None = None
        while True:
            ctx.check_cancelled()
            now = time.time()
            nodes = self.candidates(pool, preferred)
            with wake:
                up = [n for n in nodes if not slots.is_down(n, now)]
                free = [n for n in up if slots.free(n, now)]
                if free:
                    # the least loaded; among equals the one heard from most recently
                    node = min(free, key=lambda n: (slots.running.get(n.host_id, 0), -n.last_seen))
                    slots.running[node.host_id] = slots.running.get(node.host_id, 0) + 1
                    chosen = node.host_id
                else:
                    chosen = ""
            if chosen:
                if self._reachable(chosen):
                    ctx.queued("")
                    ctx.set_host(chosen)
                    return chosen
                self._mark_down(chosen)
                continue
            names = ", ".join(n.host_id for n in nodes)
            if up:
                unreachable_since = None
                ctx.queued(f"a free copy slot on host {names}")
            else:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.retry_seconds:
                    raise errors.Unavailable(
                        f"the node of host {names} is unreachable (no answer for "
                        f"{self.retry_seconds:.0f}s); check that `spcs node` runs there and "
                        "that this service can reach it, then retry"
                    )
                ctx.queued(f"a node that answers (host {names} does not)")
            with wake:
                wake.wait(BUSY_SECONDS)

    def _release(self, host_id: str) -> None:
        with self._slots.changed:
            self._slots.running[host_id] -= 1
            self._slots.changed.notify_all()

    def _mark_down(self, host_id: str) -> None:
        log.warning(
            "node of host %s does not answer within %.0fs; using other hosts",
            host_id,
            PROBE_SECONDS,
        )
        self.nodes.renew_channel(host_id)
        with self._slots.changed:
            self._slots.down[host_id] = time.time()
            self._slots.running[host_id] -= 1
            self._slots.changed.notify_all()

    def _mark_busy(self, host_id: str) -> None:
        with self._slots.changed:
            self._slots.busy_until[host_id] = time.time() + BUSY_SECONDS
            self._slots.running[host_id] -= 1
            self._slots.changed.notify_all()

    def _reachable(self, host_id: str) -> bool:
        try:
            grpc.channel_ready_future(self.nodes.channel(host_id)).result(timeout=PROBE_SECONDS)
        except grpc.FutureTimeoutError:
            return False
        return True

    # ---- calls ----------------------------------------------------------------------------

    def call(
        self,
        host_id: str,
        what: str,
        fn: Callable[[grpc.Channel], T],
        *,
        idempotent: bool = True,
        retry_seconds: float | None = None,
    ) -> T:
        channel = self.nodes.channel(host_id)

        def attempt() -> T:
            return fn(channel)

        def retry_on(error: BaseException) -> bool:
            return (
                idempotent
                and isinstance(error, grpc.RpcError)
                and error.code() == grpc.StatusCode.UNAVAILABLE
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(retry_on),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=3),
            stop=tenacity.stop_after_delay(
                self.retry_seconds if retry_seconds is None else retry_seconds
            ),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except grpc.RpcError as error:
            code = error.code()
            detail = error.details() or code.name
            if code == grpc.StatusCode.UNAVAILABLE:
                raise errors.Unavailable(
                    f"node of host {host_id} is unreachable for {what}: {detail}"
                ) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and "did not appear" not in detail:
                raise errors.Unavailable(
                    f"node of host {host_id} did not answer {what} in time"
                ) from None
            raise errors.from_status(code, f"host {host_id}: {detail}", _reason(error)) from None

    def adaptor(
        self,
        host_id: str,
        what: str,
        method: Callable[[node_pb2_grpc.StorageAdaptorStub], Unary[Req, Resp]],
        request: Req,
        timeout: float = CALL_TIMEOUT,
    ) -> Resp:
        """`method(stub)(request)` on the node's StorageAdaptor, e.g. `lambda s:
        s.ConnectPhysicalDisk`."""
        return self.call(
            host_id,
            what,
            lambda ch: method(node_pb2_grpc.StorageAdaptorStub(ch))(request, timeout=timeout),
        )

    def command(
        self,
        host_id: str,
        what: str,
        method: Callable[[node_pb2_grpc.AgentCommandsStub], Unary[Req, Resp]],
        request: Req,
        timeout: float = CALL_TIMEOUT,
    ) -> Resp:
        """`method(stub)(request)` on the node's AgentCommands."""
        return self.call(
            host_id,
            what,
            lambda ch: method(node_pb2_grpc.AgentCommandsStub(ch))(request, timeout=timeout),
        )

    # ---- node jobs ------------------------------------------------------------------------

    def run_job(
        self,
        ctx: JobContext,
        pool: PoolRecord,
        preferred: str,
        method: Callable[[node_pb2_grpc.AgentCommandsStub], Unary[Req, operations_pb2.Operation]],
        request: Req,
        result: M,
        stage: str,
    ) -> tuple[M, str]:
        """Run a node job (idempotent by its operation id) on a node with a free slot, follow it
        into `ctx`, and return its response and the host it ran on."""
        while True:
            host_id = self._claim(ctx, pool, preferred)
            try:
                op = self.command(host_id, stage, method, request)
            except errors.ResourceExhausted:
                # its slots are taken by other callers: queue again
                self._mark_busy(host_id)
                continue
            except errors.Unavailable:
                self._mark_down(host_id)
                if preferred:
                    raise
                continue
            except BaseException:
                self._release(host_id)
                raise
            try:
                return self._follow(ctx, host_id, op, stage, result), host_id
            finally:
                self._release(host_id)

    def _follow(
        self,
        ctx: JobContext,
        host_id: str,
        op: operations_pb2.Operation,
        stage: str,
        result: M,
    ) -> M:
        name = op.name
        ctx.on_cancel(lambda: self._cancel(host_id, name))
        ops = operations_pb2_grpc.OperationsStub(self.nodes.channel(host_id))
        while True:
            meta = types_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            ctx.mirror(meta, f"{stage} on {host_id}")
            if op.done:
                break
            try:
                op = self.call(
                    host_id,
                    f"waiting for {name}",
                    lambda _ch: ops.WaitOperation(
                        operations_pb2.WaitOperationRequest(name=name, timeout=WAIT_SLICE),
                        timeout=CALL_TIMEOUT,
                    ),
                    # once cancelled, do not wait long for a node that is gone
                    retry_seconds=CANCEL_TIMEOUT if ctx.cancelled else None,
                )
            except errors.Unavailable as error:
                if ctx.cancelled:
                    raise errors.Cancelled(
                        f"{name} was cancelled; the node did not confirm it ({error.message})"
                    ) from None
                raise
        if op.HasField("error"):
            raise errors.from_status(
                errors.code_of(op.error.code),
                f"host {host_id}: {op.error.message}",
                errors.reason_of(op.error),
            )
        op.response.Unpack(result)
        return result

    def cancel_jobs_of(self, host_id: str, operation_id: str) -> int:
        """Cancel the node jobs an operation started on `host_id` (their ids begin with the
        operation's, `node_operation_id`), for an operation whose replica died; how many."""
        prefix = f"operations/{operation_id}."
        try:
            listed = self.call(
                host_id,
                f"list the jobs of {operation_id}",
                lambda ch: operations_pb2_grpc.OperationsStub(ch).ListOperations(
                    operations_pb2.ListOperationsRequest(filter="done=false", page_size=1000),
                    timeout=CANCEL_TIMEOUT,
                ),
                retry_seconds=CANCEL_TIMEOUT,
            )
        except errors.SpcsError as error:
            log.warning("could not list the jobs on host %s: %s", host_id, error.message)
            return 0
        jobs = [op.name for op in listed.operations if op.name.startswith(prefix)]
        for name in jobs:
            self._cancel(host_id, name)
        return len(jobs)

    def _cancel(self, host_id: str, name: str) -> None:
        try:
            self.call(
                host_id,
                f"cancel {name}",
                lambda ch: operations_pb2_grpc.OperationsStub(ch).CancelOperation(
                    operations_pb2.CancelOperationRequest(name=name), timeout=CANCEL_TIMEOUT
                ),
                retry_seconds=CANCEL_TIMEOUT,
            )
        except errors.SpcsError as error:
            log.warning("could not cancel %s on host %s: %s", name, host_id, error.message)


def _notify(condition: threading.Condition) -> None:
    with condition:
        condition.notify_all()
