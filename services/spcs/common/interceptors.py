"""Server interceptor: request ids, one log line per RPC, domain errors → status codes.

Every unary RPC gets a request id (the caller's `x-request-id` metadata, or a new one), sent
back in the trailing metadata and stamped on every log line written while serving it. When the call
ends one line is logged: method, request id, the request's key (its idempotency key or object),
duration and status. A `SpcsError` becomes its status code with its message and an ErrorInfo
detail; any other exception is logged with its traceback and answered INTERNAL with the
request id, never with a Python traceback.

Before the handler runs, two checks every RPC gets: bytes that are not a valid request message
and enum fields with a value the contract does not define are INVALID_ARGUMENT naming what is
wrong (one log line, no traceback). Messages are cut to MAX_MESSAGE characters, so an error
that quotes an oversized field still fits gRPC's metadata limit.
"""

from __future__ import annotations

import abc
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from spcs.common import errors, logs, metrics, secrets, upstream_time
from spcs.common.errors import InvalidArgument, SpcsError, status_code
from spcs.common.logs import REQUEST_ID

if TYPE_CHECKING:
    from google._upb._message import Descriptor as _UpbDescriptor

log = logging.getLogger(__name__)

# A message type's descriptor (types-protobuf's `Message.DESCRIPTOR`: pure-Python or upb).
MessageDescriptor: TypeAlias = "Descriptor | _UpbDescriptor"
# The handler of any method (interceptors see every message type).
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

REQUEST_ID_HEADER = "x-request-id"
ERROR_DOMAIN = errors.ERROR_DOMAIN
# Frequent calls logged at DEBUG so they do not drown the log.
QUIET_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/spcs.v1.Identity/Probe",
        "/spcs.v1.NodeRegistry/RegisterNode",
        "/google.longrunning.Operations/GetOperation",
        "/google.longrunning.Operations/WaitOperation",
    }
)
# Request fields that identify what a call acts on, most specific first.
KEY_FIELDS = (
    "operation_id",
    "vm_snapshot_uuid",
    "volume.uuid",
    "snapshot.uuid",
    "template.uuid",
    "object.volume.uuid",
    "object.snapshot.uuid",
    "object.template.uuid",
    "source.volume.uuid",
    "pool_uuid",
    "pool.pool_uuid",
    "disk.path",
    "path",
    "volume_path",
    "host_id",
    "name",
)
SLOW_CALL_SECONDS = 30.0
# Status messages travel in a header; gRPC refuses headers past 8 KiB (with ErrorInfo beside).
MAX_MESSAGE = 2048
# The trailer that carries the google.rpc.Status (grpc_status.rpc_status's constant of that
# name, which its type stubs leave out).
GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"


def _paths(descriptor: MessageDescriptor) -> tuple[tuple[str, ...], ...]:
    """The KEY_FIELDS that exist in a message type (worked out once per type)."""
    found = []
    for dotted in KEY_FIELDS:
        current: MessageDescriptor | None = descriptor
        parts = tuple(dotted.split("."))
        for part in parts:
            field = current.fields_by_name.get(part) if current is not None else None
            if field is None:
                break
            current = field.message_type
        else:
            if current is None:  # ends on a scalar
                found.append(parts)
    return tuple(found)


_PATHS: dict[MessageDescriptor, tuple[tuple[str, ...], ...]] = {}


def request_key(request: object) -> str:
    """The idempotency key or the object a request acts on, for the log line."""
    if not isinstance(request, Message):
        return "-"
    paths = _PATHS.get(request.DESCRIPTOR)
    if paths is None:
        paths = _PATHS[request.DESCRIPTOR] = _paths(request.DESCRIPTOR)
    for parts in paths:
        value: Any = request
        for part in parts[:-1]:
            if not value.HasField(part):
                break
            value = getattr(value, part)
        else:
            text = getattr(value, parts[-1])
            if text and isinstance(text, str):
                return text
    return "-"


def _redact(message: Message) -> None:
    for holder, field in list(secrets.secret_fields(message)):
        holder.ClearField(field.name)
        if field.type == field.TYPE_STRING and not field.is_repeated:
            setattr(holder, field.name, "<redacted>")


def redacted_text(message: object) -> str:
    """One-line text of a request with every field marked `secret` replaced."""
    if not isinstance(message, Message):
        return repr(type(message))
    copy = type(message)()
    copy.CopyFrom(message)
    _redact(copy)
    return text_format.MessageToString(copy, as_one_line=True)


@dataclass(frozen=True)
class _Malformed:
    """What the deserializer hands on when the bytes are not a request message."""

    type_name: str
    error: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The request deserializer, answering _Malformed instead of raising (grpcio would log a
    traceback and answer INTERNAL)."""
    if deserializer is None:
        return None
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = type_name.full_name if type_name is not None else "request"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as error:
            return _Malformed(name, str(error) or type(error).__name__)

    return deserialize


def unknown_enum(message: Message, prefix: str = "") -> str | None:
    """The first enum field (dotted path) whose value the contract does not define, with the
    values it allows, or None."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            assert enum is not None  # an enum field always has its enum type
            known = enum.values_by_number
            for item in value if field.is_repeated else (value,):
                if item not in known:
                    names = ", ".join(v.name for v in enum.values)
                    return f"{path}={item} is not a valid {enum.name} (one of {names})"
        elif field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name["value"]
                items = value.values() if entry.message_type is not None else ()
            else:
                items = value if field.is_repeated else (value,)
            for item in items:
                found = unknown_enum(item, f"{path}.")
                if found:
                    return found
    return None


def bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return message[: MAX_MESSAGE - 40] + f"... ({len(message)} characters, cut)"


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, reason: str, rid: str
) -> None:
    message = bounded(message)
    status = errors.rich_status(code, message, reason)
    # the rich status and the request id both travel in the trailers
    context.abort_with_status(
        _Status(
            code,
            message,
            (
                (GRPC_DETAILS_METADATA_KEY, status.SerializeToString()),
                (REQUEST_ID_HEADER, rid),
            ),
        )
    )


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)
    return uuid.uuid4().hex[:12]


class WrappingInterceptor(grpc.ServerInterceptor, abc.ABC):
    """A server interceptor that wraps the handler of each method once and reuses it: building
    the wrapper per call cost more than the rest of the interceptor."""

    def __init__(self) -> None:
        self._wrapped: dict[str, MethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], MethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or not self.wraps(method, handler):
            return handler
        wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    @abc.abstractmethod
    def wraps(self, method: str, handler: MethodHandler) -> bool:
        """Whether this interceptor wraps `method` (else its handler passes through)."""

    @abc.abstractmethod
    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        """The handler that runs instead of `handler`."""


class CallInterceptor(WrappingInterceptor):
    """Wraps every unary-unary and stream-unary handler (for a request stream, each message is
    checked as it is read, and the first one names the call's object in the log); the
    server-streaming RPCs (health Watch, reflection) pass through.

    The request id goes back in the trailing metadata, which travels with the status (an early
    header send blocked each call for ~0.1 ms).
    """

    def wraps(self, method: str, handler: MethodHandler) -> bool:
        return handler.unary_unary is not None or handler.stream_unary is not None

    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        if handler.stream_unary is not None:
            stream_inner = handler.stream_unary

            def stream_behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                seen: list[object] = []

                def checked() -> Iterator[Any]:
                    for request in requests:
                        _check_request(request)
                        if not seen:
                            seen.append(request)
                        yield request

                return _serve(
                    method,
                    context,
                    lambda: stream_inner(checked(), context),
                    lambda: seen[0] if seen else None,
                )

            return grpc.stream_unary_rpc_method_handler(
                stream_behavior,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        inner = handler.unary_unary
        assert inner is not None  # see `wraps`

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            def call() -> Any:
                _check_request(request)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s request: %s", method, redacted_text(request))
                return inner(request, context)

            return _serve(method, context, call, lambda: request)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _serve(
    method: str,
    context: grpc.ServicerContext,
    call: Callable[[], Any],
    request: Callable[[], object],
) -> Any:
    """One call of a handler: its request id, the status a domain error maps to (a traceback
    only for a bug), metrics and the log line."""
    rid = _request_id(context)
    token = REQUEST_ID.set(rid)
    upstream, tally = upstream_time.open_tally()
    started = time.monotonic()
    code = grpc.StatusCode.OK
    try:
        reply = call()
        context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
        return reply
    except SpcsError as error:
        code = status_code(error)
        _abort(context, code, error.message, error.reason, rid)
    except Exception:
        aborted = _aborted(context)
        if aborted is not None:
            code = aborted  # the handler aborted on its own
            raise
        code = grpc.StatusCode.INTERNAL
        log.exception("%s failed unexpectedly", method)  # a bug: the traceback
        _internal(context, method, rid)
    finally:
        elapsed = time.monotonic() - started
        metrics.RPC_SECONDS.labels(method, code.name).observe(elapsed)
        metrics.RPCS.labels(method, code.name).inc()
        _log_call(method, request(), code, elapsed, upstream)
        upstream_time.close_tally(tally)
        REQUEST_ID.reset(token)


def _check_request(request: object) -> None:
    """A request that did not parse, or names an enum value the contract lacks, is bad input."""
    if isinstance(request, _Malformed):
        raise InvalidArgument(
            f"the request is not a valid {request.type_name} message "
            f"({request.error}); send the message the contract defines"
        )
    problem = unknown_enum(request) if isinstance(request, Message) else None
    if problem:
        raise InvalidArgument(problem)


def _aborted(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status a handler set by aborting the call itself (None if it did not)."""
    # grpcio has ServicerContext.code() since 1.38; types-grpcio leaves it out
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code if code is not None and code != grpc.StatusCode.OK else None


def _internal(context: grpc.ServicerContext, method: str, rid: str) -> None:
    """Not a domain error: INTERNAL, naming the request id the log line carries."""
    _abort(
        context,
        grpc.StatusCode.INTERNAL,
        f"internal error in {method} (request {rid}); the service log has the details",
        "INTERNAL",
        rid,
    )


def _log_call(
    method: str, request: object, code: grpc.StatusCode, elapsed: float, upstream: list[float]
) -> None:
    """One line per RPC; frequent calls that succeed at DEBUG, slow ones at WARNING."""
    quiet = method in QUIET_METHODS and code == grpc.StatusCode.OK
    level = logging.DEBUG if quiet else logging.INFO
    if elapsed > SLOW_CALL_SECONDS:
        level = logging.WARNING
    if not log.isEnabledFor(level):
        return
    fields = {
        "method": method,
        "object": request_key(request),
        "status": code.name,
        "ms": round(elapsed * 1000, 2),
        "storpool_ms": round(upstream[upstream_time.STORPOOL] * 1000, 2),
        "db_ms": round(upstream[upstream_time.DATABASE] * 1000, 2),
    }
    log.log(
        level,
        "rpc=%s key=%s status=%s ms=%.2f storpool_ms=%.2f db_ms=%.2f",
        *fields.values(),
        extra={logs.FIELDS: fields},
    )
