"""``spcs emulator``: serve the StorPool API emulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
from types import FrameType

from spcs.emulator.emulator import (
    DEFAULT_PLACEMENT_GROUP,
    DEFAULT_PORT,
    Emulator,
    EmulatorError,
)
from spcs.emulator.errors import ApiError
from spcs.emulator.faults import FaultConfig

log = logging.getLogger(__name__)

_SIZE_RE = re.compile(r"^(\d+)\s*([KMGTP]?)(?:i?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="state and volume data")
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address to serve on (default 127.0.0.1:{DEFAULT_PORT}; port 0 = any free port)",
    )
    parser.add_argument(
        "--token", help="API token (default: the one saved in DIR, else a new one saved there)"
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ID[=ROOT]",
        help="an emulated client host and the directory standing in for its /dev "
        "(default /dev); repeat for several",
    )
    parser.add_argument("--cluster-id", help="SP_CLUSTER_ID, <location>.<subcluster> (emu.a)")
    parser.add_argument("--cluster-name", help="a name accepted in RemoteCommand/<name>/")
    parser.add_argument(
        "--template",
        action="append",
        default=[],
        metavar="NAME[:CAPACITY]",
        help="a volume template to have, with its capacity in bytes (suffixes K, M, G, T)",
    )
    parser.add_argument(
        "--placement-group",
        default=DEFAULT_PLACEMENT_GROUP,
        help="the default placement group (default: %(default)s)",
    )
    parser.add_argument("--loop", action="store_true", help="back devices with loop devices")
    parser.add_argument(
        "--fsync", action="store_true", help="fsync every state change (survives power loss)"
    )
    parser.add_argument(
        "--write-conf", metavar="PATH", help="write storpool.conf files for this emulator"
    )
    parser.add_argument(
        "--error-status", type=int, default=500, help="HTTP status of error replies (500)"
    )
    parser.add_argument(
        "--release-devices-on-exit",
        action="store_true",
        help="remove device links and loop devices when stopping",
    )
    _fault_options(parser.add_argument_group("fault injection (off by default)"))
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def _fault_options(faults: argparse._ArgumentGroup) -> None:
    faults.add_argument(
        "--transient-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="answer this fraction of calls with a transient error",
    )
    faults.add_argument(
        "--fault-command",
        action="append",
        default=[],
        metavar="COMMAND",
        help="limit --transient-rate to these commands",
    )
    faults.add_argument(
        "--delay",
        action="append",
        default=[],
        metavar="COMMAND=SECONDS",
        help="sleep before handling COMMAND (* = every command)",
    )
    faults.add_argument(
        "--fail-next",
        action="append",
        default=[],
        metavar="COMMAND[=N]",
        help="the next N calls of COMMAND fail transiently and change nothing",
    )
    faults.add_argument(
        "--fail-after",
        action="append",
        default=[],
        metavar="COMMAND[=N]",
        help="the next N calls of COMMAND take effect, then answer a transient error",
    )
    faults.add_argument(
        "--fault-error-name", default="busy", metavar="NAME", help="error name of injected faults"
    )
    faults.add_argument("--fault-seed", type=int, metavar="N", help="seed for --transient-rate")


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad size {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_clients(items: list[str]) -> dict[int, str]:
    clients: dict[int, str] = {}
    for item in items:
        cid, _, root = item.partition("=")
        if not cid.strip().isdigit():
            raise ValueError(f"--client wants ID[=ROOT], got {item!r}")
        if int(cid) in clients:
            raise ValueError(f"client {cid} given twice")
        clients[int(cid)] = root or "/dev"
    return clients


def parse_templates(items: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in items:
        name, _, capacity = item.partition(":")
        out[name] = parse_size(capacity) if capacity else None
    return out


def _counts(items: list[str], kind: type) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for item in items:
        command, _, value = item.partition("=")
        out[command] = kind(value) if value else kind(1)
    return out


def fault_config(args: argparse.Namespace) -> FaultConfig:
    return FaultConfig.from_json(
        {
            "transientRate": args.transient_rate,
            "commands": args.fault_command,
            "delays": _counts(args.delay, float),
            "failNext": _counts(args.fail_next, int),
            "failAfter": _counts(args.fail_after, int),
            "errorName": args.fault_error_name,
            "seed": args.fault_seed,
        }
    )


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        host, port = parse_listen(args.listen)
        emulator = Emulator(
            args.data,
            token=args.token,
            clients=parse_clients(args.client),
            cluster_id=args.cluster_id,
            templates=parse_templates(args.template),
            placement_group=args.placement_group,
            loop=args.loop,
            faults=fault_config(args),
            error_status=args.error_status,
            cluster_name=args.cluster_name,
            durable=args.fsync,
        )
        emulator.start(host, port)
    except (ValueError, EmulatorError, ApiError, OSError) as exc:
        log.error("can not start the emulator: %s", getattr(exc, "descr", exc))
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("got %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.write_conf:
            for path in emulator.write_conf(args.write_conf):
                log.info("wrote %s", path)
        log.info("ready: %s", emulator.url)
        while not stop.wait(1.0):
            pass
    finally:
        emulator.stop(release_devices=args.release_devices_on_exit)
    return 0
