"""Logging set-up shared by every spcs process, and the request id every log line carries.

Logs go to stderr by default (systemd's journal collects them) or to a file when configured.
Each record gets `request_id`: the id of the RPC being served on this thread (or "-").
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import sys
from pathlib import Path

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("spcs_request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class RequestIdFilter(logging.Filter):
    """Stamps the current RPC's request id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def setup(level: str = "INFO", log_file: Path | None = None) -> None:
    """Configure the root logger once for this process (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_spcs", False):
            root.removeHandler(handler)
            handler.close()
    if log_file is not None:
        # WatchedFileHandler reopens the file after logrotate moves it.
        handler: logging.Handler = logging.handlers.WatchedFileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler._spcs = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # grpc's own chatter at INFO is not useful to operators.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
