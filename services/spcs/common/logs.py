"""Logging set-up shared by every spcs process, and the request id every log line carries.

Logs go to stderr by default (systemd's journal collects them) or to a file when configured.
Each record gets `request_id`: the id of the RPC being served on this thread (or "-").

Two formats: text (the default, `FORMAT`) and JSON (`--log-format json`: one object per line,
with the RPC line's fields as fields of their own, `JsonFormatter`). In both, every secret a
service registered (`add_secret`: StorPool tokens, the database password) is replaced by
`<redacted>` wherever a message carries it, as a last line of defence behind the redaction of
requests (`interceptors.redacted_text`).

Every RPC writes a line, so records are written by a logging thread (the standard library's
QueueHandler/QueueListener): the serving thread only stamps the request id and enqueues the
record; formatting, the file's rotation check and the write happen off the RPC's path. The
writer drains the queue every WRITE_INTERVAL instead of waking for each record: a wake-up per
record put thread switches and a wait for the GIL on every RPC's path (measured on a 2-vCPU VM:
17 → 12 context switches per no-op RPC in the server). The queue is drained when the process
exits.
"""

from __future__ import annotations

import atexit
import contextvars
import datetime
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from pathlib import Path

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("spcs_request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
REDACTED = "<redacted>"
# a value this short is no secret worth the name, and replacing it would mangle other text
SHORTEST_SECRET = 8
# A record's structured fields (the RPC line's method, status and durations): JSON shows them
# as fields of their own, text only in the message.
FIELDS = "spcs_fields"

_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()

WRITE_INTERVAL = 0.05  # seconds a record may wait in the queue

_listener: logging.handlers.QueueListener | None = None


class RequestIdFilter(logging.Filter):
    """Stamps the current RPC's request id on every record (in the thread that logs it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class _Enqueue(logging.handlers.QueueHandler):
    """Hands the record over as it is: the writer thread formats it (QueueHandler.prepare would
    format it here, on the RPC's thread)."""

    _spcs = True  # marks spcs's handler: `shutdown` removes it

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _BatchingListener(logging.handlers.QueueListener):
    """Sleeps while the queue is empty rather than blocking on it, so that enqueueing a record
    never wakes a thread (`dequeue` is the override point the standard library documents)."""

    def __init__(
        self,
        records: queue.SimpleQueue[logging.LogRecord],
        *handlers: logging.Handler,
        respect_handler_level: bool = False,
    ) -> None:
        super().__init__(records, *handlers, respect_handler_level=respect_handler_level)
        self._records = records

    def dequeue(self, block: bool) -> logging.LogRecord:
        # as QueueListener's own: the stop sentinel (None) comes through like a record
        while True:
            try:
                return self._records.get_nowait()
            except queue.Empty:
                if not block:
                    raise
                time.sleep(WRITE_INTERVAL)


def add_secret(value: str | None) -> None:
    """Never write `value` to the log, whatever message carries it."""
    global _secrets
    if value and len(value) >= SHORTEST_SECRET and value not in _secrets:
        with _secrets_lock:
            _secrets = _secrets | {value}


def redacted(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redacted(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601 with milliseconds), level, logger,
    request_id, message, the record's structured fields (`FIELDS`) and, for an error with a
    traceback, exception."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redacted(json.dumps(line, ensure_ascii=False, default=str))


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # writes what is still queued
        for writer in _listener.handlers:
            writer.close()
        _listener = None


def shutdown() -> None:
    """Write what is still queued and stop logging through spcs's handler (call it before
    removing the log file's directory; later records go to Python's last-resort stderr)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_spcs", False):
            root.removeHandler(handler)
            handler.close()
    _stop_listener()


def setup(level: str = "INFO", log_file: Path | None = None, log_format: str = "text") -> None:
    """Configure the root logger once for this process (idempotent)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    global _listener
    # Skip what FORMAT never prints (the switches the logging HOWTO's "Optimization" documents).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller frame lookup (no %(filename)s / %(lineno)d)
    shutdown()
    root = logging.getLogger()
    if log_file is not None:
        # WatchedFileHandler reopens the file after logrotate moves it.
        writer: logging.Handler = logging.handlers.WatchedFileHandler(log_file)
    else:
        writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = _BatchingListener(records, writer, respect_handler_level=False)
    _listener.start()
    enqueue = _Enqueue(records)
    enqueue.addFilter(RequestIdFilter())
    root.addHandler(enqueue)
    root.setLevel(level)
    # grpc's own chatter at INFO is not useful to operators.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))


atexit.register(_stop_listener)
