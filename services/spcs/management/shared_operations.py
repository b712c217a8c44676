"""Operations that belong to the region, not to one management process.

`SharedOperations` is the management service's operation registry on an `OperationStore` that
every replica shares. Starting an operation claims its row first (one replica wins a race on
the same id; the others, and every replay, answer the operation as it is), then takes its
holds (a conflict undoes the claim and answers ABORTED, as on one replica). The owner writes
its running jobs' state every `BEAT_SECONDS` with a heartbeat; `GetOperation`,
`ListOperations` and `WaitOperation` read the rows, so they answer the same on every replica;
`CancelOperation` sets the row's cancel flag, which the owner sees at its next beat.

Every replica checks each `TAKEOVER_SECONDS` for running operations whose owner has not beaten
for `stale_seconds` (its holds expire as fast): they are marked interrupted ("retry with the
same operation id", as after a restart), and the hooks run (the sweep of their temporaries).
An owner that finds its row taken over (it was presumed dead) stops its job. On SQLite (one
replica, `alone`) every operation still running at start was this service's, and is ended then.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from google.longrunning import operations_pb2

from spcs.common import errors, validate
from spcs.common.holds import Hold
from spcs.common.locks import Locks
from spcs.common.operations import (
    KEEP_FINISHED,
    MAX_WAIT_SECONDS,
    PREFIX,
    OperationRegistry,
    Runner,
    _Job,
    _label,
    _parse_filter,
    interrupted,
    operation_name,
)
from spcs.management.leases import LEASE_SECONDS
from spcs.management.state import OperationRow, OperationStore
from spcs.v1 import types_pb2

log = logging.getLogger(__name__)

BEAT_SECONDS = 1.0
TAKEOVER_SECONDS = 2.0
PRUNE_SECONDS = 300.0
POLL_SECONDS = 0.25
Rows = list[OperationRow]  # (`list` is a method name in the class below)
RETRIED = frozenset({types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_CANCELLED})


def _metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    op.metadata.Unpack(meta)
    return meta


def _not_found(name: str) -> errors.NotFound:
    return errors.NotFound(
        f"operation {validate.shown(name)} is not known in this region (names look like "
        f"operations/<id>; finished operations are kept for the last {KEEP_FINISHED})"
    )


class SharedOperations(OperationRegistry):
    def __init__(
        self,
        store: OperationStore,
        *,
        owner: str,
        service_name: str,
        locks: Locks,
        stale_seconds: float = LEASE_SECONDS,
        alone: bool = False,
    ) -> None:
        super().__init__(service_name=service_name, locks=locks)
        self.store = store
        self.owner = owner
        self.stale_seconds = stale_seconds
        self._service = service_name
        self._attempts: dict[str, int] = {}  # the jobs this replica runs, by their attempt
        self._hooks: list[Callable[[Rows], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if alone:
            for row in store.take_over(None, self._restarted, owner):
                log.warning("%s was interrupted by a restart; marked failed", row.name)

    # ---- starting ---------------------------------------------------------------------------

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
        name = operation_name(operation_id)
        job = self._new_job(name, fingerprint, kind, target, metric_kind)

        def same(row: OperationRow) -> bool:
            return row.fingerprint == fingerprint and _metadata(row.operation).kind == kind

        claim = self.store.claim(
            name,
            fingerprint,
            job.operation(),
            self.owner,
            lambda row: same(row) and _metadata(row.operation).state in RETRIED,
        )
        if not claim.claimed:
            if not same(claim.row):
                meta = _metadata(claim.row.operation)
                raise errors.AlreadyExists(
                    f"{name} already exists with different arguments ({meta.kind} on "
                    f"{meta.target}); use a new operation id"
                )
            with self._lock:
                local = self._jobs.get(name)
                return local.operation() if local is not None else claim.row.operation
        try:
            job.releases.append(self.locks.acquire(holds, _label(kind, target, name)))
        except BaseException:
            self.store.unclaim(claim)
            raise
        with self._lock:
            self._jobs[name] = job
            self._attempts[name] = claim.row.attempt
            op = job.operation()  # as accepted, before the job's thread changes it
        self._launch(job, runner)
        return op

    def _persist(self, job: _Job) -> None:
        with self._lock:
            attempt = self._attempts.get(job.name)
            op = job.operation()
        if attempt is None:
            return
        try:
            ours = self.store.save(job.name, attempt, self.owner, op)
        except Exception as error:  # the beat writes it again; the job goes on
            log.warning("could not record %s: %s", job.name, _text(error))
            return
        if not ours:
            self._lost(job.name)
        elif op.done:
            self._drop(job.name, attempt)

    def _drop(self, name: str, attempt: int) -> None:
        with self._lock:
            if self._attempts.get(name) == attempt:
                del self._attempts[name]
                self._jobs.pop(name, None)

    def _lost(self, name: str) -> None:
        """Another replica took this job's operation over (this one did not beat in time, so
        its holds have expired too): stop the job here."""
        with self._lock:
            job = self._jobs.pop(name, None)
            self._attempts.pop(name, None)
            hooks = list(job.cancel_hooks) if job is not None and not job.done else []
        if job is None or job.done:
            return
        log.warning("%s was taken over by another replica; stopping it here", name)
        job.cancel_requested.set()
        for hook in hooks:
            hook()

    # ---- the Operations API -----------------------------------------------------------------

    def _local(self, name: str) -> _Job | None:
        with self._lock:
            job = self._jobs.get(name)
            return job if job is not None and not job.done else None

    def get(self, name: str) -> operations_pb2.Operation:
        job = self._local(name)
        if job is not None:
            with self._lock:
                return job.operation()
        row = self.store.row(name)
        if row is None:
            raise _not_found(name)
        return row.operation

    def list(
        self, filter_text: str, page_size: int, page_token: str
    ) -> tuple[list[operations_pb2.Operation], str]:
        want_done = _parse_filter(filter_text)
        try:
            offset = int(page_token) if page_token else 0
        except ValueError:
            raise errors.InvalidArgument(f"page_token {page_token!r} is not valid") from None
        size = page_size if page_size > 0 else 100
        rows = self.store.page(want_done, max(0, offset), size + 1)
        ops = []
        for row in rows[:size]:
            job = self._local(row.name)
            if job is None:
                ops.append(row.operation)
            else:
                with self._lock:
                    ops.append(job.operation())
        return ops, str(offset + size) if len(rows) > size else ""

    def cancel(self, name: str) -> None:
        local = self._local(name) is not None
        if self.store.request_cancel(name) is None and not local:
            raise _not_found(name)
        if local:
            with contextlib.suppress(errors.NotFound):  # it has just finished
                super().cancel(name)

    def delete(self, name: str) -> None:
        if self._local(name) is None:
            row = self.store.delete(name)
            if row is None:
                raise _not_found(name)
            if row.operation.done:
                return
        raise errors.FailedPrecondition(
            f"{name} is still running; cancel it first (CancelOperation)"
        )

    def wait(self, name: str, timeout: float | None) -> operations_pb2.Operation:
        limit = MAX_WAIT_SECONDS if not timeout or timeout <= 0 else min(timeout, MAX_WAIT_SECONDS)
        job = self._local(name)
        if job is not None:
            job.finished.wait(limit)
            return self.get(name)
        deadline = time.monotonic() + limit
        while True:
            op = self.get(name)
            left = deadline - time.monotonic()
            if op.done or left <= 0:
                return op
            time.sleep(min(POLL_SECONDS, left))

    def is_running(self, operation_id: str) -> bool:
        name = PREFIX + operation_id
        if self._local(name) is not None:
            return True
        row = self.store.row(name)
        return row is not None and not row.operation.done

    # ---- beating and taking over -----------------------------------------------------------

    def on_take_over(self, hook: Callable[[Rows], None]) -> None:
        """Run `hook(rows)` after operations of a dead replica were taken over."""
        self._hooks.append(hook)

    def beat(self) -> None:
        """Write this replica's jobs with a fresh heartbeat; stop the ones taken over, cancel
        the ones a cancel was asked for on another replica."""
        with self._lock:
            mine = {
                name: (attempt, self._jobs[name].operation())
                for name, attempt in self._attempts.items()
                if name in self._jobs
            }
        lost, asked = self.store.beat(self.owner, mine)
        for name in lost:
            self._lost(name)
        for name in asked:
            job = self._local(name)
            if job is not None and not job.cancel_requested.is_set():
                with contextlib.suppress(errors.NotFound):
                    super().cancel(name)
        for name, (attempt, op) in mine.items():
            if op.done and name not in lost:
                self._drop(name, attempt)

    def take_over(self) -> Rows:
        """End the operations of replicas that stopped beating; runs the hooks when any."""
        taken = self.store.take_over(self.stale_seconds, self._abandoned, self.owner)
        for row in taken:
            log.warning(
                "%s: its replica %s stopped answering; marked interrupted", row.name, row.owner
            )
        if taken:
            for hook in self._hooks:
                hook(taken)
        return taken

    def _restarted(self, row: OperationRow) -> operations_pb2.Operation:
        return interrupted(row.operation, f"{self._service} restarted", row.cancel)

    def _abandoned(self, row: OperationRow) -> operations_pb2.Operation:
        why = f"replica {row.owner} of {self._service} stopped answering"
        return interrupted(row.operation, why, row.cancel)

    def serve(self) -> None:
        """Beat, take over and prune in the background until `stop`."""
        self._thread = threading.Thread(target=self._loop, name="operations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_take_over = next_prune = time.monotonic()
        while not self._stop.wait(BEAT_SECONDS):
            now = time.monotonic()
            steps: list[tuple[str, Callable[[], object]]] = [("beat", self.beat)]
            if now >= next_take_over:
                next_take_over = now + TAKEOVER_SECONDS
                steps.append(("take over", self.take_over))
            if now >= next_prune:
                next_prune = now + PRUNE_SECONDS
                steps.append(("prune", lambda: self.store.prune(KEEP_FINISHED)))
            for what, step in steps:
                try:
                    step()
                except Exception as error:  # the database may be back at the next round
                    log.warning("operations: could not %s: %s", what, _text(error))


def _text(error: Exception) -> str:
    return error.message if isinstance(error, errors.SpcsError) else str(error)
