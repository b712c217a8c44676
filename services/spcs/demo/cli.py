"""`spcs demo`: the whole lifecycle on this machine, then everything is stopped and removed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from spcs.common import logs
from spcs.demo.stack import Stack
from spcs.demo.story import GIB, DemoFailure, Story
from spcs.demo.webserver import TemplateServer


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep state, logs and secondary storage here (default: a temporary "
        "directory, removed afterwards)",
    )
    parser.add_argument(
        "--template-gib",
        type=int,
        default=2,
        help="virtual size of the demo template in GiB (default 2)",
    )


def run(args: argparse.Namespace) -> int:
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="spcs-demo-")) if temporary else args.workdir.resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    logs.setup("INFO", workdir / "logs" / "emulator.log")
    started = time.monotonic()
    print("spcs demo: StorPool primary storage for CloudStack, end to end on this machine")
    print(f"  state and logs in {workdir}")
    # the direct-download templates' web server; the nodes fetch only from it
    (workdir / "secondary").mkdir(exist_ok=True)
    web = TemplateServer(workdir / "secondary").start()
    stack = Stack(workdir, hosts=2, second_zone=True, node_args=["--direct-download-url", web.url])
    failure: str | None = None
    try:
        stack.start()
        assert stack.management is not None
        print(
            f"  emulator with 2 KVM hosts (and a second zone's StorPool), management "
            f"{stack.management.address}, nodes " + ", ".join(n.address for n in stack.nodes)
        )
        print(f"{'':>4}{'step':<50} {'time':>8}  {'written':>10}  {'rate':>12}  check")
        Story(stack, template_size=args.template_gib * GIB, web_url=web.url).run()
    except DemoFailure as error:
        failure = str(error)
    except Exception as error:  # report, stop everything, exit non-zero
        failure = f"{type(error).__name__}: {error}"
    finally:
        stack.stop()
        web.stop()
    codes = stack.last_exit_codes
    if failure is None and any(code != 0 for code in codes.values()):
        failure = f"a service did not stop cleanly: {codes}"
    elapsed = time.monotonic() - started
    if failure is not None:
        print(f"\nFAILED after {elapsed:.1f}s: {failure}", file=sys.stderr)
        print(f"logs: {workdir / 'logs'}", file=sys.stderr)
        return 1
    print(f"\nall steps passed in {elapsed:.1f}s; every service stopped cleanly")
    if temporary:
        logs.shutdown()  # the emulator's last lines are still queued for the log file
        stack.remove()
    return 0
