"""Settings of the node service (flags, SPCS_* environment, --config TOML, storpool.conf)."""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass
from pathlib import Path

from spcs.common.settings import (
    SERVER_OPTIONS,
    ConfigError,
    Option,
    ServerSettings,
    existing_dir,
    existing_file,
    parse_listen,
    path_value,
    positive_float,
    positive_int,
    resolve,
    state_directory,
)
from spcs.common.validate import UUID_LIKE
from spcs.node.direct_download import AllowedUrl
from spcs.node.secondary import AllowedStore
from spcs.node.targets import Target, check_targets, parse_management
from spcs.storpool import conf as storpool_conf

DEFAULT_LISTEN = "127.0.0.1:9711"
MAX_ITER_TIME_MS = 60_000  # the data mover's limit (datamover/src/crypt/luks1.rs)


def _host_id(value: str) -> str:
    if not value or not UUID_LIKE.match(value):
        raise ValueError(f"{value!r} is not a valid host id (A-Z a-z 0-9 . _ : -)")
    return value


def _iter_time(value: str) -> int:
    number = positive_int(value)
    if number > MAX_ITER_TIME_MS:
        raise ValueError(f"{number} ms is more than {MAX_ITER_TIME_MS} ms")
    return number


def _address(value: str) -> str:
    parse_listen(value)
    return value


OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "address to serve gRPC on",
        default=DEFAULT_LISTEN,
        parse=parse_listen,
        metavar="HOST:PORT",
    ),
    Option(
        "host_id", "CloudStack host id of this KVM host (required)", parse=_host_id, metavar="ID"
    ),
    Option(
        "device_root",
        "directory holding storpool/ and storpool-byid/ device links",
        default="/dev",
        parse=existing_dir,
        metavar="DIR",
    ),
    Option(
        "management",
        "management service to register with: HOST:PORT, or several (one per management "
        "replica) separated by commas, or dns:///NAME:PORT for every address NAME resolves to "
        "(resolved again every refresh); the node registers with each replica it can reach; "
        "without it the node runs unregistered",
        parse=parse_management,
        metavar="HOST:PORT",
        repeated=True,
    ),
    Option(
        "advertise",
        "address the management service should call this node on "
        "(default: the listen address, or this host's name when listening on all addresses)",
        parse=_address,
        metavar="HOST:PORT",
    ),
    Option(
        "storpool_conf",
        "StorPool config (default /etc/storpool.conf + /etc/storpool.conf.d/*.conf)",
        parse=path_value,
        metavar="FILE",
    ),
    Option(
        "storpool_section",
        "section of the StorPool config for this host (default: the host name)",
        metavar="NAME",
    ),
    storpool_conf.RETRY_OPTION,
    Option(
        "secondary_store",
        "a secondary store this node may read and write, with everything below it: "
        "nfs://server/export or file:///dir (CloudStack's secondary stores of the zone); any "
        "other store is refused (PERMISSION_DENIED)",
        parse=AllowedStore.parse,
        metavar="URL",
        repeated=True,
    ),
    Option(
        "mount_root",
        "where NFS secondary stores are mounted",
        default="/var/lib/spcs/mnt",
        parse=path_value,
        metavar="DIR",
    ),
    Option(
        "state_dir",
        "node state (copy journal)",
        default="/var/lib/spcs/node",
        parse=path_value,
        metavar="DIR",
    ),
    Option(
        "device_wait_seconds",
        "how long an attach waits for the device to appear",
        default="30",
        parse=positive_float,
        metavar="SECONDS",
    ),
    Option(
        "detach_attempts",
        "detach tries while the device is open (0.5 s apart) before forcing or giving up",
        default="10",
        parse=positive_int,
        metavar="N",
    ),
    Option(
        "max_copies",
        "copies running at once on this host (RESOURCE_EXHAUSTED beyond)",
        default="2",
        parse=positive_int,
        metavar="N",
    ),
    Option(
        "direct_download_url",
        "a URL prefix direct-download templates may come from (https://images.example.com/"
        "templates/): scheme, host and port as given, paths below it; without it direct "
        "download is refused (PERMISSION_DENIED)",
        parse=AllowedUrl.parse,
        metavar="URL",
        repeated=True,
    ),
    Option(
        "direct_download_ca_file",
        "PEM bundle of the CAs trusted for https direct downloads, instead of the host's "
        "trust store",
        parse=existing_file,
        metavar="FILE",
    ),
    Option(
        "direct_download_max_bytes",
        "largest image file a direct download accepts",
        default=str(1 << 40),
        parse=positive_int,
        metavar="BYTES",
    ),
    Option(
        "luks_iter_time_ms",
        "PBKDF2 time per LUKS key slot of the encrypted volumes this node writes, in ms "
        "(cryptsetup's --iter-time; at most 60000)",
        default="2000",
        parse=_iter_time,
        metavar="MS",
    ),
    *SERVER_OPTIONS,
)


@dataclass(frozen=True)
class NodeSettings:
    server: ServerSettings
    host_id: str
    device_root: Path
    # the replicas to register with, as the setting lists them; () = unregistered
    management: tuple[Target, ...]
    advertise: str | None
    storpool: storpool_conf.StorPoolConf
    storpool_retry_seconds: float
    secondary_stores: tuple[AllowedStore, ...]
    mount_root: Path
    state_dir: Path
    device_wait_seconds: float
    detach_attempts: int
    max_copies: int
    luks_iter_time_ms: int
    direct_download_urls: tuple[AllowedUrl, ...] = ()
    direct_download_ca_file: Path | None = None
    direct_download_max_bytes: int = 1 << 40

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NodeSettings:
        values = resolve(args, OPTIONS)
        if not values["host_id"]:
            raise ConfigError(
                "--host-id",
                "not set; --host-id is required: the CloudStack host id of this KVM host "
                "(flag --host-id, environment SPCS_HOST_ID or host_id in the --config file)",
            )
        server = ServerSettings.from_values(values)
        storpool = storpool_conf.load(values["storpool_conf"], section=values["storpool_section"])
        storpool.require("SP_OURID", "SP_AUTH_TOKEN")
        for name in ("mount_root", "state_dir"):
            state_directory(values[name], "--" + name.replace("_", "-"))
        management = tuple(target for group in values["management"] for target in group)
        problem = check_targets(management)
        if problem is not None:
            raise ConfigError("--management", problem)
        return cls(
            server=server,
            host_id=values["host_id"],
            device_root=values["device_root"],
            management=management,
            advertise=values["advertise"],
            storpool=storpool,
            storpool_retry_seconds=values["storpool_retry_seconds"],
            secondary_stores=tuple(values["secondary_store"] or ()),
            mount_root=values["mount_root"],
            state_dir=values["state_dir"],
            device_wait_seconds=values["device_wait_seconds"],
            detach_attempts=values["detach_attempts"],
            max_copies=values["max_copies"],
            luks_iter_time_ms=values["luks_iter_time_ms"],
            direct_download_urls=tuple(values["direct_download_url"] or ()),
            direct_download_ca_file=values["direct_download_ca_file"],
            direct_download_max_bytes=values["direct_download_max_bytes"],
        )

    def advertised_address(self, port: int) -> str:
        if self.advertise:
            return self.advertise
        host = self.server.listen[0]
        if host in ("0.0.0.0", "[::]", "::"):
            host = socket.getfqdn()
        return f"{host}:{port}"
