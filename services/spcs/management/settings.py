"""Settings of the management service (flags, SPCS_* environment, --config TOML)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from spcs.common.settings import (
    SERVER_OPTIONS,
    ConfigError,
    Option,
    ServerSettings,
    parse_listen,
    positive_float,
    resolve,
    writable_parent,
)
from spcs.storpool import conf as storpool_conf

DEFAULT_LISTEN = "127.0.0.1:9710"

OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "address to serve gRPC on",
        default=DEFAULT_LISTEN,
        parse=parse_listen,
        metavar="HOST:PORT",
    ),
    Option(
        "db",
        "SQLite database (pools, nodes, template cache, operations journal)",
        default="/var/lib/spcs/management.db",
        parse=writable_parent,
        metavar="PATH",
    ),
    Option(
        "storpool_conf",
        "StorPool config for pools added by bare template name "
        "(default /etc/storpool.conf + /etc/storpool.conf.d/*.conf, may be missing)",
        parse=Path,
        metavar="FILE",
    ),
    storpool_conf.RETRY_OPTION,
    Option(
        "node_retry_seconds",
        "how long calls to a node are retried while it is unreachable",
        default=30.0,
        parse=positive_float,
        metavar="SECONDS",
    ),
    *SERVER_OPTIONS,
)


@dataclass(frozen=True)
class ManagementSettings:
    server: ServerSettings
    db: Path
    storpool: storpool_conf.StorPoolConf
    storpool_retry_seconds: float
    node_retry_seconds: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ManagementSettings:
        values = resolve(args, OPTIONS)
        db = values["db"] if isinstance(values["db"], Path) else writable_parent(values["db"])
        if db.is_dir():
            raise ConfigError(f"--db {db} is a directory; give a file path")
        return cls(
            server=ServerSettings.from_values(values),
            db=db,
            storpool=storpool_conf.load(values["storpool_conf"]),
            storpool_retry_seconds=values["storpool_retry_seconds"],
            node_retry_seconds=values["node_retry_seconds"],
        )
