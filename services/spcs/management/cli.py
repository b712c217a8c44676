"""`spcs management`: run the management service."""

from __future__ import annotations

import argparse

from spcs.common.service_cli import serve
from spcs.common.settings import add_options
from spcs.management.settings import OPTIONS, ManagementSettings


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def run(args: argparse.Namespace) -> int:
    from spcs.management import app  # imported only when the service really starts

    return serve("management", args, ManagementSettings.from_args, app.build)
