"""Long-running jobs behind `google.longrunning.Operations`.

A job is started with the caller's operation id and runs on its own thread, so it survives the
caller disconnecting. Its operation (`operations/<id>`) carries `spcs.v1.OperationMetadata`
(state, bytes done/total, rate, stage) while it runs and the result message or a
`google.rpc.Status` when it ends.

Replays: the same id with the same arguments returns the job as it is (running or succeeded);
after a failure or cancellation the same id and arguments start a new attempt, so "retry with
the same id" always makes progress; the same id with other arguments is ALREADY_EXISTS.

A journal (optional) persists every state change; on start, jobs that were running when the
process died are marked FAILED ("interrupted"), so their fate is known after a restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from spcs.common import errors, metrics, secrets, validate
from spcs.common.errors import SpcsError
from spcs.common.holds import Hold
from spcs.common.locks import KeyedLocks, Locks
from spcs.common.logs import REQUEST_ID
from spcs.v1 import types_pb2

log = logging.getLogger(__name__)

PREFIX = "operations/"
OPERATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_WAIT_SECONDS = 60.0
KEEP_FINISHED = 1000

JobState = types_pb2.JobState
FINISHED = frozenset(
    {types_pb2.JOB_STATE_SUCCEEDED, types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_CANCELLED}
)
RUNNABLE = frozenset({types_pb2.JOB_STATE_PENDING, types_pb2.JOB_STATE_RUNNING})
# how the metrics name a finished job's state
ENDED = {
    types_pb2.JOB_STATE_SUCCEEDED: "done",
    types_pb2.JOB_STATE_FAILED: "failed",
    types_pb2.JOB_STATE_CANCELLED: "cancelled",
}


def fingerprint(*messages: Message) -> str:
    """Stable digest of a request's arguments (operation id excluded by the caller)."""
    digest = hashlib.sha256()
    for message in messages:
        # a passphrase is never stored, not even hashed
        digest.update(secrets.without_secrets(message).SerializeToString(deterministic=True))
        digest.update(b"\0")
    return digest.hexdigest()


def operation_name(operation_id: str) -> str:
    if not OPERATION_ID.match(operation_id or ""):
        raise errors.InvalidArgument(
            f"operation_id {validate.shown(operation_id)} is invalid: use 1-128 characters of "
            "A-Z a-z 0-9 . _ : - (for example the CloudStack job uuid)"
        )
    return PREFIX + operation_id


def _count(job: _Job, done: int, rate: int | None) -> None:
    """Bytes done, and the rate: the one the job reports, else measured over >= 1 s."""
    meta = job.metadata
    now = time.monotonic()
    last_t, last_done = job.rate_sample
    if rate is not None:
        meta.rate_bytes_per_second = rate
    elif now - last_t >= 1.0 and last_t:
        meta.rate_bytes_per_second = max(0, int((done - last_done) / (now - last_t)))
    if now - last_t >= 1.0 or not last_t:
        job.rate_sample = (now, done)
    meta.bytes_done = done


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _label(kind: str, target: str, name: str) -> str:
    """How a job's holds are named to a conflicting caller."""
    return f"{kind.rsplit('/', 1)[-1]} {target} ({name})"


def interrupted(
    op: operations_pb2.Operation, why: str, cancelled: bool = False
) -> operations_pb2.Operation:
    """The end of an operation whose job stopped without finishing (`why`: what stopped it):
    FAILED with ABORTED, or CANCELLED when a cancel had been asked for."""
    metadata = types_pb2.OperationMetadata()
    op.metadata.Unpack(metadata)
    stage = metadata.stage or "unknown"
    if cancelled or metadata.cancel_requested:
        metadata.state = types_pb2.JOB_STATE_CANCELLED
        error = status_pb2.Status(
            code=grpc.StatusCode.CANCELLED.value[0],
            message=f"{op.name} was cancelled ({why} while it was cancelling)",
        )
    else:
        metadata.state = types_pb2.JOB_STATE_FAILED
        error = status_pb2.Status(
            code=grpc.StatusCode.ABORTED.value[0],
            message=f"{op.name} was interrupted: {why} while it ran (stage {stage}); retry "
            "with the same operation id",
        )
    metadata.end_time.CopyFrom(_now())
    metadata.update_time.CopyFrom(metadata.end_time)
    metadata.rate_bytes_per_second = 0
    ended = operations_pb2.Operation(name=op.name, done=True, error=error)
    ended.metadata.Pack(metadata)
    return ended


class Journal(Protocol):
    """Persists operations so a restart can tell what happened to each."""

    def save(self, name: str, fingerprint: str, operation: operations_pb2.Operation) -> None: ...

    def load(self) -> Iterable[tuple[str, str, operations_pb2.Operation]]: ...

    def forget(self, name: str) -> None: ...


@dataclass
class _Job:
    name: str
    fingerprint: str
    metadata: types_pb2.OperationMetadata
    response: any_pb2.Any | None = None
    error: status_pb2.Status | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    cancel_hooks: list[Callable[[], None]] = field(default_factory=list)
    releases: list[Callable[[], None]] = field(default_factory=list)
    rate_sample: tuple[float, int] = (0.0, 0)
    metric_kind: str = ""  # what the metrics call its kind (a copy's kind, or the RPC's name)
    clock: metrics.JobClock | None = None  # while its thread runs

    @property
    def done(self) -> bool:
        return self.metadata.state in FINISHED

    def operation(self) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=self.name, done=self.done)
        op.metadata.Pack(self.metadata)
        if self.response is not None:
            op.response.CopyFrom(self.response)
        elif self.error is not None:
            op.error.CopyFrom(self.error)
        return op


class JobContext:
    """What a running job uses to report progress and notice cancellation."""

    def __init__(self, registry: OperationRegistry, job: _Job) -> None:
        self._registry = registry
        self._job = job

    @property
    def operation_id(self) -> str:
        return self._job.name.removeprefix(PREFIX)

    def stage(self, text: str) -> None:
        self._registry._update(self._job, stage=text)

    def queued(self, waiting_for: str) -> None:
        """The job waits (PENDING) for `waiting_for`; "" when it goes on running."""
        self._registry._queued(self._job, waiting_for)

    def set_host(self, host_id: str) -> None:
        """The host that runs (the next step of) the job."""
        self._registry._update(self._job, host_id=host_id)

    def mirror(self, meta: types_pb2.OperationMetadata, stage: str) -> None:
        """Show the progress of a job this one follows (a node's copy)."""
        self._registry._update(
            self._job,
            stage=f"{stage}: {meta.stage}" if meta.stage else stage,
            done=meta.bytes_done,
            total=meta.bytes_total or None,
            written=meta.bytes_written,
            rate=meta.rate_bytes_per_second,
            state=meta.state if meta.state in RUNNABLE else None,
            waiting_for=meta.waiting_for,
        )

    def hold(self, holds: Sequence[Hold]) -> None:
        """Take more holds for the rest of the job (ABORTED now if they conflict)."""
        release = self._registry.locks.acquire(holds, self._job.metadata.kind)
        with self._registry._lock:
            self._job.releases.append(release)

    def progress(
        self,
        done: int,
        total: int | None = None,
        written: int | None = None,
        rate: int | None = None,
    ) -> None:
        self._registry._update(
            self._job,
            done=done,
            total=total,
            written=written,
            rate=rate,
            state=types_pb2.JOB_STATE_RUNNING,
        )

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise errors.Cancelled(f"{self._job.name} was cancelled")

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run `hook` when a cancel arrives (at once if one already has)."""
        with self._registry._lock:
            self._job.cancel_hooks.append(hook)
            already = self.cancelled
        if already:
            hook()


Runner = Callable[[JobContext], Message]


class _Failed(Exception):
    """A job's failure, as the status its operation will carry."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class OperationRegistry:
    def __init__(
        self,
        *,
        host_id: str = "",
        max_running: int | None = None,
        journal: Journal | None = None,
        service_name: str = "spcs",
        locks: Locks | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._host_id = host_id
        self._max_running = max_running
        self._journal = journal
        # Keys (devices, destination files) a job holds while it runs; a conflicting new job
        # gets ABORTED at once. Shared with the RPCs that touch the same objects.
        self.locks: Locks = locks or KeyedLocks()
        if journal is not None:
            self._recover(journal, service_name)

    def _recover(self, journal: Journal, service_name: str) -> None:
        for name, print_, op in journal.load():
            metadata = types_pb2.OperationMetadata()
            op.metadata.Unpack(metadata)
            job = _Job(name, print_, metadata)
            if op.done:
                job.error = op.error if op.HasField("error") else None
                if op.HasField("response"):
                    job.response = op.response
            else:
                ended = interrupted(op, f"{service_name} restarted")
                ended.metadata.Unpack(metadata)
                job.error = ended.error
                journal.save(name, print_, job.operation())
                log.warning("%s was interrupted by a restart; marked failed", name)
            job.finished.set()
            self._jobs[name] = job

    # ---- starting and running -------------------------------------------------------------

    def start(
        self,
        operation_id: str,
        *,
        kind: str,
        fingerprint: str,
        target: str,
        runner: Runner,
        holds: Sequence[Hold] = (),
        metric_kind: str = "",
    ) -> operations_pb2.Operation:
        """Start (or return, on a replay) the job; `holds` are held until it ends.
        `metric_kind`: its kind in the metrics (default: the RPC's name, the end of `kind`)."""
        name = operation_name(operation_id)
        with self._lock:
            existing = self._jobs.get(name)
            if existing is not None:
                if existing.fingerprint != fingerprint or existing.metadata.kind != kind:
                    raise errors.AlreadyExists(
                        f"{name} already exists with different arguments ({existing.metadata.kind}"
                        f" on {existing.metadata.target}); use a new operation id"
                    )
                if existing.metadata.state not in (
                    types_pb2.JOB_STATE_FAILED,
                    types_pb2.JOB_STATE_CANCELLED,
                ):
                    return existing.operation()
            running = sum(1 for job in self._jobs.values() if not job.done)
            if self._max_running is not None and running >= self._max_running:
                raise errors.ResourceExhausted(
                    f"{running} copies are already running on this host (limit "
                    f"{self._max_running}); retry {name} when one has finished"
                )
            release = self.locks.acquire(holds, _label(kind, target, name))
            job = self._new_job(name, fingerprint, kind, target, metric_kind)
            job.releases.append(release)
            self._jobs[name] = job
            self._prune_locked()
            op = job.operation()
        self._persist(job)
        self._launch(job, runner)
        return op

    def _new_job(
        self, name: str, fingerprint: str, kind: str, target: str, metric_kind: str = ""
    ) -> _Job:
        metadata = types_pb2.OperationMetadata(
            kind=kind,
            state=types_pb2.JOB_STATE_PENDING,
            host_id=self._host_id,
            target=target,
            stage="queued",
        )
        metadata.create_time.CopyFrom(_now())
        metadata.update_time.CopyFrom(metadata.create_time)
        return _Job(name, fingerprint, metadata, metric_kind=metric_kind or kind.rsplit("/")[-1])

    def _launch(self, job: _Job, runner: Runner) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(job, runner),
            name=f"job-{job.name.removeprefix(PREFIX)}",
            daemon=True,
        )
        thread.start()

    def _run(self, job: _Job, runner: Runner) -> None:
        REQUEST_ID.set(job.name.removeprefix(PREFIX))
        started = time.monotonic()
        job.clock = metrics.JobClock(job.metric_kind)
        self._update(job, state=types_pb2.JOB_STATE_RUNNING, stage="starting")
        try:
            result, error = self._execute(job, runner), None
        except _Failed as failure:
            result, error = None, failure.status
        except BaseException:
            job.clock.ended("failed", 0)
            raise
        # Free the holds before the job shows as finished, so a caller that waited for it can
        # start the next operation on the same device without meeting our lease.
        with self._lock:
            releases, job.releases = job.releases, []
        for release in releases:
            release()
        self._finish(job, result=result, error=error)
        meta = job.metadata
        job.clock.ended(ENDED.get(meta.state, "failed"), meta.bytes_written or meta.bytes_done)
        if error is None:
            log.info(
                "%s succeeded in %.1fs (%d bytes)",
                job.name,
                time.monotonic() - started,
                job.metadata.bytes_done,
            )

    def _execute(self, job: _Job, runner: Runner) -> Message:
        try:
            return runner(JobContext(self, job))
        except SpcsError as error:
            cancelled = isinstance(error, errors.Cancelled) or job.cancel_requested.is_set()
            code = grpc.StatusCode.CANCELLED if cancelled else errors.status_code(error)
            log.log(
                logging.INFO if cancelled else logging.WARNING,
                "%s %s: %s",
                job.name,
                "cancelled" if cancelled else "failed",
                error.message,
            )
            reason = errors.Cancelled.reason if cancelled else error.reason
            raise _Failed(errors.rich_status(code, error.message, reason)) from None
        except Exception:
            log.exception("%s failed unexpectedly", job.name)
            raise _Failed(
                status_pb2.Status(
                    code=grpc.StatusCode.INTERNAL.value[0],
                    message=f"{job.name} failed with an internal error; see the service log",
                )
            ) from None

    def _finish(
        self, job: _Job, *, result: Message | None = None, error: status_pb2.Status | None = None
    ) -> None:
        packed = None
        if result is not None:
            packed = any_pb2.Any()
            packed.Pack(result)
        with self._lock:
            job.response, job.error = packed, error
            if result is not None:
                job.metadata.state = types_pb2.JOB_STATE_SUCCEEDED
                job.metadata.stage = "done"
                if job.metadata.bytes_total:
                    job.metadata.bytes_done = job.metadata.bytes_total
            elif error is not None and error.code == grpc.StatusCode.CANCELLED.value[0]:
                job.metadata.state = types_pb2.JOB_STATE_CANCELLED
            else:
                job.metadata.state = types_pb2.JOB_STATE_FAILED
            job.metadata.end_time.CopyFrom(_now())
            job.metadata.update_time.CopyFrom(job.metadata.end_time)
            job.metadata.rate_bytes_per_second = 0
        self._persist(job)
        job.finished.set()

    def _update(
        self,
        job: _Job,
        *,
        stage: str | None = None,
        done: int | None = None,
        total: int | None = None,
        written: int | None = None,
        rate: int | None = None,
        state: types_pb2.JobState.ValueType | None = None,
        host_id: str | None = None,
        waiting_for: str | None = None,
    ) -> None:
        changed_stage = False
        with self._lock:
            meta = job.metadata
            if stage is not None and stage != meta.stage:
                meta.stage, changed_stage = stage, True
            if state is not None and meta.state not in FINISHED:
                meta.state = state
            if host_id is not None:
                meta.host_id = host_id
            if waiting_for is not None:
                meta.waiting_for = waiting_for
            if total is not None:
                meta.bytes_total = total
            if written is not None:
                meta.bytes_written = written
            if done is not None:
                _count(job, done, rate)
            meta.update_time.CopyFrom(_now())
        if changed_stage:
            self._persist(job)

    def _queued(self, job: _Job, waiting_for: str) -> None:
        if job.clock is not None:
            job.clock.queued(bool(waiting_for))
        if waiting_for:
            self._update(
                job,
                state=types_pb2.JOB_STATE_PENDING,
                waiting_for=waiting_for,
                stage=f"queued: waiting for {waiting_for}",
            )
        elif job.metadata.waiting_for:
            self._update(job, state=types_pb2.JOB_STATE_RUNNING, waiting_for="", stage="running")

    def _persist(self, job: _Job) -> None:
        if self._journal is None:
            return
        with self._lock:
            op = job.operation()
        try:
            self._journal.save(job.name, job.fingerprint, op)
        except Exception as error:  # a journal failure must not break the job itself
            log.warning("could not journal %s: %s", job.name, error)

    def _prune_locked(self) -> None:
        finished = [job for job in self._jobs.values() if job.done]
        for job in sorted(finished, key=lambda j: j.metadata.end_time.ToNanoseconds())[
            : max(0, len(finished) - KEEP_FINISHED)
        ]:
            del self._jobs[job.name]
            if self._journal is not None:
                self._journal.forget(job.name)

    # ---- the Operations API ---------------------------------------------------------------

    def _job(self, name: str) -> _Job:
        job = self._jobs.get(name)
        if job is None:
            raise errors.NotFound(
                f"operation {validate.shown(name)} is not known here (names look like "
                "operations/<id>; finished operations are kept for the last 1000)"
            )
        return job

    def get(self, name: str) -> operations_pb2.Operation:
        with self._lock:
            return self._job(name).operation()

    def list(
        self, filter_text: str, page_size: int, page_token: str
    ) -> tuple[list[operations_pb2.Operation], str]:
        want_done = _parse_filter(filter_text)
        try:
            offset = int(page_token) if page_token else 0
        except ValueError:
            raise errors.InvalidArgument(f"page_token {page_token!r} is not valid") from None
        size = page_size if page_size > 0 else 100
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.metadata.create_time.ToNanoseconds())
            ops = [job.operation() for job in jobs if want_done is None or job.done == want_done]
        page = ops[offset : offset + size]
        next_token = str(offset + size) if offset + size < len(ops) else ""
        return page, next_token

    def cancel(self, name: str) -> None:
        with self._lock:
            job = self._job(name)
            if job.done:
                return
            job.cancel_requested.set()
            hooks = list(job.cancel_hooks)
            job.metadata.stage = "cancelling"
            job.metadata.cancel_requested = True
        log.info("%s: cancel requested", name)
        for hook in hooks:
            hook()

    def delete(self, name: str) -> None:
        with self._lock:
            job = self._job(name)
            if not job.done:
                raise errors.FailedPrecondition(
                    f"{name} is still running; cancel it first (CancelOperation)"
                )
            del self._jobs[name]
        if self._journal is not None:
            self._journal.forget(name)

    def wait(self, name: str, timeout: float | None) -> operations_pb2.Operation:
        with self._lock:
            job = self._job(name)
        limit = MAX_WAIT_SECONDS if not timeout or timeout <= 0 else min(timeout, MAX_WAIT_SECONDS)
        job.finished.wait(limit)
        return self.get(name)

    def running(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.done)

    def is_running(self, operation_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(PREFIX + operation_id)
            return job is not None and not job.done


def _parse_filter(text: str) -> bool | None:
    text = (text or "").strip().replace(" ", "")
    if not text:
        return None
    if text in ("done=true", "done=false"):
        return text == "done=true"
    raise errors.InvalidArgument(
        f"filter {text!r} is not supported; use '', 'done=true' or 'done=false'"
    )


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """google.longrunning.Operations over an OperationRegistry."""

    def __init__(self, registry: OperationRegistry) -> None:
        self._registry = registry

    def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._registry.get(request.name)

    def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        ops, token = self._registry.list(request.filter, request.page_size, request.page_token)
        return operations_pb2.ListOperationsResponse(operations=ops, next_page_token=token)

    def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._registry.cancel(request.name)
        return empty_pb2.Empty()

    def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._registry.delete(request.name)
        return empty_pb2.Empty()

    def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        timeout = (
            request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else None
        )
        remaining = context.time_remaining()
        if remaining is not None:
            # never 0, which the registry reads as "no timeout" (60 s, past the caller's deadline)
            timeout = max(0.001, min(timeout or remaining, remaining - 0.5))
        return self._registry.wait(request.name, timeout)
