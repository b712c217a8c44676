"""`spcs management`: run the management service."""

from __future__ import annotations

import argparse
import logging
import sys

from spcs.common import logs
from spcs.common.errors import SpcsError
from spcs.common.settings import ConfigError, add_options
from spcs.common.sqlite import DatabaseError
from spcs.management.settings import OPTIONS, ManagementSettings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def run(args: argparse.Namespace) -> int:
    try:
        settings = ManagementSettings.from_args(args)
    except ConfigError as error:
        print(f"spcs management: configuration error: {error}", file=sys.stderr)
        return 2
    logs.setup(settings.server.log_level, settings.server.log_file)
    from spcs.management import app

    try:
        server = app.build(settings)
        return server.serve_forever()
    except (DatabaseError, SpcsError) as error:
        log.error("cannot start: %s", error)
        print(f"spcs management: cannot start: {error}", file=sys.stderr)
        return 1
