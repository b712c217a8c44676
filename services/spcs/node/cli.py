"""`spcs node`: run the node service on a KVM host."""

from __future__ import annotations

import argparse

from spcs.common.service_cli import serve
from spcs.common.settings import add_options
from spcs.node.settings import OPTIONS, NodeSettings


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def run(args: argparse.Namespace) -> int:
    from spcs.node import app  # imported only when the service really starts

    return serve("node", args, NodeSettings.from_args, app.build)
