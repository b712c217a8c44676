"""`spcs version`: the package, protocol and data-mover versions."""

from __future__ import annotations

import argparse

from spcs import __version__


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace) -> int:
    from spcs import _datamover

    versions = {"spcs": __version__, "api": "spcs.v1", "datamover": _datamover.__version__}
    if args.json:
        import json

        print(json.dumps(versions))
    else:
        print(" ".join(f"{k} {v}" for k, v in versions.items()))
    return 0
