"""`spcs node`: run the node service on a KVM host."""

from __future__ import annotations

import argparse
import logging
import sys

from spcs.common import logs
from spcs.common.errors import SpcsError
from spcs.common.settings import ConfigError, add_options
from spcs.node.settings import OPTIONS, NodeSettings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def run(args: argparse.Namespace) -> int:
    try:
        settings = NodeSettings.from_args(args)
    except ConfigError as error:
        print(f"spcs node: configuration error: {error}", file=sys.stderr)
        return 2
    logs.setup(settings.server.log_level, settings.server.log_file)
    from spcs.node import app

    try:
        return app.build(settings).serve_forever()
    except (OSError, SpcsError) as error:
        log.error("cannot start: %s", error)
        print(f"spcs node: cannot start: {error}", file=sys.stderr)
        return 1
