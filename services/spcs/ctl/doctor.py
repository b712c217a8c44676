"""`spcs ctl doctor`: the checks an operator runs on a host when something does not work.

Each check reports ok, warn, fail or skip with what it saw: the service config files load as
the services load them (flags aside), the StorPool API answers with the configured token, this
host's node is registered and answers its health check, its StorPool device directory is
there, the clocks of the services agree with this host's, and no certificate is about to
expire. It changes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spcs.common import errors
from spcs.common.settings import ConfigError, add_options
from spcs.common.tls import TlsFiles, open_channel
from spcs.storpool import names
from spcs.storpool.api import RetryPolicy, StorPoolApi
from spcs.storpool.conf import StorPoolConf
from spcs.v1 import hosts_pb2, hosts_pb2_grpc, identity_pb2, identity_pb2_grpc

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
CONFIGS = (Path("/etc/spcs/management.toml"), Path("/etc/spcs/node.toml"))
SKEW_WARN_SECONDS = 2.0  # leases and heartbeats are 15 s; a few seconds is already wrong
SKEW_FAIL_SECONDS = 10.0
EXPIRY_WARN_DAYS = 30


@dataclass(frozen=True)
class Check:
    name: str
    result: str
    detail: str


@dataclass
class Found:
    """What the config files said, for the later checks."""

    management: object | None = None  # ManagementSettings
    node: object | None = None  # NodeSettings


def run_checks(args: argparse.Namespace, tls: TlsFiles | None) -> list[Check]:
    found = Found()
    checks = [*_configs(args, found)]
    checks += list(_storpool(found))
    checks += list(_management(args, tls, found))
    checks += list(_devices(found))
    checks += list(_certificates(args, found))
    return checks


# ---- the config files -----------------------------------------------------------------------


def _configs(args: argparse.Namespace, found: Found) -> Iterator[Check]:
    from spcs.management import settings as management_settings
    from spcs.node import settings as node_settings

    given = {"management": args.management_config, "node": args.node_config}
    for kind, module, default in (
        ("management", management_settings, CONFIGS[0]),
        ("node", node_settings, CONFIGS[1]),
    ):
        path: Path | None = given[kind] or (default if default.exists() else None)
        if path is None:
            yield Check(f"{kind} config", SKIP, f"no --{kind}-config, and no {default}")
            continue
        parser = argparse.ArgumentParser(add_help=False)
        add_options(parser, module.OPTIONS)
        try:
            parsed = parser.parse_args(["--config", str(path)])
            loaded = (
                module.ManagementSettings.from_args(parsed)
                if kind == "management"
                else module.NodeSettings.from_args(parsed)
            )
        except ConfigError as error:
            yield Check(f"{kind} config", FAIL, f"{path}: {error}")
            continue
        except SystemExit:  # argparse already said why on stderr
            yield Check(f"{kind} config", FAIL, f"{path}: not a config spcs {kind} reads")
            continue
        setattr(found, kind, loaded)
        yield Check(f"{kind} config", OK, f"{path} loads as spcs {kind} loads it")


# ---- StorPool -------------------------------------------------------------------------------


def _storpool(found: Found) -> Iterator[Check]:
    confs: dict[str, StorPoolConf] = {}
    for kind in ("management", "node"):
        loaded = getattr(found, kind)
        if loaded is not None:
            confs[kind] = loaded.storpool
    if not confs:
        yield Check("StorPool API", SKIP, "no config file says where it is")
        return
    for kind, conf in confs.items():
        where = f"{conf.api_host}:{conf.api_port}"
        if not conf.auth_token:
            yield Check(
                f"StorPool API ({kind})", FAIL, f"{where}: no SP_AUTH_TOKEN in {conf.sources}"
            )
            continue
        api = StorPoolApi(
            conf.api_host, conf.api_port, conf.auth_token, timeout=5.0, retry=RetryPolicy(0)
        )
        started = time.monotonic()
        try:
            # the service list: one small call, which needs a valid token
            running = api.client_running(conf.our_id or 0)
        except errors.SpcsError as error:
            yield Check(f"StorPool API ({kind})", FAIL, error.message)
            continue
        took = (time.monotonic() - started) * 1000
        yield Check(
            f"StorPool API ({kind})",
            OK,
            f"{where} answers with the configured token ({took:.0f} ms)",
        )
        if kind == "node":
            yield Check(
                "StorPool client",
                OK if running else FAIL,
                f"client {conf.our_id} (SP_OURID) is {'running' if running else 'not running'} "
                "on this host, as StorPool's service list says",
            )


# ---- the services ---------------------------------------------------------------------------


def _management(args: argparse.Namespace, tls: TlsFiles | None, found: Found) -> Iterator[Check]:
    with open_channel(args.management, tls) as channel:
        skew = _skew(channel, args.timeout)
        if isinstance(skew, Check):
            yield skew
            return
        yield _clock_check(f"clock of management ({args.management})", skew)
        try:
            listed = hosts_pb2_grpc.NodeRegistryStub(channel).ListNodes(
                hosts_pb2.ListNodesRequest(), timeout=args.timeout
            )
        except grpc.RpcError as error:
            yield Check("nodes", FAIL, f"ListNodes: {error.code().name}: {error.details()}")
            return
    node = found.node
    if node is None:
        yield Check("this host's node", SKIP, "no node config: this is not a KVM host")
        return
    host_id: str = node.host_id  # type: ignore[attr-defined]
    registered = [n for n in listed.nodes if n.host_id == host_id]
    if not registered:
        yield Check(
            "this host's node",
            FAIL,
            f"{host_id} is not registered with the management service; is spcs-node running, "
            "and does its --management reach it?",
        )
        return
    entry = registered[0]
    state = "healthy" if entry.healthy else "unhealthy"
    with open_channel(entry.address, tls) as channel:
        serving = _health(channel, args.timeout)
        skew = _skew(channel, args.timeout)
    result = OK if entry.healthy and serving == "SERVING" else FAIL
    yield Check(
        "this host's node",
        result,
        f"{host_id} registered at {entry.address} ({state}, StorPool client "
        f"{entry.storpool_client_id} {'running' if entry.storpool_client_running else 'down'}); "
        f"its health check: {serving}",
    )
    if not isinstance(skew, Check):
        yield _clock_check(f"clock of node {host_id}", skew)


def _health(channel: grpc.Channel, timeout: float) -> str:
    try:
        # types-grpcio-health-checking's HealthStub declares no methods
        reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
    except grpc.RpcError as error:
        return f"{error.code().name} ({error.details()})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _skew(channel: grpc.Channel, timeout: float) -> float | Check:
    """The service's clock less this host's, from Identity/GetInfo (half the round trip is
    the error), or the failed check."""
    before = time.time()
    try:
        info = identity_pb2_grpc.IdentityStub(channel).GetInfo(
            identity_pb2.GetInfoRequest(), timeout=timeout
        )
    except grpc.RpcError as error:
        return Check("management", FAIL, f"{error.code().name}: {error.details()}")
    after = time.time()
    if not info.HasField("time"):
        return Check("clock", SKIP, f"{info.name} {info.version} does not tell its time")
    return info.time.ToNanoseconds() / 1e9 - (before + after) / 2


def _clock_check(name: str, skew: float) -> Check:
    result = (
        OK if abs(skew) < SKEW_WARN_SECONDS else WARN if abs(skew) < SKEW_FAIL_SECONDS else FAIL
    )
    side = "ahead of" if skew > 0 else "behind"
    return Check(name, result, f"{abs(skew):.3f} s {side} this host's (NTP keeps them together)")


# ---- this host ------------------------------------------------------------------------------


def _devices(found: Found) -> Iterator[Check]:
    node = found.node
    if node is None:
        return
    root: Path = node.device_root  # type: ignore[attr-defined]
    byid = root / Path(names.BYID_DIR).name
    if not byid.is_dir():
        # the StorPool client makes it with the first device it attaches here
        yield Check(
            "StorPool devices",
            WARN,
            f"no {byid} yet: nothing was ever attached here, or the StorPool client "
            "(storpool_block) does not run",
        )
        return
    count = sum(1 for _ in byid.iterdir())
    yield Check("StorPool devices", OK, f"{byid} is there ({count} attached here)")


def _certificates(args: argparse.Namespace, found: Found) -> Iterator[Check]:
    files: dict[Path, str] = {}
    for flag in ("tls_cert", "tls_ca"):
        path = getattr(args, flag)
        if path is not None:
            files[path] = f"--{flag.replace('_', '-')}"
    for kind in ("management", "node"):
        loaded = getattr(found, kind)
        if loaded is None:
            continue
        for what in ("tls_cert", "tls_ca"):
            path = getattr(loaded.server, what)
            if path is not None:
                files.setdefault(path, f"{kind} {what}")
    if not files:
        yield Check("certificates", SKIP, "no TLS files given or configured")
        return
    now = datetime.datetime.now(datetime.UTC)
    for path, where in files.items():
        yield _certificate(path, where, now)


def _certificate(path: Path, where: str, now: datetime.datetime) -> Check:
    name = f"certificate {path}"
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as error:
        return Check(name, FAIL, f"{where}: cannot be read as PEM certificates: {error}")
    soonest = min(certificates, key=lambda c: c.not_valid_after_utc)
    left = soonest.not_valid_after_utc - now
    subject = soonest.subject.rfc4514_string() or "(no subject)"
    if left.total_seconds() <= 0:
        return Check(
            name, FAIL, f"{where}: {subject} expired on {soonest.not_valid_after_utc:%Y-%m-%d}"
        )
    if soonest.not_valid_before_utc > now:
        return Check(
            name,
            FAIL,
            f"{where}: {subject} is valid only from {soonest.not_valid_before_utc:%Y-%m-%d}",
        )
    result = WARN if left.days < EXPIRY_WARN_DAYS else OK
    return Check(
        name,
        result,
        f"{where}: {subject} expires on {soonest.not_valid_after_utc:%Y-%m-%d} ({left.days} days)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--management-config", type=Path, metavar="TOML")
    parser.add_argument("--node-config", type=Path, metavar="TOML")


def worst(checks: list[Check]) -> str:
    order: dict[str, int] = {SKIP: 0, OK: 0, WARN: 1, FAIL: 2}
    return max((c.result for c in checks), key=lambda r: order[r], default=OK)
