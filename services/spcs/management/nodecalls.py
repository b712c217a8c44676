"""Calls from management to node services: which node, with deadlines, retries and job following.

Data moves on a registered, healthy node connected to the pool (or the host the caller names).
Every call has a deadline; UNAVAILABLE is retried with tenacity only for calls that are safe to
repeat (starting a job with the same operation id, reading or cancelling it, attach/detach,
probes). A node's status becomes the matching domain error, with the node named.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
import tenacity
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from spcs.common import errors
from spcs.common.operations import JobContext
from spcs.management.nodes import NodeDirectory, NodeRecord
from spcs.management.pools import PoolRecord
from spcs.v1 import node_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_TIMEOUT = 60.0
MAX_OPERATION_ID = 128
WAIT_SLICE = duration_pb2.Duration(seconds=2)


def node_operation_id(ctx: JobContext, step: str, global_id: str) -> str:
    """A node job's id: stable while one attempt replays it, new when a retry works on a
    re-created StorPool object (nodes require the same arguments under one id)."""
    name = f"{ctx.operation_id}.{step}.{global_id}"
    if len(name) <= MAX_OPERATION_ID:
        return name
    return f"{hashlib.sha256(name.encode()).hexdigest()[:48]}.{step}"


class NodeCalls:
    def __init__(self, nodes: NodeDirectory, retry_seconds: float = 30.0) -> None:
        self.nodes = nodes
        self.retry_seconds = retry_seconds

    def pick(self, pool: PoolRecord, preferred: str = "") -> NodeRecord:
        """The node to move data for `pool`: the preferred host, else a healthy connected one."""
        if preferred:
            node = self.nodes.get(preferred)
            if not node.healthy:
                raise errors.Unavailable(
                    f"node of host {preferred} has not announced itself recently; check that "
                    "`spcs node` runs there"
                )
            return node
        healthy = [n for n in self.nodes.all() if n.healthy]
        connected = [n for n in healthy if n.host_id in pool.hosts]
        candidates = connected or healthy
        if not candidates:
            raise errors.Unavailable(
                f"no healthy node service can move data for pool {pool.name}: start `spcs node` "
                "on a KVM host with StorPool and connect it (HostListener.HostConnect)"
            )
        # the one that announced itself most recently is the least likely to be gone
        return max(candidates, key=lambda n: n.last_seen)

    def call(
        self, host_id: str, what: str, fn: Callable[[grpc.Channel], T], *, idempotent: bool = True
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
            stop=tenacity.stop_after_delay(self.retry_seconds),
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
            raise errors.from_status(code, f"host {host_id}: {detail}") from None

    def adaptor(
        self, host_id: str, what: str, method: str, request: Message, timeout: float = CALL_TIMEOUT
    ) -> Message:
        return self.call(
            host_id,
            what,
            lambda ch: getattr(node_pb2_grpc.StorageAdaptorStub(ch), method)(
                request, timeout=timeout
            ),
        )

    def command(
        self, host_id: str, what: str, method: str, request: Message, timeout: float = CALL_TIMEOUT
    ) -> Message:
        return self.call(
            host_id,
            what,
            lambda ch: getattr(node_pb2_grpc.AgentCommandsStub(ch), method)(
                request, timeout=timeout
            ),
        )

    def run_job(
        self,
        ctx: JobContext,
        host_id: str,
        method: str,
        request: Message,
        result: Message,
        stage: str,
    ) -> Message:
        """Start a node job (idempotent by its operation id), follow it, return its response."""
        what = f"{method} ({stage})"
        op = self.command(host_id, what, method, request)
        name = op.name
        ctx.on_cancel(lambda: self._cancel(host_id, name))
        ops_stub = lambda ch: operations_pb2_grpc.OperationsStub(ch)  # noqa: E731
        while not op.done:
            op = self.call(
                host_id,
                f"waiting for {name}",
                lambda ch: ops_stub(ch).WaitOperation(
                    operations_pb2.WaitOperationRequest(name=name, timeout=WAIT_SLICE),
                    timeout=CALL_TIMEOUT,
                ),
            )
            meta = types_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            ctx.stage(f"{stage} on {host_id}: {meta.stage}")
            ctx.progress(
                meta.bytes_done,
                meta.bytes_total or None,
                written=meta.bytes_written,
                rate=meta.rate_bytes_per_second,
            )
        if op.HasField("error"):
            code = grpc.StatusCode.UNKNOWN
            for candidate in grpc.StatusCode:
                if candidate.value[0] == op.error.code:
                    code = candidate
            raise errors.from_status(code, f"host {host_id}: {op.error.message}")
        op.response.Unpack(result)
        return result

    def _cancel(self, host_id: str, name: str) -> None:
        try:
            self.call(
                host_id,
                f"cancel {name}",
                lambda ch: operations_pb2_grpc.OperationsStub(ch).CancelOperation(
                    operations_pb2.CancelOperationRequest(name=name), timeout=CALL_TIMEOUT
                ),
            )
        except errors.SpcsError as error:
            log.warning("could not cancel %s on host %s: %s", name, host_id, error.message)
