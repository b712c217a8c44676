"""`spcs up`: emulator + management + nodes in the foreground, for grpcurl and experiments.

Ports are fixed so the commands in the README and docs/grpcurl.md work as written: management
9710, emulator 9712, nodes 9711, 9713, 9714, ..., and a second zone's StorPool (another
location, for snapshot copies between zones) 9720. Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from spcs.common import logs
from spcs.demo.stack import TEMPLATE, Ports, Stack


def node_ports(count: int, first: int) -> tuple[int, ...]:
    ports: list[int] = []
    candidate = first
    while len(ports) < count:
        if candidate != 9712:  # the emulator's
            ports.append(candidate)
        candidate += 1 if ports else 2
    return tuple(ports)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(".spcs-run"),
        help="state, logs, emulated devices and secondary storage (default .spcs-run)",
    )
    parser.add_argument("--hosts", type=int, default=2, help="emulated KVM hosts (default 2)")
    parser.add_argument("--fresh", action="store_true", help="start from an empty workdir")
    parser.add_argument("--management-port", type=int, default=9710)
    parser.add_argument("--emulator-port", type=int, default=9712)
    parser.add_argument(
        "--zone2-port",
        type=int,
        default=9720,
        help="the second zone's emulated StorPool (another location; default 9720)",
    )
    parser.add_argument(
        "--node-port",
        type=int,
        default=9711,
        help="port of the first node; the next ones follow (skipping 9712)",
    )


def run(args: argparse.Namespace) -> int:
    if args.hosts < 1:
        print("spcs up: --hosts must be at least 1", file=sys.stderr)
        return 2
    workdir: Path = args.workdir.resolve()
    if args.fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    logs.setup("INFO", workdir / "logs" / "emulator.log")
    stack = Stack(
        workdir,
        hosts=args.hosts,
        ports=Ports(
            emulator=args.emulator_port,
            management=args.management_port,
            nodes=node_ports(args.hosts, args.node_port),
            zone2=args.zone2_port,
        ),
        second_zone=True,
    )
    try:
        stack.start()
    except (RuntimeError, OSError) as error:
        print(f"spcs up: {error}", file=sys.stderr)
        return 1
    assert stack.emulator is not None and stack.management is not None
    print(f"spcs is up in {workdir}")
    print(f"  management  {stack.management.address}")
    for n, node in enumerate(stack.nodes, start=1):
        print(f"  node {n}      {node.address}  (host-{n}, devices in {stack.device_root(n)})")
    print(
        f"  emulator    {stack.emulator.url}  (StorPool template {TEMPLATE!r}, token in "
        f"{workdir / 'storpool.conf'})"
    )
    assert stack.zone2 is not None
    print(
        f"  zone 2      {stack.zone2.url}  (another StorPool location, token in {stack.zone2_conf})"
    )
    print(f"  secondary   file://{stack.secondary}")
    print(f"  logs        {workdir / 'logs'}")
    print(f"try: grpcurl -plaintext {stack.management.address} list")
    print("Ctrl-C stops everything.", flush=True)
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    while not stop.wait(1.0):
        exited = {name: code for name, code in stack.exit_codes().items() if code is not None}
        if exited:
            print(f"spcs up: a service exited unexpectedly: {exited}; stopping", file=sys.stderr)
            stack.stop()
            return 1
    print("stopping...", flush=True)
    stack.stop()
    return 0
