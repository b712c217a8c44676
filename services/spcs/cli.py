# PYTHON_ARGCOMPLETE_OK (the marker argcomplete's shell hook looks for)
"""The `spcs` command line: one entry point, a subcommand per component.

Each component keeps its own flags in `spcs.<component>.cli`, which exposes
`configure(parser)` and `run(args) -> int`; this module only wires them up, so
`spcs --help` stays cheap (components are imported when their subcommand runs). Shell
completion is argcomplete's: `eval "$(register-python-argcomplete spcs)"` in bash or zsh.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# subcommand -> (module holding configure/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "management": ("spcs.management.cli", "run the management service (one per CloudStack region)"),
    "migrate-db": (
        "spcs.management.cli_migrate",
        "move the management service's SQLite state into an empty MariaDB/MySQL database",
    ),
    "node": ("spcs.node.cli", "run the node service (one per KVM host)"),
    "emulator": ("spcs.emulator.cli", "run the embedded StorPool API emulator"),
    "convert": ("spcs.datamover.cli_convert", "convert/copy a disk image (RAW, QCOW2)"),
    "info": ("spcs.datamover.cli_info", "describe a disk image like `qemu-img info`"),
    "ctl": (
        "spcs.ctl.cli",
        "see and cancel what the services hold and run (pools, nodes, operations)",
    ),
    "demo": ("spcs.demo.cli", "run the end-to-end demo on this machine"),
    "up": ("spcs.demo.up", "run emulator + management + node in the foreground"),
    "version": ("spcs.version_cli", "print the spcs version"),
}


def _peek_subcommand(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(only: str | None = None, *, every: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spcs",
        description="StorPool primary storage for Apache CloudStack.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if every or name == only:
            importlib.import_module(module_name).configure(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (argcomplete's protocol)
        import argcomplete  # only here: its import is a quarter of a short command's start

        argcomplete.autocomplete(build_parser(every=True))
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _peek_subcommand(args_list)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(args_list)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
