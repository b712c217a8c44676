"""What `spcs management` and `spcs node` share: load settings, set up logs, serve until stopped.

Exit codes: 0 after a clean stop, 2 for a configuration error (with a message naming the
setting), 1 when the service cannot start (port in use, database or dependency problem).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from spcs.common import logs
from spcs.common.errors import SpcsError
from spcs.common.server import Server
from spcs.common.settings import ConfigError, ServerSettings
from spcs.common.sqlite import DatabaseError

log = logging.getLogger(__name__)


class _HasServer(Protocol):
    @property
    def server(self) -> ServerSettings: ...


S = TypeVar("S", bound=_HasServer)


def serve(
    name: str,
    args: argparse.Namespace,
    load: Callable[[argparse.Namespace], S],
    build: Callable[[S], Server],
) -> int:
    try:
        settings = load(args)
        try:
            logs.setup(
                settings.server.log_level, settings.server.log_file, settings.server.log_format
            )
        except OSError as error:  # checked by the settings, but it may have changed since
            reason = f"cannot open {settings.server.log_file}: {error.strerror or error}"
            raise ConfigError("--log-file", reason) from None
    except ConfigError as error:
        print(f"spcs {name}: configuration error: {error}", file=sys.stderr)
        return 2
    try:
        return build(settings).serve_forever()
    except (OSError, DatabaseError, SpcsError) as error:
        log.error("cannot start: %s", error)
        # the log's writer thread shares stderr: let it finish first, or its line can land
        # inside this one
        logs.shutdown()
        print(f"spcs {name}: cannot start: {error}", file=sys.stderr)
        return 1
