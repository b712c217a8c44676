"""Domain errors and the one table that maps them to gRPC status codes.

Domain code raises these; the server interceptor turns them into a status with the message as
written (so messages must name the object and say what to do) plus a
`google.rpc.ErrorInfo` whose `reason` is the stable UPPER_SNAKE name below. Backends translate
their own errors into these at their boundary (StorPool API errors in `spcs.storpool.api`,
data-mover errors in the node's copy code); nothing else decides status codes.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

# The ErrorInfo domain of every error spcs answers.
ERROR_DOMAIN = "spcs"


class SpcsError(Exception):
    """Base of every error a caller may see. `message` is shown to the caller verbatim."""

    reason = "SPCS_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(SpcsError):
    """A request field is missing or invalid; the caller must fix the request."""

    reason = "INVALID_ARGUMENT"


class NotFound(SpcsError):
    """The object the request names does not exist."""

    reason = "NOT_FOUND"


class AlreadyExists(SpcsError):
    """The idempotency key exists with different arguments."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(SpcsError):
    """The system is not in a state the operation needs (attached, in use, not empty ...)."""

    reason = "FAILED_PRECONDITION"


class Conflict(SpcsError):
    """Another operation on the same object is in flight; retry with backoff."""

    reason = "OPERATION_IN_PROGRESS"


class OutOfRange(SpcsError):
    """A size or count beyond what the object allows (shrink without permission ...)."""

    reason = "OUT_OF_RANGE"


class ResourceExhausted(SpcsError):
    """No space or no free slot (StorPool capacity, secondary disk full, copy slots)."""

    reason = "RESOURCE_EXHAUSTED"


class Unavailable(SpcsError):
    """A dependency (StorPool API, a node) cannot be reached now; safe to retry."""

    reason = "UNAVAILABLE"


class PermissionDenied(SpcsError):
    """A dependency refused our credentials (StorPool token)."""

    reason = "PERMISSION_DENIED"


class DeadlineExceeded(SpcsError):
    """Something we waited for did not happen in time (a device that never appeared)."""

    reason = "DEADLINE_EXCEEDED"


class Cancelled(SpcsError):
    """The operation was cancelled by a caller."""

    reason = "CANCELLED"


class DataLoss(SpcsError):
    """Data read back does not match what was written."""

    reason = "DATA_LOSS"


class Internal(SpcsError):
    """A bug or an unexpected backend answer; the log has the details."""

    reason = "INTERNAL"


class Unimplemented(SpcsError):
    """The RPC exists in the contract but this version does not implement it."""

    reason = "UNIMPLEMENTED"


# The table. Subclasses not listed inherit the code of their nearest listed base.
STATUS_CODES: dict[type[SpcsError], grpc.StatusCode] = {
    SpcsError: grpc.StatusCode.UNKNOWN,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.ABORTED,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    DataLoss: grpc.StatusCode.DATA_LOSS,
    Internal: grpc.StatusCode.INTERNAL,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}

# The reverse direction, for errors a downstream spcs service (a node) returned to us.
_BY_CODE: dict[grpc.StatusCode, type[SpcsError]] = {
    code: cls for cls, code in STATUS_CODES.items() if cls is not SpcsError
}


def status_code(error: SpcsError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.UNKNOWN


def from_status(code: grpc.StatusCode, message: str, reason: str = "") -> SpcsError:
    """The domain error for a status another spcs service answered with; its ErrorInfo
    reason (e.g. STORPOOL_OBJECT_DOES_NOT_EXIST) is kept, so it survives the hop."""
    return _BY_CODE.get(code, Internal)(message, reason=reason or None)


def code_of(number: int) -> grpc.StatusCode:
    for candidate in grpc.StatusCode:
        if candidate.value[0] == number:
            return candidate
    return grpc.StatusCode.UNKNOWN


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, domain: str = ERROR_DOMAIN
) -> status_pb2.Status:
    """A `google.rpc.Status` with the ErrorInfo naming `reason`: what a caller receives, in
    the trailers of a failed call and as a failed operation's `error`."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
    return status


def reason_of(status: status_pb2.Status) -> str:
    """The ErrorInfo reason a rich status carries ("" if none)."""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""
