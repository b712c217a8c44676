"""``spcs emulator``: serve the StorPool API emulator until SIGTERM/SIGINT.

``--remote-cluster CLUSTER_ID=PORT`` (repeatable) serves one more location from the same process,
on the same host as ``--listen``: its data under ``<data>/locations/<cluster id>/``, the same
token, templates and placement group, no clients, on one bridge with the main cluster (see
`spcs.emulator.bridge`), so snapshots can be copied between them. Each prints ``ready: <url>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading
from types import FrameType

from spcs.emulator import cow, naming
from spcs.emulator.bridge import Bridge
from spcs.emulator.emulator import (
    DEFAULT_PLACEMENT_GROUP,
    DEFAULT_PORT,
    Emulator,
    EmulatorError,
)
from spcs.emulator.errors import ApiError
from spcs.emulator.faults import FaultConfig
from spcs.emulator.transfer import DEFAULT_BANDWIDTH

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
    _location_options(parser.add_argument_group("locations (cross-zone snapshot copies)"))
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
        "--copy-on-write",
        choices=cow.MODES,
        default=cow.AUTO,
        help="auto (default): snapshots and clones share extents, on an XFS image of the "
        "emulator's own (root, xfsprogs) where the data filesystem has no reflink; off: "
        "never make the image",
    )
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


def _location_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--location-name",
        metavar="NAME",
        help="the human-readable name of this location (default: the location id, the first "
        "part of the cluster id)",
    )
    group.add_argument(
        "--remote-bandwidth",
        default=str(DEFAULT_BANDWIDTH),
        metavar="BYTES",
        help="bytes per second at which snapshots are fetched from other locations (suffixes "
        "K, M, G; 0 = unpaced; default 512M)",
    )
    group.add_argument(
        "--remote-cluster",
        action="append",
        default=[],
        metavar="CLUSTER_ID=PORT",
        help="also serve this cluster (another location) on PORT of the --listen host, data "
        "under DIR/locations/CLUSTER_ID/; repeat for several",
    )


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


def parse_remote_clusters(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        cid, sep, port = item.partition("=")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"--remote-cluster wants CLUSTER_ID=PORT, got {item!r}")
        naming.cluster_id(cid)
        if cid in out:
            raise ValueError(f"remote cluster {cid} given twice")
        out[cid] = int(port)
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


def _start(args: argparse.Namespace) -> list[Emulator]:
    """The main emulator and those of --remote-cluster, started, all on one bridge."""
    host, port = parse_listen(args.listen)
    bandwidth = parse_size(args.remote_bandwidth)
    remotes = parse_remote_clusters(args.remote_cluster)
    templates = parse_templates(args.template)
    bridge = Bridge()
    main = Emulator(
        args.data,
        token=args.token,
        clients=parse_clients(args.client),
        cluster_id=args.cluster_id,
        templates=templates,
        placement_group=args.placement_group,
        loop=args.loop,
        faults=fault_config(args),
        error_status=args.error_status,
        cluster_name=args.cluster_name,
        durable=args.fsync,
        location_name=args.location_name,
        bridge=bridge,
        remote_bandwidth=bandwidth,
        copy_on_write=args.copy_on_write,
    )
    started = [main.start(host, port)]
    try:
        for cid, remote_port in remotes.items():
            remote = Emulator(
                os.path.join(args.data, "locations", cid),
                token=main.token,
                cluster_id=cid,
                templates=templates,
                placement_group=args.placement_group,
                error_status=args.error_status,
                durable=args.fsync,
                bridge=bridge,
                remote_bandwidth=bandwidth,
                copy_on_write=args.copy_on_write,
            )
            started.append(remote.start(host, remote_port))
    except BaseException:
        for emulator in started:
            emulator.stop()
        raise
    return started


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        emulators = _start(args)
    except (ValueError, EmulatorError, ApiError, OSError) as exc:
        log.error("can not start the emulator: %s", getattr(exc, "descr", exc))
        return 2
    main = emulators[0]

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("got %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.write_conf:
            for path in main.write_conf(args.write_conf):
                log.info("wrote %s", path)
        for remote in emulators[1:]:
            log.info(
                "ready: %s (cluster %s, location %s)",
                remote.url,
                remote.cluster_id,
                remote.location_name,
            )
        log.info("ready: %s", main.url)
        while not stop.wait(1.0):
            pass
    finally:
        for emulator in reversed(emulators):
            emulator.stop(release_devices=args.release_devices_on_exit)
    return 0
